"""Hindsight (RLHS) personas through `simfarm annotate`: the scenario's pairs judged in
foresight and in hindsight, written in every output format, cached, and resumable after
kill -9, against the loopback server and on the embedded model."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.scenarios.shopping import generate_instances, simulate_outcome, write_instances
from simfarm.testing.openai_server import start_server
from tests.annotation.test_hindsight import hindsight_persona
from tests.test_cli_annotate import CONCURRENCY, _wait_for, read_jsonl, simfarm_cli

runner = CliRunner()


def annotate_args(persona: Path | str, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "annotate",
        "--persona",
        str(persona),
        "--out",
        str(out),
        "--cache-path",
        str(cache),
        "--quiet",
        *extra,
    ]


def requests_sent(output: str) -> int:
    match = re.search(r"requests sent\s*│\s*(\d+)", output)
    assert match is not None, output
    return int(match[1])


def test_annotate_writes_foresight_and_hindsight_records_then_a_cached_rerun(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server(policy="longest") as server:
        persona = hindsight_persona(tmp_path, server)
        first = runner.invoke(app, annotate_args(persona, tmp_path / "a.jsonl", cache))
        assert first.exit_code == 0, first.output
        assert server.stats()["requests"] == 144  # 72 shipped pairs: foresight + hindsight
        again = runner.invoke(app, annotate_args(persona, tmp_path / "b.parquet", cache))
        assert again.exit_code == 0, again.output
        assert server.stats()["requests"] == 144  # the rerun asks nothing
    assert requests_sent(first.output) == 144 and requests_sent(again.output) == 0
    assert "hindsight agreement (true utility)" in first.output
    records = read_jsonl(tmp_path / "a.jsonl")
    assert len(records) == 72
    instances = {i["id"]: i for i in generate_instances(12)}
    for record in records:
        assert record["failure"] is None and record["scenario"] == "shopping"
        assert record["foresight_preference"] in (1.0, 2.0)
        assert record["hindsight_preference"] in (1.0, 2.0)
        instance = instances[record["instance_id"]]
        expected = simulate_outcome(instance["context"], instance["hidden"], record["output_2"])
        assert record["outcome_2"] == expected.text and record["utility_2"] == expected.utility
    rerun = pd.read_parquet(tmp_path / "b.parquet")
    assert len(rerun) == 72 and rerun["cached"].all()
    assert list(rerun["hindsight_preference"]) == [r["hindsight_preference"] for r in records]


def test_annotate_reads_scenario_instances_from_pairs(tmp_path: Path) -> None:
    instances = tmp_path / "few.jsonl"
    write_instances(instances, 2)  # 2 instances x 4 responses: 12 pairs
    with start_server(policy="longest") as server:
        persona = hindsight_persona(tmp_path, server)
        args = annotate_args(persona, tmp_path / "o.json", tmp_path / "c.sqlite")
        result = runner.invoke(app, [*args, "--pairs", str(instances)])
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 24
        limited = annotate_args(persona, tmp_path / "l.jsonl", tmp_path / "c.sqlite")
        result = runner.invoke(app, [*limited, "--pairs", str(instances), "--limit", "5"])
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 24  # a subset of the cached pairs
    records = json.loads((tmp_path / "o.json").read_text())
    ids = {i["id"] for i in generate_instances(2)}
    assert len(records) == 12 and {r["instance_id"] for r in records} == ids
    assert len(read_jsonl(tmp_path / "l.jsonl")) == 5


def test_annotate_with_a_pool_of_hindsight_personas(tmp_path: Path) -> None:
    with start_server(policy="longest") as server:
        copy = hindsight_persona(tmp_path, server, persona_text="A careful shopper.")
        copy.rename(tmp_path / "careful.yaml")  # id: the file name
        pool = {
            "kind": "pool",
            "members": [{"persona": "hindsight_shopping"}, {"persona": "careful"}],
        }
        (tmp_path / "shoppers.yaml").write_text(yaml.safe_dump(pool))
        args = annotate_args("shoppers", tmp_path / "o.jsonl", tmp_path / "c.sqlite")
        more = ["--annotators-dir", str(tmp_path), "--base-url", server.base_url]
        result = runner.invoke(app, [*args, *more])
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 144
    records = read_jsonl(tmp_path / "o.jsonl")
    assert len(records) == 72 and {r["pool"] for r in records} == {"shoppers"}
    assert {r["annotator"] for r in records} == {"hindsight_shopping", "careful"}
    assert all(r["hindsight_preference"] in (1.0, 2.0) for r in records)


def test_annotate_names_the_line_and_field_of_a_bad_instance(tmp_path: Path) -> None:
    instances = tmp_path / "bad.jsonl"
    write_instances(instances, 2)
    lines = instances.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["context"]
    instances.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    args = annotate_args("hindsight_shopping", tmp_path / "o.jsonl", tmp_path / "c.sqlite")
    result = runner.invoke(app, [*args, "--pairs", str(instances)])
    assert result.exit_code == 2
    assert f"{instances}:2: context" in result.output.replace("\n", "")
    assert not (tmp_path / "o.jsonl").exists()


def test_annotate_refuses_model_outputs_for_a_hindsight_persona(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    args = annotate_args("hindsight_shopping", tmp_path / "o.jsonl", tmp_path / "c.sqlite")
    result = runner.invoke(app, [*args, "--model-outputs", str(outputs)])
    assert result.exit_code == 2
    assert "give --pairs with scenario instances" in result.output.replace("\n", " ")


@pytest.mark.slow
def test_kill_9_mid_annotate_then_rerun_pays_only_what_was_in_flight(tmp_path: Path) -> None:
    instances = tmp_path / "many.jsonl"
    write_instances(instances, 120)  # 720 pairs: 1440 requests
    out = tmp_path / "out.jsonl"
    with start_server(latency_s=0.05) as server:
        persona = hindsight_persona(
            tmp_path, server, options={"max_concurrency": CONCURRENCY, "timeout_s": 5.0}
        )
        args = annotate_args(persona, out, tmp_path / "cache.sqlite", "--pairs", str(instances))
        process = simfarm_cli(*args)
        _wait_for(server, 400, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()
        assert server.stats()["completed"] < 1440
        rerun = simfarm_cli(*args)
        _, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr
        stats = server.stats()
    records = read_jsonl(out)
    assert len(records) == 720 and all(r["failure"] is None for r in records)
    assert stats["distinct_prompts"] == 1440
    assert stats["resent"] <= CONCURRENCY, stats  # at most what was in flight at the kill


@pytest.mark.slow
def test_annotate_with_the_embedded_hindsight_persona(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    sent = []
    for name in ("first.jsonl", "second.jsonl"):
        args = annotate_args("hindsight_embedded", tmp_path / name, cache, "--limit", "2")
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        sent.append(requests_sent(result.output))
    assert sent == [4, 0]  # 2 pairs, foresight + hindsight; the rerun asks nothing
    first, second = read_jsonl(tmp_path / "first.jsonl"), read_jsonl(tmp_path / "second.jsonl")
    assert len(first) == 2 and all(r["cached"] for r in second)
    for record in first:
        assert record["failure"] is None and record["utility_1"] is not None
        assert 1.0 <= record["foresight_preference"] <= 2.0
        assert 1.0 <= record["hindsight_preference"] <= 2.0
    assert [r["hindsight_preference"] for r in second] == [r["hindsight_preference"] for r in first]
