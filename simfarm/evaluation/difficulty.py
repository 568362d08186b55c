"""Per-instruction difficulty for the length-controlled GLM, estimated from the annotations
at hand, and stored beside the leaderboard.

alpaca_eval's LC win rate multiplies a per-instruction term ``γ_x`` by a per-model weight.
Its ``γ_x`` values were fitted once on the whole AlpacaEval leaderboard and are only
published on the Hugging Face hub, so simfarm estimates them from whatever annotations it is
given (several models judged against one reference on the same instructions):

``notebook_joint`` (default)
    alpaca_eval's own estimate (its ``notebooks/instruction_difficulty.ipynb``): one logistic
    regression over every annotation, plus the reference's own ties (the notebook's data
    includes the baseline against itself), with a length slope and a bias per model, one
    effect per instruction and the not-gamed term, fitted as the notebook does with
    alpaca_eval's cross-validated helper: L1 penalty, ``C`` chosen among
    ``np.logspace(-4, 4, 10)`` by 5-fold grouped cross-validation on the continuous log-loss
    of the annotations at hand (:mod:`.soft_logistic`). The instruction effects are the
    difficulty (first instruction fixed at 0); the chosen ``C`` is stored with them
    (``InstructionDifficulty.C`` and ``.fit``, the sidecar JSON and the leaderboard note).
    With few models the choice is noisy (on 7 simulated models it sometimes picks
    ``C = 0.36``, which zeroes most effects): ``bench/lc_fidelity.py`` reports it.
    See :func:`_notebook_joint`.
``notebook_joint_l2``
    The same joint model with a fixed L2 penalty (``C = 1`` unless given); with
    ``JointVariant(reference_rows=False)`` it is simfarm's earlier default, kept so the two
    can be compared.
``joint_glm``
    One logistic regression over every (model, instruction) annotation:
    ``P(model beats reference on x) = σ(θ_model + γ_x)`` with soft labels ``preference - 1``
    (each row entered twice, as label 1 with weight ``p`` and label 0 with weight ``1 - p``,
    which is alpaca_eval's own trick for continuous preferences), an L2 penalty of strength
    ``1/C`` (``C = 1``) on all coefficients, fitted by scikit-learn (Newton-CG). The model terms
    absorb how strong each system is, so ``γ_x`` is what remains: how winnable instruction
    ``x`` is against the reference for a typical model. The penalty acts as a standard-normal
    prior that keeps instructions every model lost (or won) finite. The values are then
    centred on their mean.
``logit_mean``
    ``logit`` of the mean of ``preference - 1`` over models, per instruction (clipped to
    [0.001, 0.999]): the fallback in alpaca_eval's own analysis code. Simpler, but it mixes
    model strength into ``γ_x`` when models cover different instructions.

Like alpaca_eval's ``instruction_difficulty``, a *higher* value means the instruction is
*easier* for models against the reference. Instructions are keyed by (instruction, input).
The estimate improves with the number of models; with one model ``γ_x`` is that model's own
outcome, and the LC win rate says little beyond the raw one.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from simfarm.errors import ConfigError
from simfarm.types import PairwiseAnnotation, Record

DifficultyMethod = Literal["notebook_joint", "notebook_joint_l2", "joint_glm", "logit_mean"]
DIFFICULTY_METHODS: tuple[str, ...] = (
    "notebook_joint",
    "notebook_joint_l2",
    "joint_glm",
    "logit_mean",
)
JOINT_GLM_C = 1.0
NOTEBOOK_JOINT_L2_C = 1.0
LOGIT_MEAN_CLIP = 1e-3

InstructionKey = tuple[str, str]


def instruction_key(annotation: PairwiseAnnotation) -> InstructionKey:
    return (annotation.instruction, annotation.input)


class DifficultyEntry(Record):
    instruction: str
    input: str = ""
    instruction_difficulty: float
    n_models: int
    """How many models' annotations of this instruction informed the value."""


REGULARIZE_TO_BASELINE_LAMBDA = 0.2
"""alpaca_eval's ``length_controlled_v1`` weight of the gamed rows (half to each variant)."""


