"""Cache keys as a user meets them: what changes the answer re-asks, what does not re-reads.

Real loopback server, real cache; the server's request counter is the witness."""

from __future__ import annotations

from pathlib import Path

from simfarm.annotation import annotate
from simfarm.testing.openai_server import start_server
from tests.annotation.test_pairwise_run import items
from tests.server_personas import make_persona


def test_changing_extra_body_asks_again_instead_of_serving_stale_answers(tmp_path: Path) -> None:
    with start_server() as server:
        name = make_persona(tmp_path, server, options={"extra_body": {"top_k": 1}})
        annotate(items(5), name, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 5
        make_persona(
            tmp_path, server, options={"extra_body": {"top_k": 50, "repetition_penalty": 1.3}}
        )
        changed = annotate(items(5), name, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 10
        assert changed.summary.cache_hits == 0
        # Operational settings (timeouts, concurrency, retries) do not change an answer.
        make_persona(
            tmp_path,
            server,
            options={
                "extra_body": {"top_k": 50, "repetition_penalty": 1.3},
                "timeout_s": 7.0,
                "max_concurrency": 3,
                "max_retries": 1,
            },
        )
        same = annotate(items(5), name, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 10
    assert same.summary.cache_hits == 5


def test_changing_the_parser_re_reads_cached_answers_for_free(tmp_path: Path) -> None:
    with start_server(policy="longest") as server:
        name = make_persona(tmp_path, server)
        first = annotate(items(8), name, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 8
        # Swap what the verdict labels mean: every cached answer is re-parsed, none re-bought.
        make_persona(
            tmp_path,
            server,
            parser={"kind": "regex", "pattern": r"Output \(([ab])\)", "labels": {"a": 2, "b": 1}},
        )
        flipped = annotate(items(8), name, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 8
    assert flipped.summary.cache_hits == 8
    assert [3.0 - (a.preference or 0) for a in first.annotations] == [
        a.preference for a in flipped.annotations
    ]


def test_duplicate_items_in_one_run_are_sent_once(tmp_path: Path) -> None:
    distinct = items(20)
    tripled = [*distinct, *distinct, *distinct]
    with start_server(latency_s=0.05) as server:
        name = make_persona(tmp_path, server)
        result = annotate(tripled, name, annotators_dirs=[tmp_path], use_cache=False)
        assert server.stats()["requests"] == 20
    assert result.summary.requests_sent == 20 and result.summary.cache_hits == 40
    assert [a.cached for a in result.annotations] == [False] * 20 + [True] * 40
    preferences = [a.preference for a in result.annotations]
    assert preferences[:20] == preferences[20:40] == preferences[40:]
    assert all(p is not None for p in preferences)
