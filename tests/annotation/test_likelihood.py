"""Likelihood annotators: scoring requests over the real OpenAI protocol (``echo``) and on
the embedded model, through the real run; the verdict's tie band and its calibration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from simfarm.annotation import annotate, load_annotator
from simfarm.annotation.likelihood import calibrate_tie_band, verdict
from simfarm.testing.openai_server import RunningServer, echo_logprobs, start_server
from simfarm.types import PairwiseItem


def items(n: int, instruction: str | None = None) -> list[PairwiseItem]:
    return [
        PairwiseItem(
            instruction=instruction or f"Question {i}: what is a {i}?",
            output_1=f"It is number {i}, plainly.",
            output_2=f"A {i} is a value; here is a longer, friendlier explanation of {i}.",
        )
        for i in range(n)
    ]


def persona(folder: Path, server: RunningServer, method: str, **fields: object) -> str:
    options = {"base_url": server.base_url, "timeout_s": 5.0, **fields.pop("options", {})}  # type: ignore[dict-item]
    spec = {
        "kind": "likelihood",
        "method": method,
        "backend": {"name": "openai", "model": "fake", "options": options},
        **fields,
    }
    (folder / f"{method}.yaml").write_text(yaml.safe_dump(spec))
    return str(folder / f"{method}.yaml")


def total(text: str) -> float:
    return sum(lp or 0.0 for lp in echo_logprobs(text)[1])


def expected(item: PairwiseItem, method: str) -> tuple[float, float]:
    """What each output should score, from the fake model's log-probabilities."""
    context = f"User: {item.instruction}\n\nAssistant:"
    found = []
    for output in (item.output_1, item.output_2):
        text = f"{context} {output}"
        if method == "follow_up":
            found.append(
                total(text + "\nUser: Thank you, that is exactly what I needed.")
                - total(text + "\nUser: That is wrong and does not answer my question.")
            )
        else:
            tokens = len(echo_logprobs(text)[0]) - len(echo_logprobs(context)[0])
            found.append((total(text) - total(context)) / tokens)
    return found[0], found[1]


SCORES = re.compile(r"score_1=(-?[\d.]+) score_2=(-?[\d.]+)")


@pytest.mark.parametrize(
    ("method", "per_item", "fields"),
    [("follow_up", 4, {}), ("response", 3, {"per_token": True})],
)
def test_scores_over_the_echo_protocol_cached(
    tmp_path: Path, method: str, per_item: int, fields: dict[str, object]
) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server() as server:
        name = persona(tmp_path, server, method, **fields)
        first = annotate(items(10), load_annotator(name), cache_path=cache)
        assert server.stats()["requests"] == 10 * per_item
        prompts = [r["prompt"] for r in server.requests()]
        again = annotate(items(10), load_annotator(name), cache_path=cache)
        assert server.stats()["requests"] == 10 * per_item
    assert again.summary.requests_sent == 0
    assert [a.preference for a in again.annotations] == [a.preference for a in first.annotations]
    preferences = set()
    for annotation in first.annotations:
        assert annotation.failure is None
        found = SCORES.search(annotation.raw_completion or "")
        assert found is not None
        score_1, score_2 = float(found[1]), float(found[2])
        # The scores are the fake model's conditional log-probabilities, recomputed here.
        assert (score_1, score_2) == pytest.approx(expected(annotation, method), abs=2e-4)
        assert annotation.preference == verdict(score_1, score_2, 0.0)
        preferences.add(annotation.preference)
    assert preferences == {1.0, 2.0}  # the fake model's scores depend on the text
    assert all("User: Question" in p for p in prompts)
    if method == "follow_up":
        assert sum("exactly what I needed" in p for p in prompts) == 20


def test_the_context_is_scored_once_for_both_outputs_and_every_item(tmp_path: Path) -> None:
    with start_server() as server:
        name = persona(tmp_path, server, "response")
        annotate(items(4, instruction="Same question?"), load_annotator(name), use_cache=False)
        # 1 shared context + 2 outputs per item.
        assert server.stats()["requests"] == 1 + 4 * 2