class GamedBaselines(Record):
    """Annotations of the gamed reference variants, as alpaca_eval stores them: the features
    of each row are precomputed (its ``std_delta_len`` was standardised on its own model)."""

    std_delta_len: list[float]
    instruction_difficulty: list[float]
    preference: list[float]
    """In [0, 1] (1: the gamed variant won); NaN rows are dropped before fitting, as there."""
    regularize_to_baseline_lambda: float = REGULARIZE_TO_BASELINE_LAMBDA


class InstructionDifficulty(Record):
    """Per-instruction difficulty values and how they were obtained."""

    method: str
    """``notebook_joint``, ``joint_glm``, ..., or where they were loaded from."""
    models: list[str]
    entries: list[DifficultyEntry]
    C: float | None = None
    """Inverse penalty strength of the fit that produced the values (None: no fit, or not
    recorded): for ``notebook_joint`` the one cross-validation chose."""
    fit: str | None = None
    """How the fit was regularised, in words (penalty, ``C`` and how ``C`` was chosen)."""
    gamed: GamedBaselines | None = None
    """alpaca_eval's gamed-baseline annotations (:mod:`.published_glm`): when present, every
    model's LC fit is regularised towards them, as alpaca_eval's ``length_controlled_v1``."""

    def lookup(self) -> dict[InstructionKey, float]:
        return {(e.instruction, e.input): e.instruction_difficulty for e in self.entries}


class LCNotComputable(ConfigError):
    """A length-controlled win rate (or the difficulty it needs) cannot be estimated from
    these annotations, e.g. every verdict is the same: reported as None with this reason in
    the leaderboard's notes, never a crash."""


class _Row(NamedTuple):
    model: int
    key: InstructionKey
    target: float
    """``preference - 1``: 1 when the model won, 0 when the reference did."""
    delta_len: float
    """``len(reference output) - len(model output)`` in characters (alpaca_eval's sign)."""
    model_len: int


def _valid_rows(
    annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]],
) -> tuple[list[str], list[_Row]]:
    models: list[str] = []
    rows: list[_Row] = []
    for model, model_annotations in annotations_by_model.items():
        usable = [
            _Row(
                len(models),
                instruction_key(a),
                a.preference - 1.0,
                float(len(a.output_1) - len(a.output_2)),
                len(a.output_2),
            )
            for a in model_annotations
            if a.generator_1 != a.generator_2
            and a.preference is not None
            and 1.0 <= a.preference <= 2.0
        ]
        if not usable:
            continue
        models.append(model)
        rows.extend(usable)
    return models, rows


class JointVariant(Record):
    """Details of the joint fit, measured in ``bench/lc_fidelity.py``; the defaults are the
    notebook's fit."""

    reference_rows: bool = True
    """Include the reference judged against itself (a tie on every instruction, no length
    difference) as one more model: the notebook's leaderboard includes the baseline
    (``gpt4_1106_preview``, 805 draws) and its annotations enter the joint fit. Those ties
    are known without a judge, so they are built here rather than read."""
    centre: bool = False
    """Centre the instruction effects on their mean instead of fixing the first at 0."""
    discrete: bool = False
    """Round the soft preferences to win/loss (exact ties stay 0.5) before fitting."""
    glm_rows: bool = False
    """Rows and length feature as alpaca_eval's per-model GLM builds them instead of the
    notebook: empty model outputs kept, ``Δlen`` standardised over all of the model's
    annotations (failed ones included)."""


