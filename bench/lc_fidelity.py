"""How closely simfarm's offline LC win rate ranks like the published AlpacaEval 2.0 LC.

Replays the real GPT-4-turbo annotations in ``../shared/data/alpaca_eval/annotations`` (every
system there, judged against ``gpt4_1106_preview``), estimates instruction difficulty from
them with each offline method, fits the per-system GLM (no gamed-baseline regularisation:
those annotations are only on the hub) and compares the LC win rates with the published
``length_controlled_winrate`` of the same systems in
``leaderboard_weighted_alpaca_eval_gpt4_turbo.csv``: Spearman and mean absolute error (points).

``--C`` adds the notebook joint fit at other L2 strengths. Last line: ``ratio=<Spearman of the
default method>``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from simfarm.evaluation import difficulty as difficulty_module
from simfarm.evaluation.difficulty import estimate_difficulty
from simfarm.evaluation.io import group_by_model, load_annotation_file
from simfarm.evaluation.length_controlled import length_controlled_winrate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpaca_eval"


def published_lc() -> dict[str, float]:
    path = DATA / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"
    with path.open(encoding="utf-8") as handle:
        return {row[""]: float(row["length_controlled_winrate"]) for row in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=float, nargs="*", default=[0.1, 10.0])
    args = parser.parse_args()
    files = sorted((DATA / "annotations").glob("*.json"))
    if not files:
        sys.exit(f"no annotations in {DATA / 'annotations'}")
    by_model = group_by_model([load_annotation_file(f) for f in files])
    published = published_lc()
    systems = [m for m in by_model if m in published]
    print(f"{len(systems)} systems with published LC: {', '.join(systems)}")
    candidates: list[tuple[str, str, float | None]] = [
        ("logit_mean", "logit_mean", None),
        ("joint_glm (previous default)", "joint_glm", None),
        ("notebook_joint C=1 (default)", "notebook_joint", None),
    ]
    candidates += [(f"notebook_joint C={c:g}", "notebook_joint", c) for c in args.C]
    default_rho = float("nan")
    warnings.filterwarnings("ignore")
    for label, method, C in candidates:
        saved = difficulty_module.NOTEBOOK_JOINT_C
        if C is not None:
            difficulty_module.NOTEBOOK_JOINT_C = C
        try:
            difficulty = estimate_difficulty(by_model, method)  # type: ignore[arg-type]
        finally:
            difficulty_module.NOTEBOOK_JOINT_C = saved
        ours = {
            m: length_controlled_winrate(by_model[m], difficulty).length_controlled_winrate
            for m in systems
        }
        x = np.array([ours[m] for m in systems])
        y = np.array([published[m] for m in systems])
        rho = float(spearmanr(x, y).statistic)
        mae = float(np.mean(np.abs(x - y)))
        bias = float(np.mean(x - y))
        print(f"{label:32s} Spearman {rho:.4f}  MAE {mae:.2f}  mean(ours - published) {bias:+.2f}")
        print("    " + "  ".join(f"{m}: {ours[m]:.2f}/{published[m]:.2f}" for m in systems))
        if label.endswith("(default)"):
            default_rho = rho
    print(f"ratio={default_rho:.4f}")


if __name__ == "__main__":
    main()
