"""``evaluate`` and ``validate`` take ``--base-url`` / ``--model`` like ``annotate`` (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.testing.openai_server import start_server
from tests.server_personas import make_persona

runner = CliRunner()
DEAD = "http://127.0.0.1:9/v1"  # nothing listens: the persona file's own server is down


def _persona_pointing_nowhere(tmp_path: Path, server) -> str:
    name = make_persona(tmp_path, server)
    path = tmp_path / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["backend"]["options"]["base_url"] = DEAD
    path.write_text(yaml.safe_dump(spec))
    return name


def _outputs(path: Path, generator: str, n: int) -> Path:
    records = [
        {"instruction": f"Task {i}", "output": f"{generator} answer {i} " * (1 + i % 3),
         "generator": generator}
        for i in range(n)
    ]  # fmt: skip
    path.write_text(json.dumps(records))
    return path


def test_evaluate_and_validate_judge_through_the_base_url_given(
    tmp_path: Path, shared_data: Path
) -> None:
    model = _outputs(tmp_path / "model.json", "model", 6)
    reference = _outputs(tmp_path / "reference.json", "reference", 6)
    with start_server() as server:
        name = _persona_pointing_nowhere(tmp_path, server)
        common = ["--annotators-dir", str(tmp_path), "--base-url", server.base_url,
                  "--model", "other-model"]  # fmt: skip
        evaluated = runner.invoke(
            app,
            ["evaluate", "--model-outputs", str(model), "--reference-outputs", str(reference),
             "--annotator", name, "--no-lc", "--quiet", "--out", str(tmp_path / "b"), *common],
        )  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output
        validated = runner.invoke(
            app,
            ["validate", "--annotator", name, "--set", "llmbar", "--single-order", "--limit",
             "3", "--data-dir", str(shared_data), "--quiet", *common],
        )  # fmt: skip
        assert validated.exit_code == 0, validated.output
        assert server.stats()["requests"] >= 6 + 3
    saved = [
        json.loads(x) for x in (tmp_path / "b/annotations/model.jsonl").read_text().splitlines()
    ]
    assert len(saved) == 6 and all(a["preference"] is not None for a in saved)
