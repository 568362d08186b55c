"""The completion cache: explicit keys, no failures, durable and multi-process safe."""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from simfarm.annotation.template import PromptTemplate
from simfarm.backends import BackendSpec, create_backend
from simfarm.cache import CompletionCache, cache_key
from simfarm.types import (
    ChatMessage,
    Completion,
    CompletionRequest,
    DecodingParams,
    Failure,
)

IDENTITY = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}


def request(text: str = "hi", **params: object) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=text)], params=DecodingParams(**params)
    )


def test_key_covers_exactly_the_fields_that_change_the_answer() -> None:
    base = cache_key(IDENTITY, request(), "t1")
    assert base == cache_key(dict(IDENTITY), request(), "t1")
    assert base == cache_key(IDENTITY, request().for_sample(0), "t1")
    variants = [
        cache_key({**IDENTITY, "model": "other"}, request(), "t1"),
        cache_key({**IDENTITY, "base_url": "http://x/v1"}, request(), "t1"),
        cache_key(IDENTITY, request("hello"), "t1"),
        cache_key(IDENTITY, request(temperature=1.0), "t1"),
        cache_key(IDENTITY, request(seed=3), "t1"),
        cache_key(IDENTITY, request(max_tokens=7), "t1"),
        cache_key(IDENTITY, request(), "t2"),
        cache_key(IDENTITY, request(), "t1", stage="critique"),
        cache_key(IDENTITY, request(), "t1", stage="score"),
        cache_key(IDENTITY, request().for_sample(1), "t1"),
        cache_key(IDENTITY, request().for_sample(2), "t1"),
    ]
    assert len({base, *variants}) == len(variants) + 1


GOLDEN_PERSONA_BACKEND = BackendSpec(
    name="openai",
    model="gpt-4o-mini",
    options={"base_url": "http://127.0.0.1:8000/v1", "extra_body": {"top_k": 1}},
)
GOLDEN_TEMPLATE = "Which output is better?\n(a) {output_1}\n(b) {output_2}"


def golden_request(**changes: object) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(role="system", content="You are a careful judge."),
            ChatMessage(role="user", content="Which output is better? (a) yes (b) no"),
        ],
        params=DecodingParams(max_tokens=32, **changes),  # type: ignore[arg-type]
    )


def golden_key(spec: BackendSpec = GOLDEN_PERSONA_BACKEND, **changes: object) -> str:
    template_digest = PromptTemplate(GOLDEN_TEMPLATE, "golden").digest
    return cache_key(create_backend(spec).identity(), golden_request(**changes), template_digest)


def test_golden_digest_of_a_fixed_persona_and_request() -> None:
    """Pinned on purpose. If this fails, every user's cache stops matching: change the key
    only deliberately (and say so in the release notes), never as a side effect."""
    assert golden_key() == "3c0f5a6b13199ea62dd034a65d15e6ef91e827b2e5360ce380f7d1e5ac912651"


def test_operational_options_stay_out_of_the_key_and_the_rest_goes_in() -> None:
    def with_options(**options: object) -> BackendSpec:
        merged = {**GOLDEN_PERSONA_BACKEND.options, **options}
        return GOLDEN_PERSONA_BACKEND.model_copy(update={"options": merged})

    operational = with_options(
        timeout_s=5.0,
        max_concurrency=3,
        max_retries=0,
        backoff_base_s=1.0,
        backoff_max_s=2.0,
        request_budget=10,
        api_key_env="OTHER_KEY",
        price={"prompt_per_million": 1.0},
        base_url="http://user:secret@127.0.0.1:8000/v1/",
    )
    assert golden_key(operational) == golden_key()
    changed = [
        with_options(extra_body={"top_k": 50, "repetition_penalty": 1.3}),
        with_options(extra_body={}),
        with_options(base_url="http://127.0.0.1:8001/v1"),
        GOLDEN_PERSONA_BACKEND.model_copy(update={"model": "gpt-4o"}),
        GOLDEN_PERSONA_BACKEND.model_copy(update={"name": "openai_sdk"}),
    ]
    keys = {golden_key(spec) for spec in changed}
    assert len(keys) == len(changed) and golden_key() not in keys


