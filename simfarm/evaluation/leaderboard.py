"""A win-rate leaderboard from annotations, written as alpaca_eval writes its own.

One row per model (``generator_2``), all judged against one reference (``generator_1``):
alpaca_eval's head-to-head columns (:mod:`.winrate`), ``avg_length`` (mean characters of the
model's outputs, truncated to an integer as alpaca_eval does), the length-controlled win rate
(:mod:`.length_controlled`) with per-instruction difficulty estimated from all the models at
hand (:mod:`.difficulty`), and cost/time per 1000 annotations. Rows are sorted by LC win
rate, like alpaca_eval 2.0's board.

Files (:func:`write_leaderboard`): ``leaderboard.csv`` (first column ``generator_2``, then
alpaca_eval's column names, then simfarm's extras), ``leaderboard.json`` (everything, GLM
weights included), ``leaderboard.md``, ``glm_weights.csv`` (alpaca_eval's weights-file layout)
and ``instruction_difficulty.csv`` (+ ``.json``), so a later run can reuse the difficulty.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import Field

from simfarm.errors import ConfigError
from simfarm.evaluation.difficulty import (
    DifficultyMethod,
    InstructionDifficulty,
    estimate_difficulty,
    save_difficulty,
)
from simfarm.evaluation.length_controlled import (
    WEIGHT_NAMES,
    GLMWeights,
    length_controlled_winrate,
)
from simfarm.evaluation.winrate import WinRateMetrics, compute_winrate
from simfarm.types import PairwiseAnnotation, Record

CSV_COLUMNS = (
    "generator_2",
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
    "length_controlled_winrate",
    "lc_standard_error",
    # simfarm's extras, after alpaca_eval's columns
    "reference",
    "annotator",
    "n_failed",
    "price_per_1000",
    "time_per_1000",
)


class LeaderboardRow(WinRateMetrics):
    """One model's row: alpaca_eval's head-to-head metrics plus length control and cost."""

    generator_2: str
    """The model's name."""
    avg_length: int
    length_controlled_winrate: float | None = None
    lc_standard_error: float | None = None
    reference: str
    """``generator_1``: the reference the model was judged against."""
    annotator: str
    """The annotator(s) whose judgements these are (comma-separated when mixed)."""
    n_failed: int
    """Annotations without a verdict (left out of every count, as in alpaca_eval)."""
    price_per_1000: float
    """USD per 1000 annotations (mean ``cost_usd`` x 1000)."""
    time_per_1000: float
    """Seconds per 1000 annotations (mean ``latency_s`` x 1000)."""


class Leaderboard(Record):
    reference: str
    rows: list[LeaderboardRow]
    difficulty_method: str | None = None
    """How instruction difficulty was obtained (None when LC was not computed)."""
    glm_weights: dict[str, GLMWeights] = Field(default_factory=dict)
    judge_agreement: list[str] = Field(default_factory=list)
    """Measured human agreement of the judges behind these rows (from the personas that
    judged, given by the caller), shown beside the leaderboard so a weak judge is never taken
    for a faithful one."""


def _reference(annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]]) -> str:
    references = {
        a.generator_1
        for model, annotations in annotations_by_model.items()
        for a in annotations
        if a.generator_1 != model
    }
    if not references:  # only the reference judged against itself
        references = {a.generator_1 for anns in annotations_by_model.values() for a in anns}
    if len(references) != 1:
        raise ConfigError(
            f"annotations compare models against several references {sorted(references)}; "
            "a leaderboard needs one reference (generator_1) for all models"
        )
    return references.pop()


def _row(model: str, annotations: Sequence[PairwiseAnnotation], reference: str) -> LeaderboardRow:
    metrics = compute_winrate([a.preference for a in annotations])
    n = len(annotations)
    return LeaderboardRow(
        generator_2=model,
        **metrics.model_dump(),
        avg_length=int(sum(len(a.output_2) for a in annotations) / n),
        reference=reference,
        annotator=",".join(sorted({a.annotator for a in annotations})),
        n_failed=sum(a.preference is None for a in annotations),
        price_per_1000=sum(a.cost_usd for a in annotations) / n * 1000,
        time_per_1000=sum(a.latency_s for a in annotations) / n * 1000,
    )