def estimate_difficulty(
    annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]],
    method: DifficultyMethod = "notebook_joint",
    *,
    C: float | None = None,
    variant: JointVariant | None = None,
) -> InstructionDifficulty:
    """Difficulty of every instruction seen in ``annotations_by_model`` (see module doc).

    ``C``: for the notebook methods, a fixed inverse penalty strength instead of the default
    (``notebook_joint``: chosen by cross-validation; ``notebook_joint_l2``: 1).
    ``variant``: details of the notebook methods' joint fit (default: the notebook's), to
    measure departures from it. Annotations of the reference against itself are skipped
    (the notebook methods add the reference's ties themselves, see :class:`JointVariant`).
    """
    if method not in DIFFICULTY_METHODS:
        raise ConfigError(f"unknown difficulty method {method!r}; expected {DIFFICULTY_METHODS}")
    models, rows = _valid_rows(annotations_by_model)
    if not rows:
        raise ConfigError("no valid annotation to estimate instruction difficulty from")
    notebook = method in ("notebook_joint", "notebook_joint_l2")
    glm_rows = variant is not None and variant.glm_rows
    if notebook and not glm_rows:
        # The notebook drops empty model outputs before fitting (``len_2 != 0``).
        rows = [r for r in rows if r.model_len > 0] or rows
    # Instructions in the order first seen (the benchmark's order, alpaca_eval's ``index``):
    # the notebook's dummy coding takes the first as its reference level.
    keys = list(dict.fromkeys(r.key for r in rows))
    key_index = {key: i for i, key in enumerate(keys)}
    model_idx = np.array([r.model for r in rows])
    inst_idx = np.array([key_index[r.key] for r in rows])
    target = np.array([r.target for r in rows])
    used_C: float | None = None
    fit: str | None = None
    if notebook:
        delta = np.array([r.delta_len for r in rows])
        values, used_C, fit = _notebook_joint(
            model_idx,
            inst_idx,
            target,
            delta,
            len(models),
            len(keys),
            penalty="l1" if method == "notebook_joint" else "l2",
            C=C,
            variant=variant or JointVariant(),
            spread=_all_annotations_spread(annotations_by_model, models) if glm_rows else None,
        )
    elif method == "joint_glm":
        values = _joint_glm(model_idx, inst_idx, target, len(models), len(keys))
    else:
        sums = np.bincount(inst_idx, weights=target, minlength=len(keys))
        counts = np.bincount(inst_idx, minlength=len(keys))
        mean = np.clip(sums / counts, LOGIT_MEAN_CLIP, 1 - LOGIT_MEAN_CLIP)
        values = np.log(mean / (1 - mean))
    if method == "joint_glm":
        used_C, fit = JOINT_GLM_C, f"L2, C={JOINT_GLM_C:g} (fixed)"
    n_models = np.bincount(inst_idx, minlength=len(keys))
    entries = [
        DifficultyEntry(
            instruction=key[0],
            input=key[1],
            instruction_difficulty=float(values[i]),
            n_models=int(n_models[i]),
        )
        for i, key in enumerate(keys)
    ]
    # Instructions whose every annotation failed still belong to the benchmark (the LC
    # averages over them): they get the prior's value, 0, and n_models = 0.
    seen = set(keys)
    for model_annotations in annotations_by_model.values():
        for a in model_annotations:
            key = instruction_key(a)
            if key not in seen and a.generator_1 != a.generator_2:
                seen.add(key)
                entries.append(
                    DifficultyEntry(
                        instruction=key[0], input=key[1], instruction_difficulty=0.0, n_models=0
                    )
                )
    return InstructionDifficulty(method=method, models=models, entries=entries, C=used_C, fit=fit)


def _all_annotations_spread(
    annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]], models: list[str]
) -> np.ndarray:
    """Per model, the standard deviation of ``Δlen`` over all its annotations, failed ones
    included: what alpaca_eval's per-model GLM divides by."""
    out = np.zeros(len(models))
    for i, model in enumerate(models):
        delta = [
            float(len(a.output_1) - len(a.output_2))
            for a in annotations_by_model[model]
            if a.generator_1 != a.generator_2
        ]
        out[i] = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    return out


def _check_separable(target: np.ndarray, what: str) -> None:
    """Raise :class:`LCNotComputable` when every soft label is 0 or every one is 1."""
    if np.all(target == 0.0) or np.all(target == 1.0):
        raise LCNotComputable(
            f"instruction difficulty ({what}) not computable: every verdict of every model "
            "is the same, so no LC win rate can be estimated"
        )


