"""The leaderboard figure: judge in the title, legend off the bars, a 0% bar visible."""

from __future__ import annotations

from pathlib import Path

from simfarm.evaluation.leaderboard import build_leaderboard
from simfarm.evaluation.plots import leaderboard_figure, plot_leaderboard
from simfarm.types import PairwiseAnnotation


def _annotations(model: str, wins: int, n: int = 10) -> list[PairwiseAnnotation]:
    return [
        PairwiseAnnotation(
            instruction=f"instruction {i}",
            output_1="r" * (20 + i),
            output_2="m" * (10 + 3 * i),
            generator_1="reference",
            generator_2=model,
            annotator="my_judge",
            preference=2.0 if i < wins else 1.0,
        )
        for i in range(n)
    ]


def test_figure_names_the_judge_and_labels_a_zero_bar(tmp_path: Path) -> None:
    board, _ = build_leaderboard(
        {"best": _annotations("best", 10), "mid": _annotations("mid", 5),
         "zero": _annotations("zero", 0)},
        length_controlled=False,
    )  # fmt: skip
    fig = leaderboard_figure(board)
    (ax,) = fig.axes
    assert "my_judge" in ax.get_title(), ax.get_title()
    labels = [t.get_text() for t in ax.texts]
    assert "0.0" in labels and "100.0" in labels  # the 0% model is labelled, not blank
    assert plot_leaderboard(board, tmp_path / "board.png").stat().st_size > 0


def test_legend_never_covers_a_bar() -> None:
    # Every model at 100%: bars reach the right edge, where a legend inside would sit.
    board, _ = build_leaderboard(
        {f"m{i}": _annotations(f"m{i}", 10) for i in range(3)}, length_controlled=False
    )
    fig = leaderboard_figure(board)
    (ax,) = fig.axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [patch.get_window_extent(renderer) for patch in ax.patches]
    assert bars and not any(legend.overlaps(bar) for bar in bars)
