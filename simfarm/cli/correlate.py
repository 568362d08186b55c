"""``simfarm correlate``: rank correlation of a leaderboard with a human ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simfarm.cli.common import console, fail
from simfarm.errors import SimfarmError


def correlate(
    leaderboard: Annotated[
        Path, typer.Argument(help="A leaderboard CSV (first column: model names).")
    ],
    human: Annotated[
        Path | None,
        typer.Option(
            help="CSV of human-derived scores, first column the system names (default: "
            "<data root>/alpaca_eval/arena_benchmarks.csv)."
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Leaderboard column (default: length_controlled_winrate or win_rate)."),
    ] = None,
    human_column: Annotated[
        str | None,
        typer.Option(help="Human score column (default: the first containing 'Arena Elo')."),
    ] = None,
    n_bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    confidence: Annotated[float, typer.Option(help="Confidence level of the interval.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data root for the default --human file.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for correlation.json/.md and a scatter plot.")
    ] = None,
) -> None:
    """Rank correlation of a leaderboard with a human ranking (e.g. Chatbot Arena Elo).

    Spearman and Kendall with bootstrap confidence intervals, and a scatter plot.
    """
    import pandas as pd

    from simfarm.evaluation.correlation import load_scores, rank_correlation
    from simfarm.evaluation.human_sets import resolve_data_root
    from simfarm.evaluation.plots import plot_scatter
    from simfarm.evaluation.reports import correlation_markdown

    try:
        human_path = human or resolve_data_root(data_dir) / "alpaca_eval" / "arena_benchmarks.csv"
        if metric is None and leaderboard.is_file():
            columns = list(pd.read_csv(leaderboard, nrows=0).columns)
            metric = (
                "length_controlled_winrate"
                if "length_controlled_winrate" in columns
                else ("win_rate")
            )
        sim_column, simulated = load_scores(leaderboard, metric, "win_rate")
        human_col, human_scores = load_scores(human_path, human_column, "Arena Elo")
        result = rank_correlation(
            simulated,
            human_scores,
            simulated_label=f"{leaderboard.name}:{sim_column}",
            human_label=f"{human_path.name}:{' '.join(human_col.split())}",
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "correlation.json").write_text(
                result.model_dump_json(indent=2) + "\n", encoding="utf-8"
            )
            (out / "correlation.md").write_text(correlation_markdown(result), encoding="utf-8")
            plot_scatter(
                result.systems,
                result.simulated,
                result.human,
                out / "correlation.png",
                x_label=result.simulated_label,
                y_label=result.human_label,
                title=f"Spearman {result.spearman:.3f}, Kendall {result.kendall:.3f} "
                f"({len(result.systems)} systems)",
            )
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    pct = round(confidence * 100)
    table = Table(title=f"{result.simulated_label} vs {result.human_label}")
    for column in ("statistic", "value", f"{pct}% CI"):
        table.add_column(column, justify="left" if column == "statistic" else "right")
    table.add_row(
        "Spearman",
        f"{result.spearman:.3f}",
        f"[{result.spearman_ci[0]:.3f}, {result.spearman_ci[1]:.3f}]",
    )
    table.add_row(
        "Kendall",
        f"{result.kendall:.3f}",
        f"[{result.kendall_ci[0]:.3f}, {result.kendall_ci[1]:.3f}]",
    )
    table.add_row("systems", str(len(result.systems)), "")
    console.print(table)
    if result.unmatched_simulated:
        missing = result.unmatched_simulated
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        console.print(f"no human score for: {', '.join(missing[:10])}{more}", highlight=False)
