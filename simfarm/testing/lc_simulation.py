"""Annotations simulated from alpaca_eval's length-controlled GLM with known parameters.

Used to check the offline instruction-difficulty estimate where the truth is known (tests
and ``bench/lc_fidelity.py``): every model ``m`` is judged against one reference on the same
instructions, and the judge's probability that ``m`` wins on instruction ``x`` follows the
notebook's joint formula

    logit P = θ_m + φ_m · tanh(Δlen / std_m(Δlen)) + γ_x

with ``Δlen = len(reference output) - len(model output)`` (alpaca_eval's sign), ``θ_m`` the
model's strength, ``φ_m`` its length slope (negative: the judge likes the longer output) and
``γ_x`` the instruction's difficulty (higher: easier to beat the reference). The preference
written is ``1 + σ(logit + ε)``, ``ε ~ N(0, noise)``: a weighted judge's soft verdict that is
not exactly the model's probability; with ``discrete=True`` it is a win or a loss drawn
with that probability instead (a judge without logprobs). The true LC win rate of ``m`` is
``mean_x σ(θ_m + γ_x)``.
"""

from __future__ import annotations

import numpy as np

from simfarm.types import PairwiseAnnotation, Record

REFERENCE = "simulated_reference"


class SimulatedTruth(Record):
    difficulty: list[float]
    """γ_x, in the order of the instructions (``instruction {i}``)."""
    strength: dict[str, float]
    """θ_m per model."""
    length_slope: dict[str, float]
    """φ_m per model."""
    lc_winrate: dict[str, float]
    """The true LC win rate (percent): ``100 · mean_x σ(θ_m + γ_x)``."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def simulate_annotations(
    n_models: int = 12,
    n_instructions: int = 60,
    noise: float = 0.5,
    seed: int = 0,
    discrete: bool = False,
) -> tuple[dict[str, list[PairwiseAnnotation]], SimulatedTruth]:
    """Soft annotations of ``n_models`` against one reference, and the parameters behind them."""
    rng = np.random.default_rng(seed)
    gamma = rng.normal(0.0, 1.0, n_instructions)
    reference_len = rng.integers(200, 2000, n_instructions)
    instructions = [f"instruction {i}" for i in range(n_instructions)]
    by_model: dict[str, list[PairwiseAnnotation]] = {}
    strength: dict[str, float] = {}
    slope: dict[str, float] = {}
    lc: dict[str, float] = {}
    for m in range(n_models):
        name = f"model_{m:02d}"
        theta = float(rng.normal(-1.0, 1.0))
        phi = float(rng.uniform(-1.5, -0.2))
        verbosity = float(rng.uniform(-0.5, 0.8))
        model_len = np.maximum(
            1, (reference_len * np.exp(rng.normal(verbosity, 0.5, n_instructions))).astype(int)
        )
        delta = (reference_len - model_len).astype(float)
        logit = theta + phi * np.tanh(delta / np.std(delta, ddof=1)) + gamma
        p = _sigmoid(logit + rng.normal(0.0, noise, n_instructions))
        if discrete:
            p = (rng.uniform(size=n_instructions) < p).astype(float)
        by_model[name] = [
            PairwiseAnnotation(
                instruction=instructions[i],
                output_1="r" * int(reference_len[i]),
                generator_1=REFERENCE,
                output_2="m" * int(model_len[i]),
                generator_2=name,
                preference=1.0 + float(p[i]),
                annotator="simulated",
            )
            for i in range(n_instructions)
        ]
        strength[name], slope[name] = theta, phi
        lc[name] = float(100 * _sigmoid(theta + gamma).mean())
    truth = SimulatedTruth(
        difficulty=[float(g) for g in gamma], strength=strength, length_slope=slope, lc_winrate=lc
    )
    return by_model, truth
