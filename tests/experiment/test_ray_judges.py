"""``executor: ray`` in an experiment: the judge stages (feedback annotation, evaluation)
send their requests through Ray actors and produce exactly the in-process run's records.

The two stages run on their own (training and generation are not what changes), each
experiment against its own empty cache, so both really send every request to the loopback
server; a real local Ray runtime is started by the experiment itself (loopback only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simfarm.evaluation.leaderboard import Leaderboard
from simfarm.experiment.config import (
    EvaluationSpec,
    ExperimentConfig,
    FeedbackSpec,
    MethodSpec,
    ReferenceSpec,
)
from simfarm.experiment.run import ExperimentRun
from simfarm.experiment.stages import StageRecord
from simfarm.testing.openai_server import RunningServer, start_server
from simfarm.types import PairwiseItem
from tests.server_personas import make_persona

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

METHODS = ("terse", "wordy")
N = 10


def write_outputs(path: Path, generator: str, repeats: list[int]) -> Path:
    """Outputs of ``generator`` whose length varies per prompt (so verdicts differ)."""
    rows = [
        {"instruction": f"Question {i}?", "output": f"{generator} {i} " * n, "generator": generator}
        for i, n in enumerate(repeats)
    ]
    path.write_text(json.dumps(rows))
    return path


def upstream(run: ExperimentRun, *names: str) -> None:
    """Mark the stages the judge stages read as done (they are not what is tested)."""
    for name in names:
        run.stages.records[name] = StageRecord(
            name=name, input_digest=name, outputs=[], wall_time_s=0.0, finished_at="now"
        )


def judge_stages(
    tmp_path: Path, executor: str, annotator: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[ExperimentRun, Path]:
    """The feedback-annotation and evaluation stages of one experiment; its own cache."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SIMFARM_CACHE_DIR", str(tmp_path / f"cache-{executor}"))
    outputs = {
        name: write_outputs(
            tmp_path / f"{name}.json", name, [1 + (i + shift) % 3 for i in range(N)]
        )
        for shift, name in enumerate(METHODS)
    }
    reference = write_outputs(tmp_path / "reference.json", "reference", [1] * N)
    config = ExperimentConfig(
        name=f"judges on {executor}",
        methods=[MethodSpec(method="sft", name=name) for name in METHODS],
        feedback=FeedbackSpec(annotator=annotator),
        evaluation=EvaluationSpec(
            annotator=annotator,
            reference=ReferenceSpec(outputs=reference),
            length_controlled=False,
        ),
        executor=executor,  # type: ignore[arg-type]
    )
    out = tmp_path / f"run-{executor}"
    run = ExperimentRun(config, out, None)
    pairs = [
        PairwiseItem(
            instruction=f"Prompt {i}?",
            output_1="brief" if i % 2 else "a much longer sampled answer",
            output_2="a much longer sampled answer" if i % 2 else "brief",
            generator_1="sample_1",
            generator_2="sample_2",
        )
        for i in range(N)
    ]
    (out / "feedback").mkdir(parents=True)
    (out / "feedback" / "pairs.jsonl").write_text(
        "".join(p.model_dump_json() + "\n" for p in pairs)
    )
    upstream(run, "feedback.sample", *(f"generate.{name}" for name in METHODS))
    run.eval_outputs = dict(outputs)
    try:
        run.feedback_annotations()
        run.evaluate()
    finally:
        run.judge_executors.close()
    return run, out


def verdicts(path: Path) -> list[dict[str, Any]]:
    """Records without the wall-clock fields (latency differs between any two runs)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "latency_s"} for row in rows]


@pytest.fixture
def server() -> Any:
    with start_server(latency_s=0.0) as running:
        yield running


def test_ray_judge_stages_equal_the_in_process_ones(
    tmp_path: Path, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    annotator = str(personas / f"{make_persona(personas, server)}.yaml")

    local, local_out = judge_stages(tmp_path / "local", "local", annotator, monkeypatch)
    sent_locally = server.stats()["requests"]
    on_ray, ray_out = judge_stages(tmp_path / "ray", "ray", annotator, monkeypatch)
    sent_on_ray = server.stats()["requests"] - sent_locally

    judged = N + N * len(METHODS)
    assert sent_locally == sent_on_ray == judged, "each run sends every request once"
    for stage in ("feedback.annotate", "evaluate"):
        assert "ray" not in local.stages.records[stage].details
        ray_stats = on_ray.stages.records[stage].details["ray"]
        assert ray_stats["actors"] >= 1 and ray_stats["worker_failures"] == 0
    assert not ray.is_initialized(), "the experiment stops the runtime it started"

    assert verdicts(ray_out / "feedback" / "preferences.jsonl") == verdicts(
        local_out / "feedback" / "preferences.jsonl"
    )
    for name in METHODS:
        annotations = Path("evaluation") / "annotations" / f"{name}.jsonl"
        assert verdicts(ray_out / annotations) == verdicts(local_out / annotations)
    boards = [
        Leaderboard.model_validate_json((out / "evaluation" / "leaderboard.json").read_text())
        for out in (local_out, ray_out)
    ]
    # time_per_1000 is wall clock; everything else (win rates, counts, cost) is equal
    rows = [[row.model_dump(exclude={"time_per_1000"}) for row in b.rows] for b in boards]
    assert rows[0] == rows[1]
    assert 0 < boards[1].rows[0].win_rate < 100, "verdicts go both ways"
    assert {row.generator_2 for row in boards[1].rows} == set(METHODS)


def test_ray_is_not_started_for_a_judge_that_sends_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, out = judge_stages(tmp_path, "ray", "longest", monkeypatch)
    assert (out / "evaluation" / "leaderboard.json").is_file()
    assert "ray" not in run.stages.records["evaluate"].details
    assert run.judge_executors.runtime is None and not ray.is_initialized()