def test_every_option_field_is_identity_or_declared_operational() -> None:
    """A new option enters the key unless someone lists it as operational; the list
    itself may only name real fields (a typo there would silently key on the field)."""
    from simfarm.backends.openai_http import OpenAIHTTPBackend

    backend = create_backend(GOLDEN_PERSONA_BACKEND)
    assert isinstance(backend, OpenAIHTTPBackend)
    fields = set(OpenAIHTTPBackend.options_model.model_fields)  # type: ignore[union-attr]
    assert set(backend.identity()["options"]) == fields - OpenAIHTTPBackend.OPERATIONAL_FIELDS
    with pytest.raises(TypeError, match="timeout_sec"):

        class Misdeclared(OpenAIHTTPBackend):
            OPERATIONAL_FIELDS = frozenset({"timeout_sec"})


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


KILLED_WRITER = """
import os, sys
from pathlib import Path
from simfarm.cache import CompletionCache
from simfarm.types import Completion
cache = CompletionCache(Path(sys.argv[1]))
for i in range(50):
    cache.put(f"k{i}", Completion(text=f"answer {i}"))
os.kill(os.getpid(), 9)
"""


def test_answers_queued_at_a_kill_9_are_committed_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    CompletionCache(path).close()
    # Another process holds the write lock, so nothing the victim queues can be committed
    # before it is killed: only its journal has the answers.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    victim = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], check=False)
    assert victim.returncode == -signal.SIGKILL
    holder.execute("ROLLBACK")
    holder.close()
    with CompletionCache(path) as cache:
        assert cache.recovered == 50
        seven = cache.get("k7")  # served at once, before the writer has committed it
        assert seven is not None and seven.text == "answer 7" and seven.cached
    with CompletionCache(path) as cache:
        assert len(cache) == 50 and cache.recovered == 0
    assert not list((tmp_path / "c.sqlite.unsaved").iterdir())


ROTATING_VICTIM = """
import os, sys
from pathlib import Path
import simfarm.cache as cache_module
from simfarm.types import Completion
cache_module._JOURNAL_RECYCLE_BYTES = 2_000
cache_module._JOURNAL_ROTATE_BYTES = 8_000
cache = cache_module.CompletionCache(Path(sys.argv[1]))
for i in range(300):
    cache.put(f"k{i}", Completion(text=f"answer {i} " + "x" * 100))
    if i % 50 == 0:
        cache.flush()
cache.flush()
journals = sorted(p.name for p in cache.path.with_name(cache.path.name + ".unsaved").iterdir())
print(len(journals), flush=True)
sys.stdin.readline()  # the test now holds the write lock
for i in range(300, 400):
    cache.put(f"k{i}", Completion(text=f"answer {i}"))
os.kill(os.getpid(), 9)
"""


def test_rotated_journals_lose_nothing_across_a_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    CompletionCache(path).close()
    victim = subprocess.Popen(
        [sys.executable, "-c", ROTATING_VICTIM, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert victim.stdin is not None and victim.stdout is not None
    # Journals were recycled while the writer kept up: never more than the live one and
    # one retired.
    assert int(victim.stdout.readline()) <= 2
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    victim.stdin.write("go\n")
    victim.stdin.flush()
    assert victim.wait(timeout=60) == -signal.SIGKILL
    holder.execute("ROLLBACK")
    holder.close()
    with CompletionCache(path) as cache:
        assert cache.recovered >= 100  # (journals may also hold rows already committed)
    with CompletionCache(path) as cache:
        assert len(cache) == 400
        last = cache.get("k399")
        assert last is not None and last.text == "answer 399"
