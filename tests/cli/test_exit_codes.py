"""Exit codes tell the truth: a run that left items failed exits non-zero and says how to
resume; an empty pairing is refused before any request; secrets stay out of every file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.cli.common import EXIT_ITEMS_FAILED
from simfarm.testing.openai_server import start_server
from tests.server_personas import make_persona

runner = CliRunner()
SECRET = "sk-live-NEVER-WRITTEN-4242"
CONCURRENCY = 4


def _outputs(path: Path, generator: str, instructions: list[str]) -> Path:
    records = [
        {"instruction": text, "output": f"{generator} says: {text} " * (1 + i % 3)}
        for i, text in enumerate(instructions)
    ]
    path.write_text(json.dumps([{**r, "generator": generator} for r in records]))
    return path


def _instructions(n: int) -> list[str]:
    return [f"Task {i}: describe item {i}." for i in range(n)]


def _judge(tmp_path: Path, server, **options: object) -> str:
    options = {"api_key_env": "SIMFARM_EXIT_TEST_KEY", "max_concurrency": CONCURRENCY, **options}
    return make_persona(tmp_path, server, options=options)


def test_annotate_against_a_refusing_server_stops_early_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMFARM_EXIT_TEST_KEY", SECRET)
    model = _outputs(tmp_path / "model.json", "model", _instructions(60))
    reference = _outputs(tmp_path / "reference.json", "reference", _instructions(60))
    outputs = {}
    with start_server(fault_rate=1.0, fault_kinds="401") as server:
        name = _judge(tmp_path, server)
        for suffix in (".jsonl", ".json", ".parquet"):
            out = tmp_path / f"annotations{suffix}"
            result = runner.invoke(
                app,
                [
                    "annotate", "--persona", name, "--annotators-dir", str(tmp_path),
                    "--model-outputs", str(model), "--reference-outputs", str(reference),
                    "--out", str(out), "--quiet", "--no-cache",
                ],
            )  # fmt: skip
            assert result.exit_code == EXIT_ITEMS_FAILED, result.output
            assert "60 of 60 pairs failed (client_error: 60)" in result.output
            assert "run the same command again" in result.output
            assert SECRET not in result.output
            outputs[suffix] = out.read_bytes()
        stats = server.stats()
    # The key was really sent and echoed back in every 401 body, and never written.
    assert stats["authorization"] == [f"Bearer {SECRET}"]
    assert stats["requests"] <= 3 * (CONCURRENCY + 3)
    for blob in outputs.values():
        assert SECRET.encode() not in blob
    rows = [json.loads(line) for line in outputs[".jsonl"].decode().splitlines()]
    assert all(row["failure"]["kind"] == "client_error" for row in rows)
    assert sum("stopped sending" in row["failure"]["message"] for row in rows) >= 60 - 7


def test_annotate_refuses_an_empty_pairing_before_any_request(tmp_path: Path) -> None:
    model = _outputs(tmp_path / "model.json", "model", _instructions(5))
    elsewhere = _outputs(tmp_path / "other.json", "reference", ["Something else entirely"])
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with start_server() as server:
        name = _judge(tmp_path, server)
        base = ["annotate", "--persona", name, "--annotators-dir", str(tmp_path)]
        base += ["--model-outputs", str(model), "--out", str(tmp_path / "o.jsonl")]
        no_overlap = runner.invoke(app, [*base, "--reference-outputs", str(elsewhere)])
        nothing = runner.invoke(app, [*base, "--reference-outputs", str(empty)])
        assert server.stats()["requests"] == 0
    assert no_overlap.exit_code == 2
    assert "model.json" in no_overlap.output and "other.json" in no_overlap.output
    assert "no instruction" in no_overlap.output
    assert nothing.exit_code == 2 and "empty.json" in nothing.output
    assert not (tmp_path / "o.jsonl").exists()


def test_timeout_and_retry_budget_are_command_line_options(tmp_path: Path) -> None:
    model = _outputs(tmp_path / "model.json", "model", _instructions(3))
    reference = _outputs(tmp_path / "reference.json", "reference", _instructions(3))
    with start_server(fault_rate=1.0, fault_kinds="timeout", timeout_sleep_s=5) as server:
        name = _judge(tmp_path, server)
        result = runner.invoke(
            app,
            [
                "annotate", "--persona", name, "--annotators-dir", str(tmp_path),
                "--model-outputs", str(model), "--reference-outputs", str(reference),
                "--out", str(tmp_path / "o.jsonl"), "--quiet",
                "--timeout", "0.3", "--retry-budget", "0.5",
            ],
        )  # fmt: skip
    assert result.exit_code == EXIT_ITEMS_FAILED, result.output
    assert "3 of 3 pairs failed (timeout: 3)" in result.output
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert all("within 0.3s" in row["failure"]["message"] for row in rows)


def test_evaluate_refuses_empty_pairings_before_judging_any_model(tmp_path: Path) -> None:
    first = _outputs(tmp_path / "first.json", "first", _instructions(5))
    unrelated = _outputs(tmp_path / "unrelated.json", "unrelated", ["Nothing in common"])
    reference = _outputs(tmp_path / "reference.json", "reference", _instructions(5))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with start_server() as server:
        name = _judge(tmp_path, server)
        base = ["evaluate", "--annotator", name, "--annotators-dir", str(tmp_path), "--quiet"]
        base += ["--out", str(tmp_path / "board")]
        second_unpaired = runner.invoke(
            app,
            [*base, "--model-outputs", str(first), str(unrelated),
             "--reference-outputs", str(reference)],
        )  # fmt: skip
        empty_reference = runner.invoke(
            app, [*base, "--model-outputs", str(first), "--reference-outputs", str(empty)]
        )
        assert server.stats()["requests"] == 0  # not even the first model was judged
    assert second_unpaired.exit_code == 2, second_unpaired.output
    assert "unrelated.json" in second_unpaired.output
    assert "no instruction" in second_unpaired.output
    assert empty_reference.exit_code == 2 and "empty.json" in empty_reference.output
    assert not (tmp_path / "board" / "leaderboard.csv").exists()


def test_evaluate_with_every_request_refused_exits_non_zero_without_a_leaderboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMFARM_EXIT_TEST_KEY", SECRET)
    model = _outputs(tmp_path / "model.json", "model", _instructions(20))
    reference = _outputs(tmp_path / "reference.json", "reference", _instructions(20))
    with start_server(fault_rate=1.0, fault_kinds="401") as server:
        name = _judge(tmp_path, server)
        result = runner.invoke(
            app,
            [
                "evaluate", "--annotator", name, "--annotators-dir", str(tmp_path),
                "--model-outputs", str(model), "--reference-outputs", str(reference),
                "--out", str(tmp_path / "board"), "--quiet",
            ],
        )  # fmt: skip
        assert server.stats()["requests"] <= CONCURRENCY + 3
    assert result.exit_code == EXIT_ITEMS_FAILED, result.output
    assert "20 of 20 pairs failed" in result.output and SECRET not in result.output
    assert not (tmp_path / "board" / "leaderboard.csv").exists()


def test_evaluate_partial_failures_write_the_board_and_exit_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMFARM_EXIT_TEST_KEY", SECRET)
    model = _outputs(tmp_path / "model.json", "model", _instructions(30))
    reference = _outputs(tmp_path / "reference.json", "reference", _instructions(30))
    with start_server(fault_rate=0.3, fault_kinds="401", seed=2) as server:
        name = _judge(tmp_path, server, stop_after_fatal=100)
        result = runner.invoke(
            app,
            [
                "evaluate", "--annotator", name, "--annotators-dir", str(tmp_path),
                "--model-outputs", str(model), "--reference-outputs", str(reference),
                "--out", str(tmp_path / "board"), "--quiet", "--no-lc",
            ],
        )  # fmt: skip
    assert result.exit_code == EXIT_ITEMS_FAILED, result.output
    assert " of 30 pairs failed (client_error: " in result.output
    assert (tmp_path / "board" / "leaderboard.csv").exists()
    for path in (tmp_path / "board").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_evaluate_refuses_annotation_files_without_a_judged_pair(tmp_path: Path) -> None:
    failed = {
        "instruction": "i", "output_1": "a", "generator_1": "ref", "output_2": "b",
        "generator_2": "model", "annotator": "judge", "preference": None,
        "failure": {"kind": "rate_limit", "message": "429", "attempts": 7},
    }  # fmt: skip
    path = tmp_path / "all_failed.jsonl"
    path.write_text(json.dumps(failed) + "\n")
    result = runner.invoke(
        app, ["evaluate", "--annotations", str(path), "--out", str(tmp_path / "board")]
    )
    assert result.exit_code == 2, result.output
    assert "no judged pair for 'model'" in result.output
    assert not (tmp_path / "board" / "leaderboard.csv").exists()


def test_validate_with_a_refusing_judge_exits_non_zero(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMFARM_EXIT_TEST_KEY", SECRET)
    with start_server(fault_rate=1.0, fault_kinds="404") as server:
        name = _judge(tmp_path, server)
        result = runner.invoke(
            app,
            [
                "validate", "--annotator", name, "--annotators-dir", str(tmp_path),
                "--set", "pandalm", "--limit", "4", "--data-dir", str(shared_data),
                "--single-order", "--quiet",
            ],
        )  # fmt: skip
    assert result.exit_code == EXIT_ITEMS_FAILED, result.output
    assert "judgements failed (client_error: " in result.output


def test_personas_show_redacts_url_credentials(tmp_path: Path) -> None:
    with start_server() as server:
        name = make_persona(tmp_path, server)
    persona = tmp_path / f"{name}.yaml"
    text = persona.read_text().replace("http://127.0.0.1", "http://alice:pw-in-url-99@127.0.0.1")
    persona.write_text(text)
    result = runner.invoke(app, ["personas", "show", name, "--annotators-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "pw-in-url-99" not in result.output and "***@127.0.0.1" in result.output