def _soft_label_fit(design: Any, target: np.ndarray, C: float, what: str) -> np.ndarray:
    """L2 logistic regression without intercept on soft labels, each row entered twice
    (label 1 with weight ``p``, label 0 with weight ``1 - p``): alpaca_eval's trick."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    _check_separable(target, what)
    n = target.size
    features = sparse.vstack([design, design]).tocsr()
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    weights = np.concatenate([target, 1.0 - target])
    keep = weights > 0
    # Newton-CG: ~1000 coefficients, converges in a handful of Hessian steps (10x faster
    # than lbfgs here at the same tolerance).
    model = LogisticRegression(
        C=C, fit_intercept=False, solver="newton-cg", max_iter=1000, tol=1e-8
    )
    model.fit(features[keep], labels[keep], sample_weight=weights[keep])
    return np.asarray(model.coef_[0], dtype=float)


def _notebook_joint(
    model_idx: np.ndarray,
    inst_idx: np.ndarray,
    target: np.ndarray,
    delta: np.ndarray,
    n_models: int,
    n_inst: int,
    penalty: Literal["l1", "l2"],
    C: float | None,
    variant: JointVariant,
    spread: np.ndarray | None = None,
) -> tuple[np.ndarray, float, str]:
    """alpaca_eval's ``instruction_difficulty.ipynb`` joint fit, one logistic regression over
    every (model, instruction) annotation with the formula

        C(generator_2):np.tanh(rand_delta_len_std_only) + C(generator_2) + C(index)
        + not_gamed_baseline.astype(float) - 1

    i.e. a length slope and a bias per model (``Δlen`` divided by that model's own standard
    deviation, not centred), one effect per instruction in treatment coding (the first
    instruction is the reference level, fixed at 0) and the constant not-gamed term (no gamed
    baselines here, so it is 1 on every row, as in the notebook's rows of real models). Like
    the notebook's, the rows include the reference against itself (a tie on every
    instruction), unless ``variant.reference_rows`` is off. The instruction effects are the
    difficulty; returns them, the ``C`` used and the fit in words.

    ``penalty="l1"`` is the notebook's fit: ``fit_LogisticRegressionCV(..., n_splits=5)``,
    L1 with ``C`` chosen by its cross-validation on these annotations unless ``C`` is given
    (about a second for 7 systems x 805 instructions). ``penalty="l2"`` is a plain L2 fit at
    ``C`` (default 1). The notebook's 1e-4 random jitter on ``Δlen`` (only there to avoid a
    zero standard deviation for the baseline against itself) is left out.
    """
    from scipy import sparse

    from simfarm.evaluation.soft_logistic import CS, N_SPLITS, cross_validated_fit, fit_l1

    _check_separable(target, "notebook joint fit")  # on the judge's verdicts, not the ties
    if variant.reference_rows:
        # The baseline against itself: a tie on every instruction with Δlen = 0, as one more
        # "model" (its slope feature is 0: the notebook's jitter divided by its own spread
        # is noise whose weight the fit leaves near 0).
        inst = np.arange(n_inst)
        model_idx = np.concatenate([model_idx, np.full(n_inst, n_models)])
        inst_idx = np.concatenate([inst_idx, inst])
        target = np.concatenate([target, np.full(n_inst, 0.5)])
        delta = np.concatenate([delta, np.zeros(n_inst)])
        n_models += 1
    if variant.discrete:
        target = np.where(target > 0.5, 1.0, np.where(target < 0.5, 0.0, 0.5))
    n = target.size
    given = spread
    spread = np.ones(n_models)
    for m in range(n_models):
        own = delta[model_idx == m]
        std = float(np.std(own, ddof=1)) if own.size > 1 else 0.0
        if given is not None and m < given.size:
            std = float(given[m])
        spread[m] = std if std > 0 else 1.0
    slope = np.tanh(delta / spread[model_idx])
    inst_rows = np.flatnonzero(inst_idx > 0)
    rows = np.concatenate([np.arange(n), np.arange(n), inst_rows, np.arange(n)])
    cols = np.concatenate(
        [
            model_idx,
            n_models + model_idx,
            2 * n_models + inst_idx[inst_rows] - 1,
            np.full(n, 2 * n_models + n_inst - 1),
        ]
    )
    values = np.concatenate([slope, np.ones(n), np.ones(inst_rows.size), np.ones(n)])
    design = sparse.csr_matrix(
        (values, (rows, cols)), shape=(n, 2 * n_models + n_inst), dtype=float
    )
    if penalty == "l2":
        C = NOTEBOOK_JOINT_L2_C if C is None else C
        coef = _soft_label_fit(design, target, C, "notebook joint fit")
        fit = f"L2, C={C:g} (fixed)"
    else:
        if C is None:
            coef, C = cross_validated_fit(design, target)
            fit = (
                f"L1, C={C:.4g} chosen by {N_SPLITS}-fold cross-validation over "
                f"np.logspace({np.log10(CS[0]):g}, {np.log10(CS[-1]):g}, {CS.size}) "
                "(alpaca_eval's fit_LogisticRegressionCV)"
            )
        else:
            labels = np.concatenate([np.ones(n), np.zeros(n)])
            weights = np.concatenate([target, 1.0 - target])
            coef = fit_l1(sparse.vstack([design, design]).tocsr(), labels, weights, C)
            fit = f"L1, C={C:g} (fixed)"
    effects = np.concatenate([[0.0], coef[2 * n_models : 2 * n_models + n_inst - 1]])
    if variant.centre:
        effects = effects - effects.mean()
    if variant.reference_rows:
        fit += "; reference's own ties included"
    if variant != JointVariant():
        fit += f"; variant {variant.model_dump()}"
    return effects, float(C), fit


def _joint_glm(
    model_idx: np.ndarray, inst_idx: np.ndarray, target: np.ndarray, n_models: int, n_inst: int
) -> np.ndarray:
    from scipy import sparse

    n = target.size
    cols = np.concatenate([model_idx, n_models + inst_idx])
    rows = np.concatenate([np.arange(n), np.arange(n)])
    design = sparse.csr_matrix(
        (np.ones(2 * n), (rows, cols)), shape=(n, n_models + n_inst), dtype=float
    )
    gamma = _soft_label_fit(design, target, JOINT_GLM_C, "joint GLM")[n_models:]
    return gamma - gamma.mean()


CSV_COLUMNS = ("instruction", "input", "instruction_difficulty", "n_models")


def save_difficulty(difficulty: InstructionDifficulty, path: Path) -> None:
    """CSV (one row per instruction) plus a ``.json`` sidecar with the method and models."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for e in difficulty.entries:
            writer.writerow([e.instruction, e.input, repr(e.instruction_difficulty), e.n_models])
    meta = {
        "method": difficulty.method,
        "models": difficulty.models,
        "csv": path.name,
        "C": difficulty.C,
        "fit": difficulty.fit,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_difficulty(path: Path) -> InstructionDifficulty:
    """Difficulty values stored by :func:`save_difficulty` (the JSON sidecar is optional)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such instruction-difficulty file")
    entries: list[DifficultyEntry] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"instruction", "instruction_difficulty"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: missing column(s) {sorted(missing)}")
        for index, row in enumerate(reader):
            try:
                value = float(row["instruction_difficulty"])
                n_models = int(row.get("n_models") or 0)
            except ValueError as error:
                raise ConfigError(
                    f"{path}: record {index}: field 'instruction_difficulty'/'n_models': {error}"
                ) from None
            if math.isnan(value):
                raise ConfigError(f"{path}: record {index}: field 'instruction_difficulty': NaN")
            entries.append(
                DifficultyEntry(
                    instruction=row["instruction"],
                    input=row.get("input") or "",
                    instruction_difficulty=value,
                    n_models=n_models,
                )
            )
    meta_path = path.with_suffix(".json")
    models: list[str] = []
    method = f"loaded from {path}"
    C: float | None = None
    fit: str | None = None
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        models = list(meta.get("models", []))
        method = f"{meta.get('method', 'unknown')} (loaded from {path})"
        C = meta.get("C")
        fit = meta.get("fit")
    return InstructionDifficulty(method=method, models=models, entries=entries, C=C, fit=fit)
