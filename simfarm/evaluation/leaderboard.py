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
    LCNotComputable,
    estimate_difficulty,
    save_difficulty,
)
from simfarm.evaluation.judge_checks import JudgeCheck, check_judges, consistency_line
from simfarm.evaluation.length_controlled import (
    WEIGHT_NAMES,
    GLMWeights,
    length_controlled_winrate,
)
from simfarm.evaluation.winrate import WinRateMetrics, compute_winrate
from simfarm.provenance import Provenance, current_provenance
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
    difficulty_fit: str | None = None
    """How that fit was regularised (penalty, ``C`` and how ``C`` was chosen), when known."""
    glm_weights: dict[str, GLMWeights] = Field(default_factory=dict)
    judge_agreement: list[str] = Field(default_factory=list)
    """Measured human agreement of the judges behind these rows (from the personas that
    judged, given by the caller), shown beside the leaderboard so a weak judge is never taken
    for a faithful one."""
    provenance: Provenance | None = None
    """simfarm version, command line and persona digests (set when written)."""
    judge_checks: list[JudgeCheck] = Field(default_factory=list)
    """Per judge: position consistency (both orders judged), the share of one shown slot,
    the preference band, and warnings when the judge is degenerate (:mod:`.judge_checks`)."""
    notes: list[str] = Field(default_factory=list)
    """What a reader must know to trust (or not) these numbers: LC values that could not be
    computed and why, a judge whose verdicts follow length alone, fitting warnings. One line
    each; shown beside the board instead of raw Python warnings."""


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
    difficulty_method: DifficultyMethod = "notebook_joint",
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
    notes: list[str] = []
    if length_controlled:
        difficulty = _length_control(models, rows, weights, notes, difficulty, difficulty_method)

    def sort_key(row: LeaderboardRow) -> float:
        value = row.length_controlled_winrate if length_controlled else row.win_rate
        return -value if value is not None and not math.isnan(value) else math.inf

    return (
        Leaderboard(
            reference=reference,
            rows=sorted(rows.values(), key=sort_key),
            judge_agreement=list(judge_agreement),
            difficulty_method=difficulty.method if length_controlled and difficulty else None,
            difficulty_fit=difficulty.fit if length_controlled and difficulty else None,
            glm_weights=weights,
            notes=notes,
            judge_checks=check_judges(a for anns in models.values() for a in anns),
        ),
        difficulty if length_controlled else None,
    )


def _length_control(
    models: Mapping[str, Sequence[PairwiseAnnotation]],
    rows: dict[str, LeaderboardRow],
    weights: dict[str, GLMWeights],
    notes: list[str],
    difficulty: InstructionDifficulty | None,
    difficulty_method: DifficultyMethod,
) -> InstructionDifficulty | None:
    """Fill the LC columns of ``rows`` (and ``weights``); what cannot be computed stays None
    with a one-line reason in ``notes``, and fitting warnings become notes too (a console
    user should read a sentence, not scikit-learn's source lines). Returns the difficulty."""
    length_note = _pure_length_judge_note(models)
    if length_note:
        notes.append(length_note)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if difficulty is None:
                difficulty = estimate_difficulty(models, difficulty_method)
        except LCNotComputable as error:
            notes.append(str(error))
            return None
        if len(difficulty.models) == 1:
            notes.append(
                "instruction difficulty was estimated from a single model; its LC win rate "
                "says little beyond the raw one (give several models, or --difficulty)"
            )
        for model, annotations in models.items():
            try:
                result = length_controlled_winrate(annotations, difficulty)
            except LCNotComputable as error:
                notes.append(str(error))
                continue
            rows[model].length_controlled_winrate = result.length_controlled_winrate
            rows[model].lc_standard_error = result.lc_standard_error
            weights[model] = result.weights
    kinds = sorted({type(w.message).__name__ for w in caught})
    if kinds and not length_note:
        notes.append(
            f"the LC fits raised {len(caught)} warning(s) ({', '.join(kinds)}); treat the LC "
            "values as approximate"
        )
    return difficulty


PURE_LENGTH_SHARE = 0.99
"""Share of decisive verdicts that follow output length above which a judge is taken for a
pure length judge (LC, which removes length, then leaves nothing to measure)."""


def _pure_length_judge_note(models: Mapping[str, Sequence[PairwiseAnnotation]]) -> str | None:
    follows = total = 0
    for judged in models.values():
        for a in judged:
            if a.generator_1 == a.generator_2 or a.preference is None:
                continue
            if a.preference in (0.0, 1.5) or len(a.output_1) == len(a.output_2):
                continue
            total += 1
            follows += (a.preference > 1.5) == (len(a.output_2) > len(a.output_1))
    if total < 2 or follows / total < PURE_LENGTH_SHARE:
        return None
    return (
        f"the judge picked the longer output in {follows}/{total} decisive verdicts: it judges "
        "length alone, so the length-controlled win rate (which removes length) is "
        "meaningless here"
    )


def judge_lines(leaderboard: Leaderboard) -> list[str]:
    """Position consistency and degenerate-judge warnings, one line each, to show beside
    any rendering of the board."""
    lines: list[str] = []
    for check in leaderboard.judge_checks:
        consistency = consistency_line(check)
        if consistency:
            lines.append(consistency)
        lines += [f"WARNING: {w}" for w in check.warnings]
    return lines


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
    for line in judge_lines(leaderboard):
        lines += ["", f"**Judge check** - {line}"]
    for note in leaderboard.notes:
        lines += ["", f"**Note** - {note}"]
    if leaderboard.difficulty_method:
        lines += [
            "",
            f"LC: alpaca_eval's length-controlled GLM; instruction difficulty: "
            f"{leaderboard.difficulty_method}"
            + (f" ({leaderboard.difficulty_fit})" if leaderboard.difficulty_fit else "")
            + " (see instruction_difficulty.csv).",
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
    if leaderboard.provenance is None:
        leaderboard.provenance = current_provenance()
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
