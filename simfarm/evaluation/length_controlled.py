"""The length-controlled win rate: alpaca_eval's GLM (Dubois et al. 2024), fitted per model.

For one model against the reference, the GLM is

    P(model beats reference on x) = σ(φ · tanh(Δlen_x / std(Δlen)) + ψ · γ_x + θ)

with ``Δlen = len(reference output) - len(model output)`` in characters (alpaca_eval's
sign), ``γ_x`` the per-instruction difficulty (:mod:`.difficulty`) and ``θ`` the model term.
The LC win rate is the mean prediction with ``Δlen`` set to zero, over every instruction the
model was judged on (failed annotations included: they still belong to the benchmark); its
standard error is the sample standard error of those predictions, as in alpaca_eval.

Fitting mirrors ``alpaca_eval.metrics.glm_winrate`` (``length_controlled_v1``): no intercept
(``θ`` is the coefficient of a constant column, so it is penalised too), L1 penalty, liblinear,
``random_state=123``, soft labels ``preference - 1`` entered as two weighted rows, and the
penalty strength chosen among ``np.logspace(-4, 4, 10)`` by 5-fold ``GroupKFold``
cross-validation (both copies of a row in the same fold) on the continuous log-loss, then a
refit on all rows (:mod:`.soft_logistic`). Given the same ``γ_x`` it reproduces alpaca_eval's
LC values.

Models are fitted one after another on purpose: liblinear seeds a process-global C random
generator, so fits running in parallel threads interleave its draws and stop being
reproducible (processes would be fine).

alpaca_eval also regularises each fit towards two "gamed" variants of the reference
(``gpt4_1106_preview_verbose`` / ``_concise``, weight 0.2), whose annotations are only on the
hub: with the published inputs (:func:`simfarm.evaluation.published_glm.published_difficulty`,
which attaches them to the difficulty) this is done exactly as there, rows, weights and
cross-validation scoring included, and the LC equals alpaca_eval's. Offline, without them, the
length term is fitted from the model's own annotations alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from simfarm.errors import ConfigError
from simfarm.evaluation.difficulty import (
    InstructionDifficulty,
    LCNotComputable,
    instruction_key,
)
from simfarm.evaluation.soft_logistic import cross_validated_fit, predict
from simfarm.types import PairwiseAnnotation, Record

# alpaca_eval's names for the three weights (its patsy formula terms), for saved weights.
WEIGHT_NAMES = (
    "np.tanh(std_delta_len)",
    "instruction_difficulty",
    "not_gamed_baseline.astype(float)",
)


class GLMWeights(Record):
    length: float
    """φ: weight of ``tanh(standardised Δlen)`` (negative when longer model outputs win)."""
    difficulty: float
    """ψ: weight of the instruction difficulty ``γ_x``."""
    model: float
    """θ: the model term."""
    C: float
    """Inverse L1 strength picked by cross-validation (NaN when nothing was fitted)."""


class LengthControlledResult(Record):
    length_controlled_winrate: float
    lc_standard_error: float
    weights: GLMWeights


def length_controlled_winrate(
    annotations: Sequence[PairwiseAnnotation], difficulty: InstructionDifficulty
) -> LengthControlledResult:
    """LC win rate of one model (all ``annotations`` share ``generator_2``)."""
    if not annotations:
        raise ConfigError("no annotations to compute a length-controlled win rate from")
    if all(a.generator_1 == a.generator_2 for a in annotations):
        # The reference against itself: 50% by construction, as in alpaca_eval.
        return LengthControlledResult(
            length_controlled_winrate=50.0,
            lc_standard_error=0.0,
            weights=GLMWeights(length=0.0, difficulty=0.0, model=0.0, C=math.nan),
        )
    lookup = difficulty.lookup()
    missing = [a.instruction for a in annotations if instruction_key(a) not in lookup]
    if missing:
        raise ConfigError(
            f"{len(missing)} instruction(s) of {annotations[0].generator_2!r} have no "
            f"difficulty value (first: {missing[0][:80]!r}); estimate difficulty from "
            "annotations that include them"
        )
    gamma = np.array([lookup[instruction_key(a)] for a in annotations])
    len_1 = np.array([len(a.output_1) for a in annotations], dtype=float)
    len_2 = np.array([len(a.output_2) for a in annotations], dtype=float)
    delta = len_1 - len_2
    spread = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
    std_delta = delta / spread if spread > 0 else np.zeros_like(delta)
    features = np.column_stack([np.tanh(std_delta), gamma, np.ones_like(gamma)])

    preference = np.array(
        [math.nan if a.preference is None else a.preference for a in annotations], dtype=float
    )
    preference = np.where(preference == 0.0, 1.5, preference)
    valid = (preference >= 1.0) & (preference <= 2.0)
    if not valid.any():
        raise ConfigError(
            f"{annotations[0].generator_2!r}: every annotation failed; no LC win rate"
        )
    target = preference[valid] - 1.0
    if difficulty.gamed is None and np.all(target == target[0]) and target[0] in (0.0, 1.0):
        verdict = "wins" if target[0] == 1.0 else "losses"
        raise LCNotComputable(
            f"LC win rate of {annotations[0].generator_2!r} not computable: all "
            f"{target.size} verdicts are {verdict}, so the GLM has nothing to separate"
        )
    train_features, train_target = features[valid], target
    row_weight = np.ones_like(train_target)
    if difficulty.gamed is not None:
        # alpaca_eval's regularisation: the gamed rows come first, weighted lambda / 2 each
        # (two gamed variants), with not_gamed_baseline = 0; failed ones are dropped.
        gamed = difficulty.gamed
        preference_gamed = np.asarray(gamed.preference, dtype=float)
        keep = ~np.isnan(preference_gamed)
        gamed_features = np.column_stack(
            [
                np.tanh(np.asarray(gamed.std_delta_len, dtype=float)[keep]),
                np.asarray(gamed.instruction_difficulty, dtype=float)[keep],
                np.zeros(int(keep.sum())),
            ]
        )
        train_features = np.vstack([gamed_features, train_features])
        train_target = np.concatenate([preference_gamed[keep], train_target])
        row_weight = np.concatenate(
            [np.full(int(keep.sum()), gamed.regularize_to_baseline_lambda / 2), row_weight]
        )
    coef, best_C = cross_validated_fit(train_features, train_target, row_weight)

    counterfactual = np.column_stack([np.zeros_like(gamma), gamma, np.ones_like(gamma)])
    predicted = predict(counterfactual, coef)
    sem = (
        float(np.std(predicted, ddof=1) / math.sqrt(predicted.size)) if predicted.size > 1 else 0.0
    )
    return LengthControlledResult(
        length_controlled_winrate=float(predicted.mean() * 100),
        lc_standard_error=sem * 100,
        weights=GLMWeights(
            length=float(coef[0]), difficulty=float(coef[1]), model=float(coef[2]), C=best_C
        ),
    )
