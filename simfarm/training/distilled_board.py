"""Ranking systems the head never saw against published rankings (``data.test_leaderboard``).

Test annotations measure a head on a judge's pairs, but a handful of systems (the 7 that
GPT-4-turbo judged in ``../shared/data/alpaca_eval/annotations``) make a weak ranking test: one
adjacent swap costs 0.036 of Spearman. Published rankings cover many more systems, and their
outputs are often at hand: the AlpacaEval 2.0 board ranks 37 of the 39 systems whose outputs
sit in the GPT-4 annotation pool. So each system with outputs is paired with one reference
(``output_1``, as alpaca_eval pairs them) and scored by a head that never trained on its pairs
(its held-out fold's head when it is a training system, the shipped head otherwise), and the
systems' mean P(output 2 wins) is correlated with each board's column: Spearman and Kendall
with bootstrap intervals over systems, as ``simfarm correlate`` gives them, beside
``longest`` on the same pairs.

Measured this way (5-fold by system, 40 systems against the published GPT-4-turbo win rates),
the GPT-4-only head ranks at Spearman 0.65, where the 7-system test gave 0.857: the small test
flattered it.

Outputs come from alpaca_eval ``model_outputs`` files (``outputs``: one system each, named by
``generator``) or from annotation/pairs files (``pair_outputs``: the ``output_2`` of each
``generator_2``, for pools that publish only their annotations).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from simfarm.training.config import _Strict

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from simfarm.record_checks import BadRecordPolicy
    from simfarm.training.verdicts import Verdict


SHIPPED = "shipped head"
"""``scored_by`` of a system that is not a training system."""


class PublishedBoard(_Strict):
    """One published ranking to compare with."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Its name in ``result.json`` keys (``test_leaderboard_<name>_*``)."""
    path: Path = Field(json_schema_extra={"input": True})
    """CSV, first column the system name (alpaca_eval's ``leaderboard.csv`` layout); a
    system whose cell is empty is left out (listed), text that is not a number is refused."""
    column: str = "win_rate"
    """The column to rank by (higher is better)."""