def build_leaderboard(
    annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]],
    *,
    length_controlled: bool = True,
    difficulty: InstructionDifficulty | None = None,
    difficulty_method: DifficultyMethod = "joint_glm",
    judge_agreement: Sequence[str] = (),
) -> tuple[Leaderboard, InstructionDifficulty | None]:
    """The leaderboard of every model in ``annotations_by_model`` (keyed by model name).

    ``difficulty``: per-instruction values to use; when None they are estimated from these
    annotations with ``difficulty_method`` (and returned, to be stored).
    ``judge_agreement``: the judges' measured human agreement, one line each, shown with the
    board; given by the caller, which knows which persona judged (see
    :func:`simfarm.annotation.loader.measured_agreement_note`).
    """
    models = {m: a for m, a in annotations_by_model.items() if a}
    if not models:
        raise ConfigError("no annotations to build a leaderboard from")
    reference = _reference(models)
    rows = {model: _row(model, annotations, reference) for model, annotations in models.items()}
    weights: dict[str, GLMWeights] = {}
    if length_controlled:
        if difficulty is None:
            difficulty = estimate_difficulty(models, difficulty_method)
        if len(difficulty.models) == 1:
            warnings.warn(
                "instruction difficulty was estimated from a single model; its LC win rate "
                "says little beyond the raw one (give several models, or --difficulty)",
                stacklevel=2,
            )
        for model, annotations in models.items():
            result = length_controlled_winrate(annotations, difficulty)
            rows[model].length_controlled_winrate = result.length_controlled_winrate
            rows[model].lc_standard_error = result.lc_standard_error
            weights[model] = result.weights

    def sort_key(row: LeaderboardRow) -> float:
        value = row.length_controlled_winrate if length_controlled else row.win_rate
        return -value if value is not None and not math.isnan(value) else math.inf

    return (
        Leaderboard(
            reference=reference,
            rows=sorted(rows.values(), key=sort_key),
            judge_agreement=list(judge_agreement),
            difficulty_method=difficulty.method if length_controlled and difficulty else None,
            glm_weights=weights,
        ),
        difficulty if length_controlled else None,
    )


def leaderboard_frame(leaderboard: Leaderboard):  # -> pandas.DataFrame (lazy import)
    """The leaderboard as a DataFrame indexed by model name (alpaca_eval's layout)."""
    import pandas as pd

    frame = pd.DataFrame([row.model_dump() for row in leaderboard.rows], columns=CSV_COLUMNS)
    return frame.set_index("generator_2")


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def leaderboard_markdown(leaderboard: Leaderboard) -> str:
    header = (
        "| model | LC win rate | LC SE | win rate | SE | wins | losses | draws | n | "
        "discrete WR | avg length |"
    )
    lines = [
        f"# Leaderboard (reference: `{leaderboard.reference}`)",
        "",
        header,
        "|" + "---|" * 11,
    ]
    for r in leaderboard.rows:
        lines.append(
            f"| {r.generator_2} | {_fmt(r.length_controlled_winrate)} | "
            f"{_fmt(r.lc_standard_error)} | {_fmt(r.win_rate)} | {_fmt(r.standard_error)} | "
            f"{r.n_wins} | {r.n_wins_base} | {r.n_draws} | {r.n_total} | "
            f"{_fmt(r.discrete_win_rate)} | {r.avg_length} |"
        )
    for note in leaderboard.judge_agreement:
        lines += ["", f"**Judge quality** - {note}."]
    if leaderboard.difficulty_method:
        lines += [
            "",
            f"LC: alpaca_eval's length-controlled GLM; instruction difficulty: "
            f"{leaderboard.difficulty_method} (see instruction_difficulty.csv).",
        ]
    return "\n".join(lines) + "\n"


def write_leaderboard(
    leaderboard: Leaderboard,
    out_dir: Path,
    difficulty: InstructionDifficulty | None = None,
) -> dict[str, Path]:
    """Write CSV, JSON, markdown (+ GLM weights and difficulty); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "leaderboard.csv",
        "json": out_dir / "leaderboard.json",
        "markdown": out_dir / "leaderboard.md",
    }
    leaderboard_frame(leaderboard).to_csv(paths["csv"])
    # pydantic writes NaN as null: the file stays standard JSON.
    paths["json"].write_text(leaderboard.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(leaderboard_markdown(leaderboard), encoding="utf-8")
    if leaderboard.glm_weights:
        import pandas as pd

        weights = pd.DataFrame(
            {
                model: dict(zip(WEIGHT_NAMES, (w.length, w.difficulty, w.model), strict=True))
                for model, w in leaderboard.glm_weights.items()
            }
        ).T
        paths["glm_weights"] = out_dir / "glm_weights.csv"
        weights.to_csv(paths["glm_weights"], float_format="%.16f")
    if difficulty is not None:
        paths["instruction_difficulty"] = out_dir / "instruction_difficulty.csv"
        save_difficulty(difficulty, paths["instruction_difficulty"])
    return paths
