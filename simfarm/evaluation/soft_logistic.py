"""alpaca_eval's ``fit_LogisticRegressionCV`` on soft labels, written out with scikit-learn.

alpaca_eval fits every GLM of its length-controlled win rate (the per-model one and the joint
instruction-difficulty fit of its ``notebooks/instruction_difficulty.ipynb``) with one helper,
``alpaca_eval.metrics.glm_winrate.fit_LogisticRegressionCV(..., is_ytrue_proba=True,
n_splits=5)``: no intercept, L1 penalty, liblinear, ``random_state=123``, soft labels
``p`` entered as two weighted rows (label 1 with weight ``p``, label 0 with weight ``1 - p``),
and the inverse penalty ``C`` chosen among ``np.logspace(-4, 4, 10)`` (``LogisticRegressionCV``'s
default ``Cs=10``) by 5-fold ``GroupKFold`` cross-validation (both copies of a row in the same
fold) on the continuous log-loss, then a refit on all rows at the best ``C``.

The loop is written out with ``LogisticRegression`` so the scorer needs no global
metadata-routing switch; it picks the same ``C`` and the same coefficients as alpaca_eval's
helper (tests/evaluation/test_difficulty_cv.py checks both against it). Features may be a dense
array or a scipy sparse matrix (the joint fit has one column per instruction).

liblinear seeds a process-global C random generator, so fits must run one after another
(threads would interleave its draws); processes would be fine.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np

N_SPLITS = 5
CS = np.logspace(-4, 4, 10)
RANDOM_STATE = 123
_EPS = 1e-15


@functools.cache
def l1_kwargs() -> dict[str, Any]:
    """An L1 penalty, spelled as the installed scikit-learn wants it (``penalty`` is
    deprecated from 1.8 on in favour of ``l1_ratio``)."""
    from sklearn.linear_model import LogisticRegression

    default = inspect.signature(LogisticRegression).parameters["penalty"].default
    return {"l1_ratio": 1.0} if default == "deprecated" else {"penalty": "l1"}


def fit_l1(features: Any, labels: np.ndarray, weights: np.ndarray, C: float) -> np.ndarray:
    """Coefficients of alpaca_eval's L1 liblinear fit without intercept at this ``C``."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        C=C,
        solver="liblinear",
        fit_intercept=False,
        random_state=RANDOM_STATE,
        dual=False,
        **l1_kwargs(),
    )
    # Inputs are built here, finite and well-typed: skip the per-call re-validation, which
    # otherwise costs more than the 51 small fits of a per-model GLM themselves.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        model.fit(features, labels, sample_weight=weights)
    return np.asarray(model.coef_[0], dtype=float)


def predict(features: Any, coef: np.ndarray) -> np.ndarray:
    """P(label 1) of a fitted model without intercept: the logistic of ``features @ coef``."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(features @ coef, dtype=float)))


def continuous_log_loss(target: np.ndarray, predicted: np.ndarray, weight: np.ndarray) -> float:
    """alpaca_eval's ``logloss``: the row weights multiply each term, then a plain mean."""
    predicted = np.clip(predicted, _EPS, 1 - _EPS)
    terms = target * np.log(predicted) + (1 - target) * np.log(1 - predicted)
    return float(-np.mean(terms * weight))


def _one_class(labels: np.ndarray, weights: np.ndarray) -> bool:
    """Whether the rows that carry weight all have the same label."""
    return np.unique(labels[weights > 0]).size < 2


def _stack(features: Any) -> Any:
    from scipy import sparse

    if sparse.issparse(features):
        return sparse.vstack([features, features]).tocsr()
    return np.vstack([features, features])


def cross_validated_fit(
    features: Any, target: np.ndarray, row_weight: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """(coefficients, chosen C) of alpaca_eval's ``fit_LogisticRegressionCV`` on soft labels
    ``target`` in [0, 1]; ``row_weight`` is its ``sample_weight`` (None: all 1)."""
    from sklearn.model_selection import GroupKFold

    n = target.size
    if row_weight is None:
        row_weight = np.ones(n)
    dup_features = _stack(features)
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    dup_row_weight = np.concatenate([row_weight, row_weight])
    weights = np.concatenate([target, 1.0 - target]) * dup_row_weight
    groups = np.concatenate([np.arange(n), np.arange(n)])
    soft = np.concatenate([target, target])  # each copy is scored against the soft label
    n_splits = min(N_SPLITS, n)
    scores = np.zeros(len(CS))
    if n_splits >= 2:
        for train, test in GroupKFold(n_splits=n_splits).split(labels, labels, groups):
            if _one_class(labels[train], weights[train]):
                continue  # nothing to separate in this fold (liblinear would only complain)
            for i, C in enumerate(CS):
                coef = fit_l1(dup_features[train], labels[train], weights[train], C)
                scores[i] -= continuous_log_loss(
                    soft[test], predict(dup_features[test], coef), dup_row_weight[test]
                )
    best_C = float(CS[int(np.argmax(scores))]) if n_splits >= 2 else 1.0
    return fit_l1(dup_features, labels, weights, best_C), best_C
