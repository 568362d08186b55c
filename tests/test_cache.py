"""The completion cache: explicit keys, no failures, durable and multi-process safe."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from simfarm.cache import CACHE_VERSION, CompletionCache, cache_key
from simfarm.types import (
    ChatMessage,
    Completion,
    CompletionRequest,
    DecodingParams,
    Failure,
    stable_digest,
)

IDENTITY = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}


def request(text: str = "hi", **params: object) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=text)], params=DecodingParams(**params)
    )


def test_key_covers_exactly_the_fields_that_change_the_answer() -> None:
    base = cache_key(IDENTITY, request(), "t1", {"parser": "regex"})
    assert base == cache_key(dict(IDENTITY), request(), "t1", {"parser": "regex"})
    variants = [
        cache_key({**IDENTITY, "model": "other"}, request(), "t1", {"parser": "regex"}),
        cache_key({**IDENTITY, "base_url": "http://x/v1"}, request(), "t1", {"parser": "regex"}),
        cache_key(IDENTITY, request("hello"), "t1", {"parser": "regex"}),
        cache_key(IDENTITY, request(temperature=1.0), "t1", {"parser": "regex"}),
        cache_key(IDENTITY, request(seed=3), "t1", {"parser": "regex"}),
        cache_key(IDENTITY, request(max_tokens=7), "t1", {"parser": "regex"}),
        cache_key(IDENTITY, request(), "t2", {"parser": "regex"}),
        cache_key(IDENTITY, request(), "t1", {"parser": "logprob"}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_key_is_a_digest_of_canonical_json_with_the_version() -> None:
    expected = stable_digest(
        {
            "cache_version": CACHE_VERSION,
            "backend": IDENTITY,
            "request": request().content_fields(),
            "template_digest": "t",
            "parser": None,
        }
    )
    assert cache_key(IDENTITY, request(), "t") == expected


def test_failures_are_refused(tmp_path: Path) -> None:
    with CompletionCache(tmp_path / "c.sqlite") as cache, pytest.raises(ValueError):
        cache.put("k", Completion(failure=Failure(kind="rate_limit", message="429")))


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with CompletionCache(path) as cache:
        cache.put("k", Completion(text="Output (a)", cost_usd=0.5, prompt_tokens=3))
    with CompletionCache(path) as cache:
        got = cache.get("k")
        assert got is not None and got.text == "Output (a)" and got.cached
        assert got.cost_usd == 0.5
        assert cache.get_many(["k", "missing"]).keys() == {"k"}


def _writer(path: str, worker: int, n: int) -> None:
    with CompletionCache(Path(path)) as cache:
        for i in range(n):
            cache.put(f"{worker}-{i}", Completion(text=f"{worker}:{i}"))


def test_several_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(path), w, 300)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    with CompletionCache(path) as cache:
        assert len(cache) == 1200
        assert cache.get("3-299") is not None and cache.get("3-299").text == "3:299"
