"""The bundled offline rating and critique personas on the embedded model (Gemma 3 270M),
through `simfarm annotate`: readable answers, written records, and a rerun that asks the
model nothing (every answer came from the cache)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simfarm.cli import app

runner = CliRunner()

OUTPUTS = [
    {"instruction": "Name the largest planet in the solar system.", "output": "Jupiter."},
    {"instruction": "Translate 'thank you' into French.", "output": "I like turtles."},
]


def run_twice(tmp_path: Path, persona: str) -> list[dict]:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    sent = []
    for name in ("first.jsonl", "second.jsonl"):
        result = runner.invoke(
            app,
            [
                "annotate",
                "--persona",
                persona,
                "--model-outputs",
                str(outputs),
                "--out",
                str(tmp_path / name),
                "--cache-path",
                str(tmp_path / "cache.sqlite"),
                "--quiet",
            ],
        )
        assert result.exit_code == 0, result.output
        match = re.search(r"requests sent\s*│\s*(\d+)", result.output)
        assert match is not None, result.output
        sent.append(int(match[1]))
    assert sent == [2, 0]  # the rerun found every answer in the cache
    second = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    assert all(r["cached"] for r in second)
    return [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_rating_persona_on_the_embedded_model(tmp_path: Path) -> None:
    records = run_twice(tmp_path, "topical_chat_rating")
    for record in records:
        assert record["failure"] is None
        assert set(record["scores"]) == {
            "understandability",
            "naturalness",
            "coherence",
            "engagingness",
            "groundedness",
        }
        assert 1 <= record["overall"] <= 5
        # the local backend returns top logprobs: expected scores lie within each scale
        expected = record["expected_scores"]
        assert 0 <= expected["understandability"] <= 1 and 1 <= expected["overall"] <= 5


@pytest.mark.slow
def test_critique_persona_on_the_embedded_model(tmp_path: Path) -> None:
    records = run_twice(tmp_path, "embedded_critique")
    for record in records:
        assert record["failure"] is None
        assert record["critique"] and "[RESULT]" not in record["critique"]
        assert record["score"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert record["rubric"] == "helpfulness"
