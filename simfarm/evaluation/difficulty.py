"""Per-instruction difficulty for the length-controlled GLM, estimated from the annotations
at hand, and stored beside the leaderboard.

alpaca_eval's LC win rate multiplies a per-instruction term ``γ_x`` by a per-model weight.
Its ``γ_x`` values were fitted once on the whole AlpacaEval leaderboard and are only
published on the Hugging Face hub, so simfarm estimates them from whatever annotations it is
given (several models judged against one reference on the same instructions):

``joint_glm`` (default)
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
from typing import Literal

import numpy as np

from simfarm.errors import ConfigError
from simfarm.types import PairwiseAnnotation, Record

DifficultyMethod = Literal["joint_glm", "logit_mean"]
DIFFICULTY_METHODS: tuple[str, ...] = ("joint_glm", "logit_mean")
JOINT_GLM_C = 1.0
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


class InstructionDifficulty(Record):
    """Per-instruction difficulty values and how they were obtained."""

    method: str
    """``joint_glm``, ``logit_mean``, or where they were loaded from."""
    models: list[str]
    entries: list[DifficultyEntry]

    def lookup(self) -> dict[InstructionKey, float]:
        return {(e.instruction, e.input): e.instruction_difficulty for e in self.entries}


class LCNotComputable(ConfigError):
    """A length-controlled win rate (or the difficulty it needs) cannot be estimated from
    these annotations, e.g. every verdict is the same: reported as None with this reason in
    the leaderboard's notes, never a crash."""


def _valid_rows(
    annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]],
) -> tuple[list[str], list[tuple[int, InstructionKey, float]]]:
    models: list[str] = []
    rows: list[tuple[int, InstructionKey, float]] = []
    for model, model_annotations in annotations_by_model.items():
        usable = [
            (instruction_key(a), a.preference - 1.0)
            for a in model_annotations
            if a.generator_1 != a.generator_2
            and a.preference is not None
            and 1.0 <= a.preference <= 2.0
        ]
        if not usable:
            continue
        models.append(model)
        rows.extend((len(models) - 1, key, target) for key, target in usable)
    return models, rows


def estimate_difficulty(
    annotations_by_model: Mapping[str, Sequence[PairwiseAnnotation]],
    method: DifficultyMethod = "joint_glm",
) -> InstructionDifficulty:
    """Difficulty of every instruction seen in ``annotations_by_model`` (see module doc).

    The reference judged against itself carries no information and is left out.
    """
    if method not in DIFFICULTY_METHODS:
        raise ConfigError(f"unknown difficulty method {method!r}; expected {DIFFICULTY_METHODS}")
    models, rows = _valid_rows(annotations_by_model)
    if not rows:
        raise ConfigError("no valid annotation to estimate instruction difficulty from")
    keys = sorted({key for _, key, _ in rows})
    key_index = {key: i for i, key in enumerate(keys)}
    model_idx = np.array([m for m, _, _ in rows])
    inst_idx = np.array([key_index[k] for _, k, _ in rows])
    target = np.array([p for _, _, p in rows])
    if method == "joint_glm":
        values = _joint_glm(model_idx, inst_idx, target, len(models), len(keys))
    else:
        sums = np.bincount(inst_idx, weights=target, minlength=len(keys))
        counts = np.bincount(inst_idx, minlength=len(keys))
        mean = np.clip(sums / counts, LOGIT_MEAN_CLIP, 1 - LOGIT_MEAN_CLIP)
        values = np.log(mean / (1 - mean))
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
    return InstructionDifficulty(method=method, models=models, entries=entries)


def _joint_glm(
    model_idx: np.ndarray, inst_idx: np.ndarray, target: np.ndarray, n_models: int, n_inst: int
) -> np.ndarray:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    n = target.size
    cols = np.concatenate([model_idx, n_models + inst_idx])
    rows = np.concatenate([np.arange(n), np.arange(n)])
    design = sparse.csr_matrix(
        (np.ones(2 * n), (rows, cols)), shape=(n, n_models + n_inst), dtype=float
    )
    features = sparse.vstack([design, design]).tocsr()
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    weights = np.concatenate([target, 1.0 - target])
    keep = weights > 0
    if np.unique(labels[keep]).size < 2:
        raise LCNotComputable(
            "instruction difficulty (joint GLM) not computable: every verdict of every model "
            "is the same, so no LC win rate can be estimated"
        )
    # Newton-CG: ~800 coefficients, converges in a handful of Hessian steps (10x faster
    # than lbfgs here at the same tolerance).
    model = LogisticRegression(
        C=JOINT_GLM_C, fit_intercept=False, solver="newton-cg", max_iter=1000, tol=1e-8
    )
    model.fit(features[keep], labels[keep], sample_weight=weights[keep])
    gamma = model.coef_[0][n_models:]
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
    meta = {"method": difficulty.method, "models": difficulty.models, "csv": path.name}
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
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        models = list(meta.get("models", []))
        method = f"{meta.get('method', 'unknown')} (loaded from {path})"
    return InstructionDifficulty(method=method, models=models, entries=entries)
