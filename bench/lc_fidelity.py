"""How closely simfarm's offline LC win rate ranks like the published AlpacaEval 2.0 LC.

Replays the real GPT-4-turbo annotations in ``../shared/data/alpaca_eval/annotations`` (every
system there, judged against ``gpt4_1106_preview``), estimates instruction difficulty from
them with each offline method and variant, fits the per-system GLM (no gamed-baseline
regularisation: those annotations are only on the hub) and compares the LC win rates with the
published ``length_controlled_winrate`` of the same systems in
``leaderboard_weighted_alpaca_eval_gpt4_turbo.csv``: Spearman and mean absolute error (points).

Rows: the default ``notebook_joint`` (the notebook's joint model with the reference's own
ties, alpaca_eval's L1 fit with ``C`` chosen by its cross-validation on these annotations, the
chosen ``C`` printed), the same without the ties, at fixed ``C`` (``--C``, from alpaca_eval's
grid), the earlier fixed-L2 fit (simfarm's previous default: L2, C=1, no ties), the variants
of :class:`JointVariant` (centred effects, discrete labels, rows and ``Δlen`` scale as the
per-model GLM builds them), and the older methods.

Second table, the criterion that may decide between variants (it does not use the published
LC): annotations simulated from alpaca_eval's own formula with known difficulty, strengths and
length slopes (:mod:`simfarm.testing.lc_simulation`; 7 models x 400 instructions, soft
verdicts, ``--seeds`` seeds): Pearson of the estimated difficulty with the true one, and MAE
of the LC against the true LC (points), averaged over seeds.

The published-LC table is a WEAK test: only 6 systems have both annotations here and a
published LC, so Spearman takes few values (one adjacent swap gives 0.943) and the MAE is a
mean over 6 numbers. No choice in simfarm is made on these figures (that would be fitting on
the test): they are reported so a change that makes the LC much worse is seen.

Third table (``--ae1``): the same on AlpacaEval 1, GPT-4's verdicts of 39 systems against
``text_davinci_003`` (``annotations_alpaca_eval_gpt4/``), against the ``length_controlled_winrate``
alpaca_eval ships in its own ``leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv``
(36 of the 39 have one). More systems, so Spearman means more; but those published values were
not all computed one way (some equal ours to 0.05 points, e.g. gpt4 and alpaca-7b, others are
10-20 points lower), so the MAE there mostly measures that, not our estimate.

Last line: ``ratio=<Spearman of the default method>``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from simfarm.evaluation.difficulty import (
    DifficultyMethod,
    InstructionDifficulty,
    JointVariant,
    estimate_difficulty,
)
from simfarm.evaluation.io import group_by_model, load_annotation_file
from simfarm.evaluation.length_controlled import length_controlled_winrate
from simfarm.evaluation.soft_logistic import CS
from simfarm.testing.lc_simulation import simulate_annotations
from simfarm.types import PairwiseAnnotation

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpaca_eval"
DEFAULT = "notebook_joint (default: L1, CV C, ties)"


def published_lc() -> dict[str, float]:
    path = DATA / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"
    with path.open(encoding="utf-8") as handle:
        return {row[""]: float(row["length_controlled_winrate"]) for row in csv.DictReader(handle)}


def candidates(
    by_model: dict[str, list[PairwiseAnnotation]], fixed_Cs: list[float]
) -> list[tuple[str, InstructionDifficulty]]:
    no_ties = JointVariant(reference_rows=False)
    l2: DifficultyMethod = "notebook_joint_l2"
    rows: list[tuple[str, InstructionDifficulty]] = [
        (DEFAULT, estimate_difficulty(by_model, "notebook_joint")),
        ("notebook_joint CV, no reference ties", estimate_difficulty(by_model, variant=no_ties)),
    ]
    rows += [
        (f"notebook_joint L1 C={c:.3g} fixed", estimate_difficulty(by_model, C=c)) for c in fixed_Cs
    ]
    rows += [
        (
            "notebook_joint_l2 C=1, no ties (previous default)",
            estimate_difficulty(by_model, l2, variant=no_ties),
        ),
        ("notebook_joint_l2 C=1", estimate_difficulty(by_model, l2)),
        ("notebook_joint_l2 C=0.1", estimate_difficulty(by_model, l2, C=0.1)),
        ("notebook_joint_l2 C=10", estimate_difficulty(by_model, l2, C=10.0)),
    ]
    for name, variant in (
        ("+ centred effects", JointVariant(centre=True)),
        ("+ discrete labels", JointVariant(discrete=True)),
        ("+ per-model GLM's rows", JointVariant(glm_rows=True)),
    ):
        rows.append((f"notebook_joint CV {name}", estimate_difficulty(by_model, variant=variant)))
        rows.append(
            (f"notebook_joint_l2 C=1 {name}", estimate_difficulty(by_model, l2, variant=variant))
        )
    rows += [
        ("joint_glm", estimate_difficulty(by_model, "joint_glm")),
        ("logit_mean", estimate_difficulty(by_model, "logit_mean")),
    ]
    return rows


def simulated_table(fixed_Cs: list[float], seeds: int) -> None:
    """Every candidate on simulated annotations where the truth is known."""
    results: dict[str, list[tuple[float, float]]] = {}
    chosen: dict[str, list[str]] = {}
    for seed in range(seeds):
        by_model, truth = simulate_annotations(
            n_models=7, n_instructions=400, noise=0.5, seed=100 + seed
        )
        for label, difficulty in candidates(by_model, fixed_Cs):
            values = [e.instruction_difficulty for e in difficulty.entries]
            r = float(np.corrcoef(values, truth.difficulty)[0, 1])
            lc = {
                m: length_controlled_winrate(anns, difficulty).length_controlled_winrate
                for m, anns in by_model.items()
            }
            mae = float(np.mean([abs(lc[m] - truth.lc_winrate[m]) for m in by_model]))
            results.setdefault(label, []).append((r, mae))
            chosen.setdefault(label, []).append(
                "-" if difficulty.C is None else f"{difficulty.C:.3g}"
            )
    print(f"simulated (7 models x 400 instructions, {seeds} seeds; the deciding criterion):")
    for label, rows in results.items():
        r, mae = np.mean(rows, axis=0)  # NaN Pearson: every effect shrunk to 0
        print(
            f"{label:52s} Pearson(difficulty, truth) {r:.4f}  LC MAE vs truth {mae:.2f}  "
            f"C {','.join(chosen[label])}"
        )


def published_ae1_lc() -> dict[str, float]:
    """AlpacaEval 1's LC as alpaca_eval's package ships it (systems without one left out)."""
    from importlib.util import find_spec

    spec = find_spec("alpaca_eval")  # located, not imported (it needs pkg_resources)
    if spec is None or spec.origin is None:
        sys.exit("--ae1 needs alpaca_eval installed (pip install alpaca-eval)")
    board = (
        Path(spec.origin).parent / "leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv"
    )
    with board.open(encoding="utf-8") as handle:
        return {
            row[""]: float(row["length_controlled_winrate"])
            for row in csv.DictReader(handle)
            if row["length_controlled_winrate"]
        }


def published_table(
    title: str,
    by_model: dict[str, list[PairwiseAnnotation]],
    published: dict[str, float],
    fixed_Cs: list[float],
    show_values: bool = True,
) -> float:
    """Spearman/MAE of every candidate's LC against ``published``; the default's Spearman."""
    systems = [m for m in by_model if m in published]
    print(f"{title}: {len(systems)} systems with a published LC")
    default_rho = float("nan")
    for label, difficulty in candidates(by_model, fixed_Cs):
        ours = {
            m: length_controlled_winrate(by_model[m], difficulty).length_controlled_winrate
            for m in systems
        }
        x = np.array([ours[m] for m in systems])
        y = np.array([published[m] for m in systems])
        rho = float(spearmanr(x, y).statistic)
        mae = float(np.mean(np.abs(x - y)))
        bias = float(np.mean(x - y))
        C = "-" if difficulty.C is None else f"{difficulty.C:.4g}"
        print(
            f"{label:52s} C {C:>7s}  Spearman {rho:.4f}  MAE {mae:.2f}  "
            f"mean(ours - published) {bias:+.2f}"
        )
        if show_values:
            print("    " + "  ".join(f"{m}: {ours[m]:.2f}/{published[m]:.2f}" for m in systems))
        if label == DEFAULT:
            default_rho = rho
    return default_rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--C", type=float, nargs="*", default=[float(c) for c in CS[3:7]], help="fixed L1 C"
    )
    parser.add_argument("--seeds", type=int, default=5, help="simulated benchmarks (0: none)")
    parser.add_argument(
        "--ae1", action="store_true", help="also AlpacaEval 1's 39 GPT-4-judged systems"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.seeds:
        simulated_table(args.C, args.seeds)
    files = sorted((DATA / "annotations").glob("*.json"))
    if not files:
        sys.exit(f"no annotations in {DATA / 'annotations'}")
    by_model = group_by_model([load_annotation_file(f) for f in files])
    default_rho = published_table(
        "AlpacaEval 2.0 (GPT-4-turbo verdicts, a weak test)", by_model, published_lc(), args.C
    )
    if args.ae1:
        ae1_files = sorted((DATA / "annotations_alpaca_eval_gpt4").glob("*.json"))
        ae1 = group_by_model([load_annotation_file(f) for f in ae1_files])
        published_table(
            "AlpacaEval 1 (GPT-4 verdicts vs text_davinci_003; published LC computed unevenly)",
            ae1,
            published_ae1_lc(),
            args.C,
            show_values=False,
        )
    print(f"ratio={default_rho:.4f}")


if __name__ == "__main__":
    main()
