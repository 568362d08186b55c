"""The experiment's figures: win rate ± SE per method (simfarm.evaluation's leaderboard
plot), training loss per method, and PPO's reward and KL curves, all from files the stages
wrote (``leaderboard.json``, each recipe run's ``metrics.jsonl``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from simfarm.evaluation.leaderboard import Leaderboard
from simfarm.evaluation.plots import _pyplot, _save, plot_leaderboard

Series = dict[str, list[tuple[float, float]]]
"""metric name -> [(step, value), ...]"""

PPO_REWARD_KEYS = ("mean_reward", "mean_score")
"""PPO's reward (score minus KL penalty) and raw score, when its metrics carry them."""
PPO_KL_KEYS = ("kl",)
"""PPO's KL to the reference policy (not ``approx_kl``, the step's policy change)."""


def _pick(series: Series, keys: tuple[str, ...]) -> Series:
    """The preferred metrics when present, else every match (a recipe naming them otherwise)."""
    chosen = {k: v for k, v in series.items() if k in keys}
    return chosen or series


def read_metrics(path: Path) -> list[dict[str, object]]:
    """The lines of a ``metrics.jsonl`` (empty when the file is missing)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            value = json.loads(line)
            if isinstance(value, dict):
                rows.append(value)
    return rows


def metric_series(rows: list[dict[str, object]], wanted: str) -> Series:
    """Every numeric metric whose name contains ``wanted`` (case-insensitive), by step."""
    series: Series = {}
    for index, row in enumerate(rows):
        step = row.get("step", index)
        if not isinstance(step, int | float):
            continue
        for key, value in row.items():
            if key == "step" or wanted not in key.lower():
                continue
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and not math.isnan(float(value)):  # type: ignore[arg-type]
                series.setdefault(key, []).append((float(step), float(value)))  # type: ignore[arg-type]
    return series


def plot_curves(
    curves: Mapping[str, Series], path: Path, *, title: str, y_label: str
) -> Path | None:
    """One line per (run, metric); None when there is nothing to draw."""
    lines = [(run, metric, points) for run, s in curves.items() for metric, points in s.items()]
    lines = [line for line in lines if line[2]]
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for run, metric, points in lines:
        xs, ys = zip(*points, strict=True)
        ax.plot(
            xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=f"{run}: {metric}"
        )
    ax.set_xlabel("step")
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(plt, fig, path)


def write_plots(
    leaderboard: Leaderboard, run_dirs: Mapping[str, Path], ppo_runs: set[str], out_dir: Path
) -> dict[str, Path]:
    """Every figure of the report; returns title -> PNG path (only figures with data).

    ``run_dirs``: recipe run folders by display name; ``ppo_runs``: which of them are PPO."""
    figures: dict[str, Path] = {
        "Win rate against the reference (± SE)": plot_leaderboard(
            leaderboard, out_dir / "win_rate.png"
        )
    }
    metrics = {name: read_metrics(run_dir / "metrics.jsonl") for name, run_dir in run_dirs.items()}
    loss = {
        name: {k: v for k, v in metric_series(rows, "loss").items() if "eval" not in k}
        for name, rows in metrics.items()
    }
    path = plot_curves(loss, out_dir / "training_loss.png", title="Training loss", y_label="loss")
    if path:
        figures["Training loss"] = path
    ppo = {name: rows for name, rows in metrics.items() if name in ppo_runs}
    for wanted, keys, title in (
        ("reward", PPO_REWARD_KEYS, "PPO reward"),
        ("kl", PPO_KL_KEYS, "PPO KL to the reference"),
    ):
        curves = {name: _pick(metric_series(rows, wanted), keys) for name, rows in ppo.items()}
        path = plot_curves(curves, out_dir / f"ppo_{wanted}.png", title=title, y_label=wanted)
        if path:
            figures[title] = path
    return figures