class LeaderboardSpec(_Strict):
    """Outputs of systems, paired with one reference, and the published rankings of them."""

    boards: list[PublishedBoard] = Field(min_length=1)
    """The rankings to correlate with; each ranks the systems it has a value for."""
    reference: Path = Field(json_schema_extra={"input": True})
    """alpaca_eval model outputs of the board's reference: ``output_1`` of every pair."""
    outputs: list[Path] = Field(default_factory=list, json_schema_extra={"input": True})
    """alpaca_eval model-outputs files (or folders of ``.json`` files); ``generator`` names
    the system (default: the file's name)."""
    pair_outputs: list[Path] = Field(default_factory=list, json_schema_extra={"input": True})
    """Annotation or pairs files (or folders of them): each ``generator_2``'s ``output_2``."""

    @field_validator("outputs", "pair_outputs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("boards")
    @classmethod
    def _distinct_names(cls, boards: list[PublishedBoard]) -> list[PublishedBoard]:
        names = [board.name for board in boards]
        if len(set(names)) != len(names):
            raise ValueError(f"board names must differ: {names}")
        return boards


@dataclass
class BoardPairs:
    """Every (reference, system) pair to score, with the board's figure of each system."""

    prompts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    systems: list[str] = field(default_factory=list)
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per board name, each system's value."""
    no_value: dict[str, list[str]] = field(default_factory=dict)
    """Per board name, the systems it lists with an empty cell."""
    reference_generator: str = ""
    not_on_board: list[str] = field(default_factory=list)
    """Systems with outputs that no board ranks (left out)."""
    unpaired: dict[str, int] = field(default_factory=dict)
    """Per system, outputs whose instruction the reference does not answer (left out)."""
    files: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""
    """sha256 of every file read, in the order read."""


def read_published(path: Path, column: str) -> tuple[dict[str, float], list[str]]:
    """The board's ``column`` per system, and the systems whose cell is empty; a missing
    column or text that is not a number is refused, naming the row. It is read as
    ``simfarm correlate`` reads a board (whitespace and case aside: ``Arena Elo [Feb 2,
    2024]`` finds the Arena file's two-line header)."""
    from simfarm.errors import ConfigError
    from simfarm.evaluation.correlation import read_score_column

    try:
        _, published, empty = read_score_column(path, column, column)
    except ConfigError as error:
        raise ConfigError(f"data.test_leaderboard.boards: {error}") from None
    return published, empty


def read_board(spec: LeaderboardSpec, policy: BadRecordPolicy) -> BoardPairs:
    """Pair every board system's outputs with the reference's, by instruction and input."""
    from simfarm.annotation.distilled_features import prompt_text
    from simfarm.datafiles import ModelOutput, load_model_outputs, load_pairs, pair_outputs
    from simfarm.errors import ConfigError
    from simfarm.training.verdicts import annotation_files

    board = BoardPairs()
    combined = hashlib.sha256()

    def note(path: Path) -> None:
        data = Path(path).read_bytes()
        combined.update(data)
        board.files.append({"path": str(path), "sha256": hashlib.sha256(data).hexdigest()})

    for published in spec.boards:
        board.published[published.name], board.no_value[published.name] = read_published(
            published.path, published.column
        )
        note(published.path)
    ranked = {name for values in board.published.values() for name in values}
    reference = load_model_outputs(spec.reference, policy).outputs
    note(spec.reference)
    if not reference:
        raise ConfigError(f"{spec.reference}: data.test_leaderboard.reference holds no outputs")
    board.reference_generator = reference[0].generator
    by_system: dict[str, list[ModelOutput]] = {}
    for path in annotation_files(spec.outputs, "data.test_leaderboard.outputs", "output files"):
        for output in load_model_outputs(path, policy).outputs:
            by_system.setdefault(output.generator, []).append(output)
        note(path)
    key = "data.test_leaderboard.pair_outputs"
    for path in annotation_files(spec.pair_outputs, key, "annotation files"):
        for pair in load_pairs(path, policy).pairs:
            by_system.setdefault(pair.generator_2, []).append(
                ModelOutput(
                    instruction=pair.instruction,
                    input=pair.input,
                    output=pair.output_2,
                    generator=pair.generator_2,
                )
            )
        note(path)
    for system in sorted(by_system):
        if system == board.reference_generator:
            continue
        if system not in ranked:
            board.not_on_board.append(system)
            continue
        # A system in two files (a pool's annotations and its model outputs) counts once.
        unique = list({(o.instruction, o.input): o for o in by_system[system]}.values())
        pairs, unpaired = pair_outputs(unique, reference)
        if unpaired:
            board.unpaired[system] = len(unpaired)
        for pair in pairs:
            board.prompts.append(prompt_text(pair.instruction, pair.input))
            board.references.append(pair.output_1)
            board.outputs.append(pair.output_2)
            board.systems.append(system)
    with_outputs = set(board.systems)
    for published in spec.boards:
        found = len(with_outputs & set(board.published[published.name]))
        if found < 3:
            raise ConfigError(
                f"{published.path}: data.test_leaderboard.boards ({published.name}): {found} of "
                "its systems have outputs; a rank correlation needs at least 3"
            )
    board.sha256 = combined.hexdigest()
    return board


def board_figures(
    prob: np.ndarray,
    board: BoardPairs,
    scored_by: dict[str, str],
    training: Sequence[Verdict],
    similarity: np.ndarray,
) -> dict[str, Any]:
    """Per board, Spearman and Kendall of the systems' mean P against it, over all its
    systems and over those held out by fold, beside two baselines that judge nothing:
    ``longest`` and ``reference_similarity`` (each system's mean ``similarity`` of its output
    to the reference's: on a board whose judge wrote the reference, as GPT-4-turbo wrote
    AlpacaEval 2.0's, looking like the reference is rewarded); and each system's figures."""
    import numpy as np

    from simfarm.evaluation.correlation import rank_correlation
    from simfarm.training.distilled_judge import longest_probability
    from simfarm.training.distilled_unseen import shared_outputs

    systems = np.array(board.systems)
    len_1 = np.array([len(text) for text in board.references], dtype=float)
    len_2 = np.array([len(text) for text in board.outputs], dtype=float)
    longest = longest_probability(len_1, len_2)
    per_system: dict[str, dict[str, Any]] = {}
    for name in sorted(set(board.systems)):
        mask = systems == name
        per_system[name] = {
            "distilled": float(prob[mask].mean()),
            "longest": float(longest[mask].mean()),
            "reference_similarity": float(similarity[mask].mean()),
            "n_pairs": int(mask.sum()),
            "mean_length": float(len_2[mask].mean()),
            "scored_by": scored_by[name],
            "published": {
                board_name: values[name]
                for board_name, values in board.published.items()
                if name in values
            },
        }

    def correlations(names: list[str], who: str, values: dict[str, float]) -> dict[str, Any]:
        """``simfarm correlate``'s figures: Spearman and Kendall with bootstrap intervals
        over systems (how much the figure depends on which systems are on the board)."""
        result = rank_correlation(
            {name: per_system[name][who] for name in names},
            {name: values[name] for name in names},
        )
        return {
            "spearman": result.spearman,
            "kendall": result.kendall,
            "spearman_ci": list(result.spearman_ci),
            "kendall_ci": list(result.kendall_ci),
            "notes": result.notes,
        }

    boards: dict[str, Any] = {}
    for board_name, values in board.published.items():
        names = sorted(set(per_system) & set(values))
        held_out = [name for name in names if per_system[name]["scored_by"] != SHIPPED]
        boards[board_name] = {
            "n_systems": len(names),
            "distilled": correlations(names, "distilled", values),
            "longest": correlations(names, "longest", values),
            "reference_similarity": correlations(names, "reference_similarity", values),
            "n_held_out_by_fold": len(held_out),
            "distilled_held_out_by_fold": (
                correlations(held_out, "distilled", values) if len(held_out) > 2 else None
            ),
            "no_value": board.no_value[board_name],
        }
    return {
        "reference": board.reference_generator,
        "n_systems": len(per_system),
        "n_pairs": len(board.systems),
        "boards": boards,
        "not_on_board": board.not_on_board,
        "unpaired": board.unpaired,
        # Reported, not removed, as for test annotations.
        "outputs_in_training": shared_outputs(
            zip(board.systems, board.outputs, strict=True), training
        ),
        "systems": per_system,
    }