def test_a_backend_that_generates_instead_of_scoring_fails_the_item(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server() as server:
        name = persona(
            tmp_path, server, "follow_up", options={"extra_body": {"echo": False, "max_tokens": 4}}
        )
        result = annotate(items(3), load_annotator(name), cache_path=cache)
        assert result.summary.failures_by_kind == {"parse": 3}
        assert "instead of scoring the prompt" in str(result.annotations[0].failure)
        annotate(items(3), load_annotator(name), cache_path=cache)
        assert server.stats()["requests"] == 24  # unreadable answers are never cached


def test_a_tie_band_makes_close_scores_ties(tmp_path: Path) -> None:
    with start_server() as server:
        name = persona(tmp_path, server, "response", tie_band=1000.0)
        result = annotate(items(6), load_annotator(name), use_cache=False)
    assert {a.preference for a in result.annotations} == {1.5}


def test_verdict_and_tie_band_calibration() -> None:
    assert verdict(-3.0, -2.0, 0.5) == 2.0
    assert verdict(-2.0, -3.0, 0.5) == 1.0
    assert verdict(-2.0, -2.4, 0.5) == 1.5
    differences = [0.1, -0.2, 0.3, -0.4, 0.5, 0.6, -0.7, 0.8, 0.9, -1.0]
    band = calibrate_tie_band(differences, human_tie_rate=0.3)
    assert band == 0.3
    assert sum(verdict(0.0, d, band) == 1.5 for d in differences) == 3
    assert calibrate_tie_band(differences, 0.0) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["likelihood_follow_up", "likelihood_response"])
def test_likelihood_personas_on_the_embedded_model(tmp_path: Path, name: str) -> None:
    cache = tmp_path / "cache.sqlite"
    pairs = items(2)
    first = annotate(pairs, name, cache_path=cache)
    assert first.summary.n_failed == 0 and first.summary.requests_sent > 0
    for annotation in first.annotations:
        assert annotation.preference in (1.0, 1.5, 2.0)
        assert SCORES.search(annotation.raw_completion or "")
    again = annotate(pairs, name, cache_path=cache)
    assert again.summary.requests_sent == 0
    assert [a.preference for a in again.annotations] == [a.preference for a in first.annotations]


def test_validate_runs_a_likelihood_persona_against_human_labels(
    tmp_path: Path, shared_data: Path
) -> None:
    from typer.testing import CliRunner

    from simfarm.cli import app

    with start_server() as server:
        name = persona(tmp_path, server, "follow_up")
        args = ["validate", "--annotator", name, "--set", "pandalm", "--limit", "6"]
        args += ["--data-dir", str(shared_data), "--out", str(tmp_path / "report"), "--quiet"]
        result = CliRunner().invoke(app, args)
        sent = server.stats()["requests"]
    assert result.exit_code == 0, result.output
    import json

    overall = json.loads((tmp_path / "report" / "report.json").read_text())["overall"]
    assert overall["n_items"] == 6 and overall["n_failed"] == 0
    assert 0 < sent <= 24  # at most 4 scored texts per pair, one order (nothing to swap)


@pytest.mark.slow
def test_kill_9_mid_likelihood_run_then_rerun_loses_nothing(tmp_path: Path) -> None:
    """Each scored text is its own cached request: a SIGKILL between an item's four requests
    keeps those already answered, so the rerun resends at most what was in flight."""
    from tests.test_cli_feedback import kill_9_then_rerun, pairs_file

    pairs = ("--pairs", pairs_file(tmp_path / "pairs.jsonl", 400))
    # The bundled follow-up persona, pointed at the fake server's echo + logprobs endpoint.
    records, _ = kill_9_then_rerun(tmp_path, "likelihood_follow_up", [], pairs, requests_per_item=4)
    tie_band = yaml.safe_load((tmp_path / "killed.yaml").read_text())["tie_band"]
    for record in records:
        assert record["failure"] is None
        item = PairwiseItem(**{k: record[k] for k in ("instruction", "output_1", "output_2")})
        assert record["preference"] == verdict(*expected(item, "follow_up"), tie_band)
    assert {r["preference"] for r in records} >= {1.0, 2.0}
