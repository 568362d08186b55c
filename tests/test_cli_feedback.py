"""Ratings and critiques through `simfarm annotate`, `validate`, `pairs-from-ratings` and
`personas`, against the loopback fake OpenAI server with scripted answers (real HTTP)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.cli.common import EXIT_ITEMS_FAILED
from simfarm.paths import bundled_data_dir
from simfarm.testing.openai_server import RunningServer, start_server
from tests.test_cli_annotate import read_jsonl, simfarm_cli

runner = CliRunner()

GOOD_RATING = (
    "instruction_following: 4 - does what was asked.\n"
    "honesty: 5 - no overclaiming.\n"
    "truthfulness: 3 - one dubious claim.\n"
    "helpfulness: 4 - useful.\n"
    "overall: 7"
)


def write_script(path: Path, rules: list[tuple[str, list[str]]]) -> str:
    path.write_text(json.dumps([{"match": m, "replies": r} for m, r in rules]))
    return str(path)


def persona_at(folder: Path, server: RunningServer, base: str, name: str, **fields) -> str:
    """A copy of a bundled persona (with its prompts and rubrics) pointed at ``server``."""
    bundled = bundled_data_dir("annotators")
    spec = yaml.safe_load((bundled / f"{base}.yaml").read_text())
    spec["backend"] = {
        "name": "openai",
        "model": "fake",
        "options": {
            "base_url": server.base_url,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.1,
            "timeout_s": 5.0,
            **fields.pop("options", {}),
        },
    }
    spec.update(fields)
    for sub in ("prompts", "rubrics"):
        if not (folder / sub).exists():
            shutil.copytree(bundled / sub, folder / sub)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return name


def outputs_file(path: Path, n: int, stem: str = "answer") -> Path:
    records = [
        {"instruction": f"Task {i}: explain item {i}.", "output": f"{stem} {i}", "generator": "m"}
        for i in range(n)
    ]
    path.write_text(json.dumps(records))
    return path


def annotate(folder: Path, persona: str, out: Path, *inputs: str):
    return runner.invoke(
        app,
        [
            "annotate",
            "--persona",
            persona,
            "--annotators-dir",
            str(folder),
            *inputs,
            "--out",
            str(out),
            "--cache-path",
            str(folder / "cache.sqlite"),
            "--quiet",
        ],
    )


def test_ratings_end_to_end_with_logprob_scores_cached_on_rerun(tmp_path: Path) -> None:
    script = write_script(tmp_path / "script.json", [("", [GOOD_RATING])])
    outputs = outputs_file(tmp_path / "outputs.json", 3)
    out = tmp_path / "ratings.jsonl"
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "ultrafeedback_rating", "rater")
        first = annotate(tmp_path, name, out, "--model-outputs", str(outputs))
        assert first.exit_code == 0, first.output
        sent = server.stats()["requests"]
        second = annotate(tmp_path, name, tmp_path / "again.jsonl", "--model-outputs", str(outputs))
        assert second.exit_code == 0, second.output
        assert server.stats()["requests"] == sent == 3  # the rerun asked nothing
    records = read_jsonl(out)
    assert [r["output"] for r in records] == ["answer 0", "answer 1", "answer 2"]
    record = records[0]
    assert record["scores"] == {
        "instruction_following": 4.0,
        "honesty": 5.0,
        "truthfulness": 3.0,
        "helpfulness": 4.0,
    }
    assert record["rationales"]["truthfulness"] == "one dubious claim."
    assert record["overall"] == 7.0
    # The fake server's score-token distribution: n .6, n-1 .25, n+1 .15 -> n - 0.1; a 5 on
    # a 1-5 scale loses its 6 (renormalised: (5*.6 + 4*.25) / .85).
    expected = record["expected_scores"]
    assert expected["instruction_following"] == pytest.approx(3.9)
    assert expected["honesty"] == pytest.approx((5 * 0.6 + 4 * 0.25) / 0.85)
    assert record["score"] == pytest.approx(6.9) == expected["overall"]
    assert all(r["cached"] for r in read_jsonl(tmp_path / "again.jsonl"))
    assert "requests sent" in second.output and "cache hits" in second.output


def test_unreadable_ratings_are_retried_then_failed_by_kind_and_never_cached(
    tmp_path: Path,
) -> None:
    out_of_range = GOOD_RATING.replace("helpfulness: 4", "helpfulness: 9")
    missing = GOOD_RATING.replace("honesty: 5 - no overclaiming.\n", "")
    script = write_script(
        tmp_path / "script.json",
        [
            ("answer 0", [out_of_range, GOOD_RATING]),  # recovers on the re-send
            ("answer 1", [missing]),  # never readable
            ("", [GOOD_RATING]),
        ],
    )
    outputs = outputs_file(tmp_path / "outputs.json", 3)
    out = tmp_path / "ratings.jsonl"
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "ultrafeedback_rating", "rater")
        first = annotate(tmp_path, name, out, "--model-outputs", str(outputs))
        assert first.exit_code == EXIT_ITEMS_FAILED, first.output
        assert server.stats()["requests"] == 2 + 2 + 1  # greedy: one identical re-send
        records = read_jsonl(out)
        assert records[0]["scores"]["helpfulness"] == 4.0 and records[0]["failure"] is None
        assert records[1]["failure"]["kind"] == "parse"
        assert "honesty" in records[1]["failure"]["message"]
        assert records[1]["scores"] == {} and records[1]["score"] is None
        again = annotate(tmp_path, name, out, "--model-outputs", str(outputs))
        assert again.exit_code == EXIT_ITEMS_FAILED
        assert server.stats()["requests"] == 5 + 2  # only the unreadable one is asked again


def test_absolute_critique_with_reference_answers(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "script.json",
        [
            ("answer 2", ["Feedback: Off the rubric. [RESULT] 9"]),
            ("", ["Feedback: Accurate but terse; the reference adds an example. [RESULT] 4"]),
        ],
    )
    outputs = outputs_file(tmp_path / "outputs.json", 3)
    references = outputs_file(tmp_path / "references.json", 3, stem="reference answer")
    out = tmp_path / "critiques.jsonl"
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "prometheus_helpfulness", "critic")
        args = ["--model-outputs", str(outputs), "--reference-outputs", str(references)]
        result = annotate(tmp_path, name, out, *args)
        assert result.exit_code == EXIT_ITEMS_FAILED, result.output
        sent = server.stats()["requests"]
        prompts = [m["messages"][-1]["content"] for m in server.requests()]
        again = annotate(tmp_path, name, out, *args)
        assert server.stats()["requests"] == sent + 2  # only the out-of-range one again
        assert again.exit_code == EXIT_ITEMS_FAILED
    records = read_jsonl(out)
    assert records[0]["critique"] == "Accurate but terse; the reference adds an example."
    assert records[0]["score"] == 4.0 and records[0]["rubric"] == "helpfulness"
    assert records[0]["reference"] == "reference answer 0"
    assert records[2]["failure"]["kind"] == "parse" and records[2]["critique"] is None
    assert any("reference answer 1" in p and "Score 5: The response fully" in p for p in prompts)


def test_relative_critique_maps_the_verdict_back_to_the_item_order(tmp_path: Path) -> None:
    script = write_script(tmp_path / "script.json", [("", ["Feedback: A is clearer. [RESULT] A"])])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"instruction": f"Task {i}", "output_1": f"one {i}", "output_2": f"two {i}"})
            + "\n"
            for i in range(8)
        )
    )
    out = tmp_path / "relative.jsonl"
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "prometheus_helpfulness_relative", "versus")
        result = annotate(tmp_path, name, out, "--pairs", str(pairs))
        assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert all(r["critique"] == "A is clearer." for r in records)
    # "A" is whichever output was shown first: output_1 unless the pair was swapped.
    assert all(r["preference"] == (2.0 if r["swapped"] else 1.0) for r in records)
    assert {r["swapped"] for r in records} == {True, False}


def validate_topical_chat(annotators_dir: Path, persona: str, *extra: str) -> Any:
    """``simfarm validate --set topical_chat`` with a persona from ``annotators_dir``."""
    return runner.invoke(
        app,
        [
            "validate",
            "--set",
            "topical_chat",
            "--annotator",
            persona,
            "--annotators-dir",
            str(annotators_dir),
            "--quiet",
            *extra,
        ],
    )


def test_validate_a_rating_persona_on_topical_chat_reports_per_aspect_correlations(
    tmp_path: Path,
) -> None:
    def rating(*scores: int) -> str:
        """The answer after the persona's prefill (``understandability:``)."""
        names = ["naturalness", "coherence", "engagingness", "groundedness", "overall"]
        lines = [f"{a}: {s}" for a, s in zip(names, scores[1:], strict=True)]
        return "\n".join([f" {scores[0]}", *lines])

    good, poor = rating(1, 3, 3, 3, 1, 5), rating(0, 1, 2, 1, 0, 2)
    # Responses asking a question (they end in "?") get the good rating, the rest the poor.
    script = write_script(
        tmp_path / "script.json",
        [(r"Response: [^\n]*\?\s*understandability:$", [good]), ("", [poor])],
    )
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "topical_chat_rating", "usr_rater")
        result = validate_topical_chat(
            tmp_path, name, "--limit", "5", "--out", str(tmp_path / "report")
        )
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 30  # 5 contexts x 6 systems
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    aspects = {a["aspect"]: a for a in report["rating"]["aspects"]}
    assert set(aspects) == {
        "understandability",
        "naturalness",
        "coherence",
        "engagingness",
        "groundedness",
        "overall",
    }
    assert all(a["n"] == 30 for a in aspects.values())
    assert all(a["spearman"] is not None and -1 <= a["spearman"] <= 1 for a in aspects.values())
    assert "Likert correlation" in result.output and "engagingness" in result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Correlation with human Likert scores" in markdown
    assert "## Overall" not in markdown and "samples per pair" not in markdown


