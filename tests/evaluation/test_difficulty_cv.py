"""The default offline difficulty fit chooses its penalty as alpaca_eval does (issue 18): the
notebook's joint model, L1, ``C`` picked by alpaca_eval's own cross-validated helper on the
annotations at hand; the choice is deterministic, recorded, and recovers known difficulty on
annotations simulated from alpaca_eval's formula."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simfarm.evaluation.difficulty import (
    InstructionDifficulty,
    JointVariant,
    estimate_difficulty,
    load_difficulty,
    save_difficulty,
)
from simfarm.evaluation.leaderboard import build_leaderboard, leaderboard_markdown
from simfarm.evaluation.length_controlled import length_controlled_winrate
from simfarm.testing.lc_simulation import REFERENCE, simulate_annotations
from simfarm.types import PairwiseAnnotation
from tests.evaluation.test_published_lc import _alpaca_eval_glm

pd = pytest.importorskip("pandas")

# Two simulated benchmarks (soft and discrete verdicts) on which alpaca_eval's cross-validation
# picks different C values (a fixed C cannot match both).
SETTINGS = [
    {"n_models": 12, "n_instructions": 60, "noise": 0.5, "seed": 0},
    {"n_models": 5, "n_instructions": 40, "noise": 0.0, "seed": 1, "discrete": True},
]


Simulated = tuple[dict[str, list[PairwiseAnnotation]], InstructionDifficulty]


@pytest.fixture(scope="module")
def estimated() -> list[Simulated]:
    """Each setting's annotations and the default estimate from them (fitted once)."""
    out = []
    for setting in SETTINGS:
        by_model, _ = simulate_annotations(**setting)
        out.append((by_model, estimate_difficulty(by_model)))
    return out


