"""The evaluation stage and the report on real data: outputs of real systems from the
shared AlpacaEval files, judged by the `longest` persona, through simfarm.evaluation; the
report opens in headless Chromium with every image decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simfarm.evaluation.leaderboard import Leaderboard
from simfarm.experiment.config import ExperimentConfig, MethodSpec
from simfarm.experiment.evaluate import evaluate_methods
from simfarm.experiment.report import write_report
from simfarm.experiment.stages import StageRecord
from tests.experiment.browser import image_sizes

SYSTEMS = ("alpaca-7b", "vicuna-7b-v1.5", "gpt4_1106_preview")


def _outputs(shared_data: Path, tmp_path: Path, n: int = 30) -> dict[str, Path]:
    paths = {}
    for name in (*SYSTEMS, "text_davinci_003"):
        records = json.loads(
            (shared_data / "alpaca_eval" / "model_outputs" / f"{name}.json").read_text()
        )[:n]
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(
            json.dumps(
                [
                    {"instruction": r["instruction"], "output": r["output"], "generator": name}
                    for r in records
                ]
            )
        )
    return paths


@pytest.mark.slow
def test_evaluation_and_report_open_in_chromium(shared_data: Path, tmp_path: Path) -> None:
    outputs = _outputs(shared_data, tmp_path)
    seen: list[tuple[str, int, int]] = []
    summaries = evaluate_methods(
        {name: outputs[name] for name in SYSTEMS},
        outputs["text_davinci_003"],
        "longest",
        tmp_path / "run" / "evaluation",
        length_controlled=True,
        progress=lambda desc, done, total: seen.append((desc, done, total)),
    )
    assert [s.n_items for s in summaries] == [30, 30, 30]
    assert ("judging alpaca-7b", 30, 30) in seen
    board = Leaderboard.model_validate_json(
        (tmp_path / "run" / "evaluation" / "leaderboard.json").read_text()
    )
    assert {r.generator_2 for r in board.rows} == set(SYSTEMS)
    assert all(r.length_controlled_winrate is not None for r in board.rows)
    assert "0.674" in " ".join(board.judge_agreement)  # longest's measured agreement
    config = ExperimentConfig(
        name="report test <b>escaped</b>",
        methods=[MethodSpec(method="sft", name=name) for name in SYSTEMS],
    )
    record = StageRecord(
        name="evaluate", input_digest="x", outputs=[], wall_time_s=1.5, finished_at="now"
    )
    report = write_report(
        config, tmp_path / "run", {"evaluate": record}, tmp_path / "run" / "report.html"
    )
    html = report.read_text()
    assert "report test &lt;b&gt;escaped&lt;/b&gt;" in html
    assert "http" not in html.replace("http-equiv", ""), "self-contained: no external links"
    assert "0.674" in html
    sizes = image_sizes(report, tmp_path)
    assert len(sizes) >= 1
    assert all(width > 0 and height > 0 for _, width, height in sizes), sizes