@pytest.mark.parametrize("flags", [["--samples", "2"], ["--single-order"]])
def test_validate_refuses_pairwise_flags_for_a_rating_persona(
    tmp_path: Path, flags: list[str]
) -> None:
    """--samples / --single-order mean nothing to a rating annotator: refused before any
    request, naming the flag, instead of being silently ignored."""
    script = write_script(tmp_path / "script.json", [("", [" 1"])])
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "topical_chat_rating", "usr_rater")
        result = validate_topical_chat(tmp_path, name, "--limit", "1", *flags)
        assert server.stats()["requests"] == 0
    assert result.exit_code == 2, result.output
    assert flags[0] in result.output and "rating annotator" in result.output


def test_pairs_from_ratings_writes_records_the_recipes_read(tmp_path: Path) -> None:
    from simfarm.training.data import load_preference_pairs

    high = GOOD_RATING.replace("overall: 7", "overall: 9")
    script = write_script(tmp_path / "script.json", [("best", [high]), ("", [GOOD_RATING])])
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            [
                {"instruction": f"Task {i}", "output": f"{kind} {i}", "generator": kind}
                for i in range(3)
                for kind in ("plain", "best", "other")
            ]
        )
    )
    ratings = tmp_path / "ratings.jsonl"
    with start_server(script=script) as server:
        name = persona_at(tmp_path, server, "ultrafeedback_rating", "rater")
        assert annotate(tmp_path, name, ratings, "--model-outputs", str(outputs)).exit_code == 0
    pairs = tmp_path / "pairs.jsonl"
    result = runner.invoke(
        app,
        ["pairs-from-ratings", str(ratings), "--out", str(pairs), "--strategy", "best-vs-random"],
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(pairs)
    assert len(records) == 3
    for record in records:
        winner = record["output_1"] if record["preference"] == 1.0 else record["output_2"]
        assert winner.startswith("best")
    loaded, _stats = load_preference_pairs(pairs)
    assert all(p.chosen.startswith("best") for p in loaded)
    bad = runner.invoke(
        app, ["pairs-from-ratings", str(ratings), "--out", str(pairs), "--score", "fluency"]
    )
    assert bad.exit_code != 0 and "fluency" in bad.output


def test_personas_list_and_validate_cover_ratings_critiques_and_rubrics(tmp_path: Path) -> None:
    listing = simfarm_cli("personas", "list", env={"COLUMNS": "250"})
    listed, errors = listing.communicate(timeout=120)
    assert listing.returncode == 0, errors
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in listed.splitlines()
        if line.startswith("│")
    }
    assert rows["ultrafeedback_rating"] == rows["topical_chat_rating"] == "rating"
    assert rows["prometheus_helpfulness"] == rows["prometheus_helpfulness_relative"] == "critique"
    valid = runner.invoke(app, ["personas", "validate"])
    assert valid.exit_code == 0, valid.output
    assert "rubrics/helpfulness.yaml" in valid.output
    # A critique persona whose rubric is malformed fails, naming the rubric's file and line.
    shutil.copytree(bundled_data_dir("annotators") / "prompts", tmp_path / "prompts")
    (tmp_path / "rubrics").mkdir()
    rubric = tmp_path / "rubrics" / "broken.yaml"
    rubric.write_text("criteria: Helpful?\nscores:\n  1: no\n  2: yes\nextra_field: 1\n")
    spec = yaml.safe_load(
        (bundled_data_dir("annotators") / "prometheus_helpfulness.yaml").read_text()
    )
    spec["rubric"] = "rubrics/broken.yaml"
    (tmp_path / "critic.yaml").write_text(yaml.safe_dump(spec))
    for target in (str(rubric), "critic"):
        result = runner.invoke(
            app, ["personas", "validate", target, "--annotators-dir", str(tmp_path)]
        )
        assert result.exit_code == 2, result.output
        assert f"{rubric}:5: extra_field: Extra inputs are not permitted" in result.output