def _notebook_fit(by_model: dict[str, list[PairwiseAnnotation]]) -> tuple[float, np.ndarray]:
    """(C, instruction effects) of the notebook's own code path: its patsy formula on a data
    frame built as its ``make_data`` does (the reference's ties included, without the 1e-4
    jitter), fitted by alpaca_eval's
    ``fit_LogisticRegressionCV(..., is_ytrue_proba=True, n_splits=5)``."""
    import sklearn
    from patsy import dmatrix

    glm = _alpaca_eval_glm()
    keys = list(dict.fromkeys(a.instruction for anns in by_model.values() for a in anns))
    index = {k: i for i, k in enumerate(keys)}
    df = pd.DataFrame(
        [
            {
                "generator_2": a.generator_2,
                "index": index[a.instruction],
                "delta_len": float(len(a.output_1) - len(a.output_2)),
                "preference": float(a.preference) - 1.0,  # type: ignore[arg-type]
            }
            for anns in by_model.values()
            for a in anns
        ]
    )
    df["rand_delta_len_std_only"] = df["delta_len"] / df.groupby("generator_2")[
        "delta_len"
    ].transform("std")
    # The baseline against itself (the notebook's leaderboard includes it): a tie on every
    # instruction; its Δlen feature is 0 here where the notebook has jitter / std(jitter).
    ties = pd.DataFrame(
        {
            "generator_2": REFERENCE,
            "index": range(len(keys)),
            "rand_delta_len_std_only": 0.0,
            "preference": 0.5,
        }
    )
    df = pd.concat([df, ties], ignore_index=True)
    df["not_gamed_baseline"] = True
    ordered_models = [REFERENCE, *by_model]  # noqa: F841 (the formula reads it)
    formula = (
        "C(generator_2, levels=ordered_models):np.tanh(rand_delta_len_std_only) "
        "+ C(generator_2, levels=ordered_models) + C(index) "
        "+ not_gamed_baseline.astype(float) - 1"
    )
    design = dmatrix(formula, df, return_type="dataframe")
    design["preference"] = df["preference"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model: Any = glm.fit_LogisticRegressionCV(
                design, "preference", is_ytrue_proba=True, n_splits=5
            )
    finally:
        sklearn.set_config(enable_metadata_routing=False)
    coef = pd.Series(model.coef_[0], index=model.feature_names_in_)
    effects = np.zeros(len(keys))
    for name, value in coef.items():
        if str(name).startswith("C(index)"):
            effects[int(str(name).split("[T.")[1].rstrip("]"))] = value
    return float(model.C_[0]), effects


@pytest.mark.parametrize("which", range(len(SETTINGS)))
def test_chosen_C_and_difficulty_are_alpaca_eval_helpers(
    estimated: list[Simulated], which: int
) -> None:
    by_model, difficulty = estimated[which]
    oracle_C, oracle_effects = _notebook_fit(by_model)
    assert pytest.approx(oracle_C, rel=1e-12) == difficulty.C
    ours = np.array([e.instruction_difficulty for e in difficulty.entries])
    np.testing.assert_allclose(ours, oracle_effects, atol=2e-3)


def test_the_two_settings_need_different_C(estimated: list[Simulated]) -> None:
    """Guards the test above: were both choices equal, a hard-coded C could pass it."""
    assert len({difficulty.C for _, difficulty in estimated}) == 2


def test_cv_choice_is_deterministic(estimated: list[Simulated]) -> None:
    by_model, first = estimated[1]
    assert estimate_difficulty(by_model) == first


def test_difficulty_from_simulated_annotations_tracks_the_truth(
    estimated: list[Simulated],
) -> None:
    """Annotations drawn from alpaca_eval's formula with known γ_x, θ_m and length slopes:
    the estimated difficulty correlates with γ_x and the LC win rates land near the true
    ones (the slopes made the raw win rates far off)."""
    _, truth = simulate_annotations(**SETTINGS[0])
    by_model, difficulty = estimated[0]
    ours = [e.instruction_difficulty for e in difficulty.entries]
    assert np.corrcoef(ours, truth.difficulty)[0, 1] > 0.95
    errors = [
        abs(
            length_controlled_winrate(anns, difficulty).length_controlled_winrate
            - truth.lc_winrate[m]
        )
        for m, anns in by_model.items()
    ]
    assert float(np.mean(errors)) < 2.0


def test_chosen_C_is_recorded_in_sidecar_and_leaderboard(
    estimated: list[Simulated], tmp_path: Path
) -> None:
    by_model, difficulty = estimated[1]
    assert difficulty.C is not None and difficulty.fit is not None
    assert f"C={difficulty.C:.4g} chosen by 5-fold cross-validation" in difficulty.fit
    path = tmp_path / "instruction_difficulty.csv"
    save_difficulty(difficulty, path)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert (meta["C"], meta["fit"]) == (difficulty.C, difficulty.fit)
    reloaded = load_difficulty(path)
    assert (reloaded.C, reloaded.fit) == (difficulty.C, difficulty.fit)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leaderboard, _ = build_leaderboard(by_model)
    assert leaderboard.difficulty_fit == difficulty.fit
    assert difficulty.fit in leaderboard_markdown(leaderboard)


def test_fixed_l2_variant_stays_selectable(estimated: list[Simulated]) -> None:
    by_model, default = estimated[1]
    l2 = estimate_difficulty(by_model, "notebook_joint_l2")
    assert (l2.method, l2.C) == ("notebook_joint_l2", 1.0)
    assert l2.fit == "L2, C=1 (fixed); reference's own ties included"
    previous = estimate_difficulty(
        by_model, "notebook_joint_l2", variant=JointVariant(reference_rows=False)
    )
    assert previous.fit is not None and "'reference_rows': False" in previous.fit
    assert previous.entries != l2.entries
    fixed = estimate_difficulty(by_model, C=0.5)
    assert (fixed.C, fixed.fit) == (0.5, "L1, C=0.5 (fixed); reference's own ties included")
    assert fixed.entries != default.entries
