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


def instances_with_two_bad(path: Path) -> list[str]:
    """Three instances (6 pairs each): the second has no ``context`` (nothing can repair
    that), the third a JSON number as its last response's text (``coerce`` repairs it).
    Returns the three instance ids."""
    write_instances(path, 3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    del records[1]["context"]
    records[2]["responses"][3]["text"] = 404
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [r["id"] for r in records]


def test_on_bad_record_applies_to_scenario_instances(tmp_path: Path) -> None:
    instances = tmp_path / "bad.jsonl"
    first, _, third = instances_with_two_bad(instances)
    missing = f"{instances}:2 (record 1): field 'context': missing"
    number = f"{instances}:3 (record 2): field 'responses[3].text': expected text, got int 404"
    with start_server(policy="longest") as server:
        persona = hindsight_persona(tmp_path, server)

        def run(name: str, *policy: str) -> tuple[int, str]:
            """Exit code and stderr (where every bad record is listed) of one run."""
            args = annotate_args(persona, tmp_path / name, tmp_path / f"{name}.sqlite")
            result = runner.invoke(app, [*args, "--pairs", str(instances), *policy])
            return result.exit_code, result.stderr.replace("\n", "")

        code, stderr = run("error.jsonl", "--on-bad-record", "error")
        assert code == 2, stderr
        assert f"{missing} -> error" in stderr and f"{number} -> error" in stderr
        assert not (tmp_path / "error.jsonl").exists()
        assert server.stats()["requests"] == 0  # stopped before any request

        code, stderr = run("skip.jsonl", "--on-bad-record", "skip")
        assert code == 0, stderr
        assert f"{missing} -> skipped" in stderr and f"{number} -> skipped" in stderr
        assert server.stats()["requests"] == 12  # one instance: 6 pairs, foresight + hindsight

        code, stderr = run("coerce.jsonl")  # the default: repair what can be, skip the rest
        assert code == 0, stderr
        assert f"{missing} -> skipped" in stderr and f"{number} -> coerced" in stderr
        assert server.stats()["requests"] == 12 + 24  # two instances (a fresh cache)
    skipped = read_jsonl(tmp_path / "skip.jsonl")
    assert len(skipped) == 6 and {r["instance_id"] for r in skipped} == {first}
    coerced = read_jsonl(tmp_path / "coerce.jsonl")
    assert len(coerced) == 12 and {r["instance_id"] for r in coerced} == {first, third}
    assert sum("404" in (r["output_1"], r["output_2"]) for r in coerced) == 3


@pytest.mark.parametrize("policy", ["error", "skip", "coerce"])
def test_every_instance_bad_is_refused_before_any_request(tmp_path: Path, policy: str) -> None:
    instances = tmp_path / "bad.jsonl"
    write_instances(instances, 2)
    records = [json.loads(line) for line in instances.read_text().splitlines()]
    for record in records:
        del record["hidden"]["need"]
    instances.write_text("".join(json.dumps(r) + "\n" for r in records))
    with start_server(policy="longest") as server:
        args = annotate_args(
            hindsight_persona(tmp_path, server), tmp_path / "o.jsonl", tmp_path / "c"
        )
        result = runner.invoke(app, [*args, "--pairs", str(instances), "--on-bad-record", policy])
        assert server.stats()["requests"] == 0
    assert result.exit_code == 2
    output = result.stderr.replace("\n", "")
    action = {"error": "error", "skip": "skipped", "coerce": "skipped"}[policy]
    for line in (1, 2):
        assert (
            f"{instances}:{line} (record {line - 1}): field 'hidden.need': missing -> {action}"
            in output
        )
    if policy != "error":
        assert f"{instances}: no instances to judge" in output
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