KILL_CONCURRENCY = 16


def pairs_file(path: Path, n: int) -> Path:
    with path.open("w") as out:
        for i in range(n):
            record = {"instruction": f"Task {i}: explain item {i}.", "output_1": f"one {i}"}
            out.write(json.dumps({**record, "output_2": f"a longer answer two for {i}"}) + "\n")
    return path


def kill_9_then_rerun(
    folder: Path,
    base: str,
    replies: list[str],  # every chat reply; none for scoring personas
    inputs: tuple[str, Path],
    requests_per_item: int = 1,
) -> tuple[list[dict], dict]:
    """Run ``simfarm annotate`` with ``base`` (a bundled persona pointed at a slow loopback
    fake server), SIGKILL it mid-run, run it again to the end; the records and the server's
    counts. The caller checks that no answer paid for before the kill was asked again
    (``resent`` at most what was in flight) and that every item ends annotated."""
    from tests.test_cli_annotate import _wait_for

    script = write_script(folder / "script.json", [("", replies)]) if replies else None
    out = folder / "feedback.jsonl"
    with start_server(latency_s=0.05, script=script) as server:
        options = {"max_concurrency": KILL_CONCURRENCY}
        name = persona_at(folder, server, base, "killed", options=options)
        args = ["annotate", "--persona", name, "--annotators-dir", str(folder), *map(str, inputs)]
        args += ["--out", str(out), "--cache-path", str(folder / "cache.sqlite"), "--quiet"]
        text = inputs[1].read_text()
        items = len(json.loads(text)) if inputs[1].suffix == ".json" else len(text.splitlines())
        process = simfarm_cli(*args)
        _wait_for(server, items * requests_per_item // 4, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()
        assert server.stats()["completed"] < items * requests_per_item
        rerun = simfarm_cli(*args)
        _stdout, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr
        stats = server.stats()
    records = read_jsonl(out)
    assert len(records) == items
    assert stats["distinct_prompts"] == items * requests_per_item
    assert stats["resent"] <= KILL_CONCURRENCY, stats  # at most what was in flight at the kill
    return records, stats


@pytest.mark.slow
def test_kill_9_mid_rating_run_then_rerun_loses_nothing(tmp_path: Path) -> None:
    outputs = ("--model-outputs", outputs_file(tmp_path / "outputs.json", 1500))
    records, _ = kill_9_then_rerun(tmp_path, "ultrafeedback_rating", [GOOD_RATING], outputs)
    assert all(r["overall"] == 7.0 for r in records)


@pytest.mark.slow
def test_kill_9_mid_absolute_critique_run_then_rerun_loses_nothing(tmp_path: Path) -> None:
    outputs = ("--model-outputs", outputs_file(tmp_path / "outputs.json", 1500))
    reply = "Feedback: Clear and complete. [RESULT] 4"
    records, _ = kill_9_then_rerun(tmp_path, "prometheus_helpfulness", [reply], outputs)
    assert all(r["score"] == 4.0 and r["failure"] is None for r in records)
    assert all(r["critique"] == "Clear and complete." for r in records)


@pytest.mark.slow
def test_kill_9_mid_relative_critique_run_then_rerun_loses_nothing(tmp_path: Path) -> None:
    pairs = ("--pairs", pairs_file(tmp_path / "pairs.jsonl", 1500))
    reply = "Feedback: A is clearer. [RESULT] A"
    records, _ = kill_9_then_rerun(tmp_path, "prometheus_helpfulness_relative", [reply], pairs)
    assert all(r["preference"] == (2.0 if r["swapped"] else 1.0) for r in records)
    assert all(r["critique"] == "A is clearer." and r["failure"] is None for r in records)
