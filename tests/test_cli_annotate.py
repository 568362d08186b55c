"""`simfarm annotate` as users and scripts run it: real files, real server, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.cli.common import EXIT_ITEMS_FAILED
from simfarm.testing.openai_server import start_server
from tests.server_personas import make_persona

runner = CliRunner()
CONCURRENCY = 16
"""Requests in flight in the interruption tests (kept low so each run lasts seconds)."""
MODELS = [  # every system in the shared AlpacaEval outputs except the reference
    "OpenHermes-2.5-Mistral-7B",
    "alpaca-7b",
    "claude-2",
    "gemma-7b-it",
    "gpt-3.5-turbo-1106",
    "text_davinci_003",
    "vicuna-7b-v1.5",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def simfarm_cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "simfarm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        # A shell without job control starts background jobs with SIGINT ignored, and a child
        # inherits that; give the CLI the SIGINT a terminal user's Ctrl-C would deliver.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


@pytest.mark.parametrize("model", MODELS)
def test_longest_reproduces_the_length_rule_on_alpaca_eval(
    shared_data: Path, tmp_path: Path, model: str
) -> None:
    outputs = shared_data / "alpaca_eval" / "model_outputs"
    out = tmp_path / "ann.jsonl"
    result = runner.invoke(
        app,
        [
            "annotate",
            "--persona",
            "longest",
            "--quiet",
            "--model-outputs",
            str(outputs / f"{model}.json"),
            "--reference-outputs",
            str(outputs / "gpt4_1106_preview.json"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    model_records = json.loads((outputs / f"{model}.json").read_text())
    reference = {
        r["instruction"]: r["output"]
        for r in json.loads((outputs / "gpt4_1106_preview.json").read_text())
    }
    annotations = read_jsonl(out)
    assert len(annotations) == len(model_records) == 805
    for record, annotation in zip(model_records, annotations, strict=True):
        ref = reference[record["instruction"]]
        expected = (
            1.5
            if len(ref) == len(record["output"])
            else (2.0 if len(record["output"]) > len(ref) else 1.0)
        )
        assert annotation["instruction"] == record["instruction"]
        assert annotation["output_1"] == ref and annotation["output_2"] == record["output"]
        assert annotation["generator_2"] == record["generator"]
        assert annotation["generator_1"] == "gpt4_1106_preview"
        assert annotation["preference"] == expected
        assert annotation["annotator"] == "longest" and annotation["failure"] is None


def test_server_persona_805_pairs_then_zero_requests(shared_data: Path, tmp_path: Path) -> None:
    outputs = shared_data / "alpaca_eval" / "model_outputs"
    args = [
        "annotate",
        "--persona",
        "alpaca_farm_greedy",
        "--quiet",
        "--model-outputs",
        str(outputs / "alpaca-7b.json"),
        "--reference-outputs",
        str(outputs / "gpt4_1106_preview.json"),
    ]
    with start_server(latency_s=0.01) as server:
        first = runner.invoke(
            app, [*args, "--base-url", server.base_url, "--out", str(tmp_path / "a.jsonl")]
        )
        assert first.exit_code == 0, first.output
        sent_first = server.stats()["requests"]
        second = runner.invoke(
            app, [*args, "--base-url", server.base_url, "--out", str(tmp_path / "b.jsonl")]
        )
        assert second.exit_code == 0, second.output
        assert server.stats()["requests"] == sent_first  # the rerun made 0 requests
    a, b = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert len(a) == len(b) == 805
    assert sent_first == sum(x["output_1"] != x["output_2"] for x in a)
    assert [x["preference"] for x in a] == [x["preference"] for x in b]
    assert all(x["preference"] in (1.0, 1.5, 2.0) for x in a)
    assert all(x["cached"] for x in b if x["output_1"] != x["output_2"])


def _persona_args(name: str, folder: Path, pairs: Path, *more: str) -> list[str]:
    """``simfarm annotate`` with a test persona from ``folder`` over a pairs file."""
    return [
        "annotate",
        "--persona",
        name,
        "--annotators-dir",
        str(folder),
        "--pairs",
        str(pairs),
        *more,
    ]


def _pairs_file(path: Path, n: int) -> Path:
    with path.open("w") as out:
        for i in range(n):
            out.write(
                json.dumps(
                    {
                        "instruction": f"Task {i}: describe item {i}.",
                        "output_1": f"answer {i}",
                        "output_2": f"a longer answer for task {i}",
                        "generator_1": "ref",
                        "generator_2": "model",
                    }
                )
                + "\n"
            )
    return path


def _wait_for(server, completed: int, process: subprocess.Popen, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while server.stats()["completed"] < completed:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_loses_nothing(tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 2000)
    out = tmp_path / "out.jsonl"
    with start_server(latency_s=0.05) as server:
        # 16 in flight: the run lasts ~6 s, so the kill lands mid-run even on a loaded machine.
        name = make_persona(tmp_path, server, options={"max_concurrency": CONCURRENCY})
        args = _persona_args(name, tmp_path, pairs, "--out", str(out), "--quiet")
        process = simfarm_cli(*args)
        _wait_for(server, 500, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()
        done_before = server.stats()["completed"]
        assert done_before < 2000
        rerun = simfarm_cli(*args)
        _stdout, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr
        stats = server.stats()
    annotations = read_jsonl(out)
    assert len(annotations) == 2000
    assert {a["instruction"] for a in annotations} == {
        f"Task {i}: describe item {i}." for i in range(2000)
    }
    assert all(a["preference"] == 2.0 and a["failure"] is None for a in annotations)
    assert stats["distinct_prompts"] == 2000
    assert stats["resent"] <= CONCURRENCY, stats  # at most what was in flight at the kill


@pytest.mark.slow
def test_ctrl_c_keeps_answers_and_says_how_to_resume(tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 1500)
    with start_server(latency_s=0.05) as server:
        name = make_persona(tmp_path, server, options={"max_concurrency": CONCURRENCY})
        args = _persona_args(name, tmp_path, pairs, "--out", str(tmp_path / "o.jsonl"), "--quiet")
        process = simfarm_cli(*args)
        _wait_for(server, 300, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "resume" in stderr
        completed = server.stats()["completed"]
        rerun = simfarm_cli(*args)
        rerun.communicate(timeout=300)
        stats = server.stats()
    assert rerun.returncode == 0
    assert stats["resent"] <= CONCURRENCY and stats["distinct_prompts"] == 1500
    assert completed >= 300


def test_request_budget_then_resume(tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 120)
    with start_server() as server:
        name = make_persona(tmp_path, server)
        base = _persona_args(name, tmp_path, pairs, "--quiet")
        limited = runner.invoke(
            app, [*base, "--max-requests", "50", "--out", str(tmp_path / "a.jsonl")]
        )
        # Items left failed: a non-zero exit that says how to resume.
        assert limited.exit_code == EXIT_ITEMS_FAILED, limited.output
        assert "70 of 120 pairs failed (budget: 70)" in limited.output
        first = read_jsonl(tmp_path / "a.jsonl")
        assert sum(a["preference"] is not None for a in first) == 50
        assert {a["failure"]["kind"] for a in first if a["failure"]} == {"budget"}
        full = runner.invoke(app, [*base, "--out", str(tmp_path / "b.parquet")])
        assert full.exit_code == 0, full.output
        assert server.stats()["requests"] == 120
    frame = pd.read_parquet(tmp_path / "b.parquet")
    assert len(frame) == 120 and frame["preference"].notna().all()


def test_bad_input_record_is_named_and_handled_by_policy(tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    model.write_text(
        json.dumps(
            [
                {"instruction": "a", "output": "x", "generator": "m"},
                {"instruction": "b", "output": True, "generator": "m"},
                {"instruction": "c", "generator": "m"},
            ]
        )
    )
    ref = tmp_path / "r.json"
    ref.write_text(
        json.dumps([{"instruction": i, "output": "yy", "generator": "r"} for i in "abc"])
    )
    base = ["annotate", "--persona", "longest", "--model-outputs", str(model)]
    base += ["--reference-outputs", str(ref), "--out", str(tmp_path / "o.jsonl")]

    stopped = runner.invoke(app, [*base, "--on-bad-record", "error"])
    assert stopped.exit_code == 2
    assert "m.json: record 1: field 'output'" in stopped.output
    assert "m.json: record 2: field 'output': missing" in stopped.output
    assert not (tmp_path / "o.jsonl").exists()

    skipped = runner.invoke(app, [*base, "--on-bad-record", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert "record 1" in skipped.output and "skipped" in skipped.output
    assert [a["instruction"] for a in read_jsonl(tmp_path / "o.jsonl")] == ["a"]

    coerced = runner.invoke(app, base)  # default: coerce what can be repaired, skip the rest
    assert coerced.exit_code == 0, coerced.output
    assert "coerced" in coerced.output and "skipped" in coerced.output
    annotations = read_jsonl(tmp_path / "o.jsonl")
    assert [(a["instruction"], a["output_2"]) for a in annotations] == [("a", "x"), ("b", "True")]


def test_api_key_never_reaches_output_cache_or_logs(tmp_path: Path) -> None:
    secret = "sk-live-DO-NOT-LEAK-12345"
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 40)
    cache = tmp_path / "cache.sqlite"
    # The server echoes the Authorization header in its 401 bodies, as some gateways do.
    with start_server(fault_rate=0.5, fault_kinds="401,500") as server:
        name = make_persona(
            tmp_path,
            server,
            options={"api_key_env": "MY_JUDGE_KEY", "max_retries": 0, "stop_after_fatal": 1000},
        )
        process = simfarm_cli(
            *_persona_args(name, tmp_path, pairs, "--out", str(tmp_path / "o.jsonl")),
            "--cache-path",
            str(cache),
            env={"MY_JUDGE_KEY": secret},
        )
        stdout, stderr = process.communicate(timeout=120)
        assert server.stats()["authorization"] == [f"Bearer {secret}"]
    assert process.returncode == EXIT_ITEMS_FAILED, stderr
    assert "HTTP 401" in (tmp_path / "o.jsonl").read_text()
    for blob in (stdout, stderr, (tmp_path / "o.jsonl").read_text()):
        assert secret not in blob
    for path in tmp_path.glob("cache.sqlite*"):  # the database, its WAL, its journals
        for file in [path] if path.is_file() else list(path.iterdir()):
            assert secret.encode() not in file.read_bytes()


def test_pool_assigns_members_and_records_them(tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 90)
    with start_server() as server:
        result = runner.invoke(
            app,
            [
                "annotate",
                "--persona",
                "alpaca_farm_pool",
                "--base-url",
                server.base_url,
                "--pairs",
                str(pairs),
                "--out",
                str(tmp_path / "o.jsonl"),
                "--quiet",
            ],
        )
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 90
    annotations = read_jsonl(tmp_path / "o.jsonl")
    assert {a["pool"] for a in annotations} == {"alpaca_farm_pool"}
    members = [a["annotator"] for a in annotations]
    assert set(members) == {"alpaca_farm_greedy", "literature_fan", "lazy_reader"}
    assert all(a["preference"] == 2.0 for a in annotations)  # the server prefers longer


def test_reads_a_datasets_folder(tmp_path: Path) -> None:
    import datasets

    rows = [{"instruction": f"q{i}", "output": "x" * (i + 1), "generator": "m"} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "model_ds"))
    reference = [{"instruction": f"q{i}", "output": "xxx", "generator": "ref"} for i in range(5)]
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reference))
    result = runner.invoke(
        app,
        [
            "annotate",
            "--persona",
            "longest",
            "--model-outputs",
            str(tmp_path / "model_ds"),
            "--reference-outputs",
            str(tmp_path / "ref.jsonl"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert [a["preference"] for a in read_jsonl(tmp_path / "o.jsonl")] == [1, 1, 1.5, 2, 2]


def test_both_orders_flag_reports_position_consistency(tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 20)
    with start_server(policy="first") as server:  # a judge that always picks the first shown
        result = runner.invoke(
            app,
            [
                "annotate",
                "--persona",
                "alpaca_farm_greedy",
                "--base-url",
                server.base_url,
                "--both-orders",
                "--pairs",
                str(pairs),
                "--out",
                str(tmp_path / "o.jsonl"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 40
    annotations = read_jsonl(tmp_path / "o.jsonl")
    assert all(a["position_consistent"] is False for a in annotations)
    assert all(a["preference"] == 1.5 for a in annotations)
