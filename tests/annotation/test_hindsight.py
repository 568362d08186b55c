"""Hindsight simulation (RLHS) end to end: scenario files, the three stages through the real
run against the loopback server and the embedded model, the report, cache and kill -9."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simfarm.annotation import annotate, judges_for, load_annotator
from simfarm.annotation.hindsight import HindsightJudge
from simfarm.annotation.scenario import load_scenario, pairs_of
from simfarm.cli import app
from simfarm.errors import ConfigError
from simfarm.paths import bundled_data_dir
from simfarm.scenarios.shopping import generate_instances, simulate_outcome, write_instances
from simfarm.testing.openai_server import RunningServer, start_server
from tests.test_cli_annotate import CONCURRENCY, simfarm_cli

runner = CliRunner()
SCENARIOS = bundled_data_dir("annotators") / "scenarios"


def hindsight_persona(
    folder: Path, server: RunningServer, base: str = "hindsight_shopping", **fields: object
) -> Path:
    """A bundled hindsight persona pointed at ``server``, its scenario by absolute path."""
    spec = yaml.safe_load((bundled_data_dir("annotators") / f"{base}.yaml").read_text())
    spec["backend"]["options"] = {
        "base_url": server.base_url,
        "timeout_s": 5.0,
        "backoff_base_s": 0.01,
        **fields.pop("options", {}),  # type: ignore[dict-item]
    }
    spec["scenario"] = str(SCENARIOS / f"{spec['scenario']}.yaml")
    spec.update(fields)
    path = folder / f"{base}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def report_args(persona: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "hindsight",
        "report",
        "--annotator",
        str(persona),
        "--out",
        str(out),
        "--cache-path",
        str(cache),
        "--quiet",
        *extra,
    ]


def test_shipped_instances_are_the_generators_output() -> None:
    lines = (SCENARIOS / "shopping_instances.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == generate_instances(12)


def test_the_true_utility_ranks_honest_advice_first() -> None:
    for instance in generate_instances(12):
        utilities = {
            r["id"]: simulate_outcome(instance["context"], instance["hidden"], r["text"]).utility
            for r in instance["responses"]
        }
        assert max(utilities, key=lambda k: utilities[k]) == "honest"
        assert utilities["overclaim"] < 0.5 and utilities["upsell"] < 1.0


def test_report_against_a_loopback_server_then_a_cached_rerun(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server(policy="longest") as server:
        persona = hindsight_persona(tmp_path, server)
        first = runner.invoke(app, report_args(persona, tmp_path / "a", cache))
        assert first.exit_code == 0, first.output
        sent = server.requests()
        assert server.stats()["requests"] == 144  # 72 pairs: foresight + hindsight each
        again = runner.invoke(app, report_args(persona, tmp_path / "b", cache))
        assert again.exit_code == 0, again.output
        assert server.stats()["requests"] == 144  # the rerun asks nothing
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["n_pairs"] == 72 and report["n_decisive"] == 72 and report["n_failed"] == 0
    assert report["requests_sent"] == 144
    assert 0.0 <= report["foresight_agreement"] <= 1.0
    assert {row["responses"] for row in report["by_response_pair"]} >= {"honest vs upsell"}
    rerun = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rerun["requests_sent"] == 0 and rerun["cache_hits"] == 144
    assert rerun["foresight_agreement"] == report["foresight_agreement"]
    assert "| foresight (before the outcome) |" in (tmp_path / "a" / "report.md").read_text()
    records = [json.loads(line) for line in (tmp_path / "a" / "annotations.jsonl").open()]
    # Foresight and hindsight side by side; the outcomes are the scenario's computed ones,
    # and the hindsight prompt (only) carried them to the judge.
    instances = {i["id"]: i for i in generate_instances(12)}
    prompts = [m["content"] for r in sent for m in r["messages"] if m["role"] == "user"]
    for record in records:
        assert record["foresight_preference"] in (1.0, 2.0)
        assert record["hindsight_preference"] in (1.0, 2.0)
        instance = instances[record["instance_id"]]
        expected = simulate_outcome(instance["context"], instance["hidden"], record["output_1"])
        assert record["outcome_1"] == expected.text and record["utility_1"] == expected.utility
        for n in ("1", "2"):
            shown = f"{record['output_' + n]}\n\nWhat happened: {record['outcome_' + n]}\n"
            assert any(shown in p for p in prompts), "each outcome follows its own response"
    foresight = [p for p in prompts if "followed the advice" not in p]
    assert len(foresight) == 72 and not any("What happened" in p for p in foresight)


def test_a_world_model_is_a_stage_of_requests_shared_by_pairs(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    loaded_items = pairs_of("shopping_world_model", load_scenario("shopping").load_instances())
    with start_server(policy="longest") as server:
        persona = hindsight_persona(tmp_path, server, base="hindsight_world_model")
        loaded = load_annotator(str(persona))
        first = annotate(loaded_items, loaded, cache_path=cache)
        # 72 foresight + 48 outcomes (12 instances x 4 responses, each simulated once
        # although every response is in 3 pairs) + 72 hindsight.
        assert server.stats()["requests"] == 192
        world_model_prompts = [
            r for r in server.requests() if "The shopper buys" in json.dumps(r["messages"])
        ]
        again = annotate(loaded_items, loaded, cache_path=cache)
        assert server.stats()["requests"] == 192
    assert len(world_model_prompts) == 48
    assert any('"Everon' in json.dumps(r) for r in world_model_prompts)  # hidden catalog
    assert again.summary.requests_sent == 0
    for record in first.annotations:
        assert record.failure is None
        # The fake server answers every prompt with a verdict line: the world model's text
        # is data, recorded as the outcome and shown to the hindsight judge.
        assert record.outcome_1 in ("Output (a)", "Output (b)")
        assert record.utility_1 is not None and record.true_preference in (1.0, 2.0)
    assert first.summary.n_decisive == 72


def test_a_failed_stage_fails_the_record_and_is_not_cached(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    items = pairs_of("shopping", load_scenario("shopping").load_instances())[:12]
    with start_server(fault_rate=1.0, fault_kinds="garbled") as server:
        persona = hindsight_persona(tmp_path, server)
        result = annotate(items, load_annotator(str(persona)), cache_path=cache)
        port = server.port
    assert result.summary.failures_by_kind == {"parse": 12}
    assert all(r.foresight_preference is None for r in result.annotations)
    with start_server(port=port) as server:
        fixed = annotate(items, load_annotator(str(persona)), cache_path=cache)
        assert server.stats()["requests"] == 24
    assert fixed.summary.n_failed == 0


def write_scenario(folder: Path, text: str) -> Path:
    (folder / "scenarios").mkdir(exist_ok=True)
    shutil_copy = (SCENARIOS / "prompts", folder / "scenarios" / "prompts")
    if not shutil_copy[1].exists():
        import shutil

        shutil.copytree(*shutil_copy)
    (folder / "scenarios" / "inst.jsonl").write_text(
        (SCENARIOS / "shopping_instances.jsonl").read_text()
    )
    path = folder / "scenarios" / "bad.yaml"
    path.write_text(text)
    return path


GOOD = (SCENARIOS / "shopping.yaml").read_text().replace("shopping_instances.jsonl", "inst.jsonl")


@pytest.mark.parametrize(
    ("broken", "field", "on_line"),
    [
        (GOOD.replace("simulate_outcome", "simulate_outcom"), "outcome.function", "function:"),
        (GOOD.replace("hidden_fields:", "hiden_fields:"), "hiden_fields", "hiden_fields:"),
        (GOOD.replace("prompts/shopping_hindsight.txt", "nope.txt"), "hindsight_template", "nope"),
    ],
)
def test_validate_names_file_line_and_field_of_a_malformed_scenario(
    tmp_path: Path, broken: str, field: str, on_line: str
) -> None:
    import re

    path = write_scenario(tmp_path, broken)
    result = runner.invoke(app, ["personas", "validate", str(path)])
    assert result.exit_code == 2
    output = result.output.replace("\n", " ")
    found = re.search(rf"bad.yaml:(\d+): {re.escape(field)}:", output)
    assert found is not None, result.output
    assert on_line in broken.splitlines()[int(found[1]) - 1]


def test_validate_names_the_line_of_a_malformed_instance(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, GOOD)
    lines = (tmp_path / "scenarios" / "inst.jsonl").read_text().splitlines()
    bad = json.loads(lines[4])
    del bad["hidden"]["need"]
    lines[4] = json.dumps(bad)
    (tmp_path / "scenarios" / "inst.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["personas", "validate", str(path)])
    assert result.exit_code == 2
    assert "inst.jsonl:5 (record 4): field 'hidden.need': missing -> error" in result.output
    fine = runner.invoke(app, ["personas", "validate"])
    assert fine.exit_code == 0, fine.output
    assert "shopping_world_model.yaml" in fine.output and "hindsight_shopping" in fine.output


def test_personas_list_shows_hindsight_personas_and_a_pool() -> None:
    result = runner.invoke(app, ["personas", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "hindsight" in rows["hindsight_shopping"]
    assert "pool" in rows["alpaca_farm_pool"]
    assert "likelihood" in rows["likelihood_follow_up"]


def test_a_pool_mixing_kinds_is_refused(tmp_path: Path) -> None:
    pool = {"kind": "pool", "members": [{"persona": "hindsight_shopping"}, {"persona": "longest"}]}
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(pool))
    with pytest.raises(ConfigError, match=r"mixes judge kinds \(hindsight: hindsight_shopping"):
        judges_for(load_annotator("mixed", [tmp_path]))
    args = ["personas", "validate", "mixed", "--annotators-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "mixes judge kinds" in result.output
    knob = {"kind": "pool", "members": [{"persona": "hindsight_shopping", "position_bias": 0.2}]}
    (tmp_path / "knob.yaml").write_text(yaml.safe_dump(knob))
    with pytest.raises(ConfigError, match=r"members.0.position_bias: a hindsight persona has"):
        load_annotator("knob", [tmp_path])


@pytest.mark.slow
def test_kill_9_mid_report_then_rerun_pays_only_what_was_in_flight(tmp_path: Path) -> None:
    instances = tmp_path / "many.jsonl"
    write_instances(instances, 120)  # 720 pairs: 1440 requests
    cache = tmp_path / "cache.sqlite"
    with start_server(latency_s=0.05) as server:
        persona = hindsight_persona(
            tmp_path, server, options={"max_concurrency": CONCURRENCY, "timeout_s": 5.0}
        )
        args = report_args(persona, tmp_path / "out", cache, "--instances", str(instances))
        process = simfarm_cli(*args)
        from tests.test_cli_annotate import _wait_for

        _wait_for(server, 400, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "out" / "report.json").exists()
        assert server.stats()["completed"] < 1440
        rerun = simfarm_cli(*args)
        _, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr
        stats = server.stats()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_pairs"] == 720 and report["n_failed"] == 0
    assert stats["distinct_prompts"] == 1440
    assert stats["resent"] <= CONCURRENCY, stats


@pytest.mark.slow
def test_hindsight_on_the_embedded_model(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    args = ["hindsight", "report", "--annotator", "hindsight_embedded", "--limit", "3"]
    args += ["--out", str(tmp_path / "a"), "--cache-path", str(cache), "--quiet"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["n_pairs"] == 3 and report["n_failed"] == 0 and report["requests_sent"] == 6
    for line in (tmp_path / "a" / "annotations.jsonl").open():
        record = json.loads(line)
        assert 1.0 <= record["foresight_preference"] <= 2.0
        assert 1.0 <= record["hindsight_preference"] <= 2.0
    args[args.index(str(tmp_path / "a"))] = str(tmp_path / "b")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())["requests_sent"] == 0


def test_a_hindsight_judge_is_a_judge_of_its_own_kind() -> None:
    judge = judges_for(load_annotator("hindsight_shopping"))
    assert isinstance(judge, HindsightJudge) and judge.kind == "hindsight"
