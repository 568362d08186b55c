"""The length-controlled GLM: published ranking, recovery on synthetic data, stored difficulty."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from simfarm.errors import ConfigError
from simfarm.evaluation.difficulty import (
    DifficultyEntry,
    InstructionDifficulty,
    estimate_difficulty,
    load_difficulty,
    save_difficulty,
)
from simfarm.evaluation.io import group_by_model, load_annotation_file
from simfarm.evaluation.leaderboard import build_leaderboard
from simfarm.evaluation.length_controlled import length_controlled_winrate
from simfarm.types import PairwiseAnnotation

from ._shared import annotation_files, published_rows, replayable_models


@pytest.fixture(scope="module")
def shared_annotations() -> dict[str, list[PairwiseAnnotation]]:
    files = annotation_files()
    assert files, "no shared annotations"
    return group_by_model([load_annotation_file(path) for path in files.values()])


@pytest.mark.parametrize("method", ["joint_glm", "logit_mean"])
def test_lc_ranks_models_like_published_lc(
    shared_annotations: dict[str, list[PairwiseAnnotation]], method: str
) -> None:
    leaderboard, difficulty = build_leaderboard(shared_annotations, difficulty_method=method)
    assert difficulty is not None and difficulty.method == method
    published = published_rows()
    models = replayable_models()
    ours = {r.generator_2: r.length_controlled_winrate for r in leaderboard.rows}
    theirs = {m: float(published[m]["length_controlled_winrate"]) for m in models}
    assert sorted(models, key=lambda m: -ours[m]) == sorted(models, key=lambda m: -theirs[m])
    # The published LC flips two models relative to the raw win rate; ours must as well.
    raw = {r.generator_2: r.win_rate for r in leaderboard.rows}
    assert raw["OpenHermes-2.5-Mistral-7B"] > raw["gpt-3.5-turbo-1106"]
    assert ours["OpenHermes-2.5-Mistral-7B"] < ours["gpt-3.5-turbo-1106"]


def _synthetic(
    theta: float, phi: float, n: int = 800, seed: int = 0
) -> tuple[list[PairwiseAnnotation], float, np.ndarray]:
    """Annotations whose P(model wins) follows the GLM: them, the true LC (%) and γ."""
    rng = np.random.default_rng(seed)
    gamma = rng.normal(0.0, 1.0, n)
    len_1 = rng.integers(200, 2000, n)
    len_2 = (len_1 * rng.uniform(0.8, 3.0, n)).astype(int)  # the model is mostly longer
    delta = (len_1 - len_2) / np.std(len_1 - len_2, ddof=1)
    p = 1 / (1 + np.exp(-(theta + phi * np.tanh(delta) + gamma)))
    annotations = [
        PairwiseAnnotation(
            instruction=f"instruction {i}",
            output_1="r" * int(len_1[i]),
            output_2="m" * int(len_2[i]),
            generator_1="reference",
            generator_2="model",
            preference=1.0 + float(p[i]),
            annotator="synthetic",
        )
        for i in range(n)
    ]
    truth = float(np.mean(1 / (1 + np.exp(-(theta + gamma)))) * 100)
    return annotations, truth, gamma


def test_lc_recovers_counterfactual_win_rate_on_synthetic_data() -> None:
    annotations, truth, gamma = _synthetic(theta=-1.0, phi=-1.5)
    difficulty = InstructionDifficulty(
        method="true",
        models=["model"],
        entries=[
            DifficultyEntry(instruction=a.instruction, instruction_difficulty=float(g), n_models=1)
            for a, g in zip(annotations, gamma, strict=True)
        ],
    )
    raw = 100 * np.mean([a.preference - 1 for a in annotations])
    result = length_controlled_winrate(annotations, difficulty)
    assert raw - truth > 5  # the model's length inflates its raw win rate here
    assert result.length_controlled_winrate == pytest.approx(truth, abs=1.0)
    assert result.weights.length == pytest.approx(-1.5, abs=0.2)
    assert result.lc_standard_error > 0


def test_reference_against_itself_is_fifty(
    shared_annotations: dict[str, list[PairwiseAnnotation]],
) -> None:
    some = shared_annotations["claude-2"][:50]
    itself = [
        a.model_copy(
            update={"output_2": a.output_1, "generator_2": a.generator_1, "preference": 1.5}
        )
        for a in some
    ]
    difficulty = estimate_difficulty({"claude-2": some})
    result = length_controlled_winrate(itself, difficulty)
    assert result.length_controlled_winrate == 50.0


def test_stored_difficulty_gives_the_same_lc(
    shared_annotations: dict[str, list[PairwiseAnnotation]], tmp_path: Path
) -> None:
    difficulty = estimate_difficulty(shared_annotations)
    path = tmp_path / "instruction_difficulty.csv"
    save_difficulty(difficulty, path)
    reloaded = load_difficulty(path)
    assert reloaded.models == difficulty.models
    assert reloaded.lookup() == difficulty.lookup()
    model = shared_annotations["gemma-7b-it"]
    assert length_controlled_winrate(model, reloaded) == length_controlled_winrate(
        model, difficulty
    )


def test_missing_difficulty_is_a_clear_error(
    shared_annotations: dict[str, list[PairwiseAnnotation]],
) -> None:
    difficulty = estimate_difficulty({"alpaca-7b": shared_annotations["alpaca-7b"][:10]})
    with pytest.raises(ConfigError, match="no difficulty value"):
        length_controlled_winrate(shared_annotations["claude-2"], difficulty)


def test_difficulty_values_are_finite_and_centred(
    shared_annotations: dict[str, list[PairwiseAnnotation]],
) -> None:
    difficulty = estimate_difficulty(shared_annotations, "joint_glm")
    values = [e.instruction_difficulty for e in difficulty.entries]
    assert len(values) == len({(a.instruction, a.input) for a in shared_annotations["claude-2"]})
    assert all(math.isfinite(v) for v in values)
    assert abs(np.mean(values)) < 1e-9
    assert set(difficulty.models) == set(shared_annotations)


def test_notebook_joint_difficulty_lands_near_published_lc(
    shared_annotations: dict[str, list[PairwiseAnnotation]],
) -> None:
    """alpaca_eval's joint fit (the default: L1, C chosen by its cross-validation) brings LC
    within ~2.5 points of the published values on the shared systems (the centred joint GLM
    is 4 points below), and still flips OpenHermes below gpt-3.5-turbo as the published LC
    does. A guard against a much worse LC, not a target: 6 systems, see bench/lc_fidelity.py."""
    difficulty = estimate_difficulty(shared_annotations)
    assert difficulty.method == "notebook_joint"
    first = shared_annotations["claude-2"][0]
    assert difficulty.lookup()[(first.instruction, first.input)] == 0.0  # reference level
    published = published_rows()
    models = replayable_models()
    ours = {m: length_controlled_winrate(shared_annotations[m], difficulty) for m in models}
    errors = [
        abs(ours[m].length_controlled_winrate - float(published[m]["length_controlled_winrate"]))
        for m in models
    ]
    assert float(np.mean(errors)) < 3.0
    assert (
        ours["OpenHermes-2.5-Mistral-7B"].length_controlled_winrate
        < ours["gpt-3.5-turbo-1106"].length_controlled_winrate
    )


@pytest.mark.parametrize("method", ["notebook_joint", "joint_glm", "logit_mean"])
def test_instruction_with_only_failed_annotations_gets_the_prior(
    shared_annotations: dict[str, list[PairwiseAnnotation]], method: str
) -> None:
    """A failed annotation still belongs to the benchmark: its instruction needs a value even
    when no model has a verdict on it (else the LC cannot be computed at all)."""
    model = [a.model_copy() for a in shared_annotations["claude-2"][:60]]
    model[5] = model[5].model_copy(update={"preference": None})
    difficulty = estimate_difficulty({"claude-2": model}, method)  # type: ignore[arg-type]
    entry = next(e for e in difficulty.entries if e.instruction == model[5].instruction)
    assert (entry.instruction_difficulty, entry.n_models) == (0.0, 0)
    assert math.isfinite(length_controlled_winrate(model, difficulty).length_controlled_winrate)
