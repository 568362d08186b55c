"""Backend sessions (long-lived backends, shared endpoint limits), entry points inside a
running event loop, and k cached samples per request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from simfarm.annotation import BackendOverrides, annotate, annotate_async, load_annotator
from simfarm.backends import Backend, BackendSpec, create_backend
from simfarm.cache import CompletionCache
from simfarm.execution import BackendSession, Executor, ExecutorCounters, ResultHandler
from simfarm.testing.openai_server import start_server
from simfarm.types import CompletionRequest, DecodingParams
from tests.annotation.test_pairwise_run import items
from tests.server_personas import make_persona


class CountingFactory:
    """Builds real backends and counts how many it built."""

    def __init__(self) -> None:
        self.built: list[Backend] = []

    def __call__(self, spec: BackendSpec) -> Backend:
        backend = create_backend(spec)
        self.built.append(backend)
        return backend


def test_annotate_async_inside_a_running_loop_with_one_session(tmp_path: Path) -> None:
    factory = CountingFactory()
    with start_server() as server:
        persona = load_annotator(make_persona(tmp_path, server), [tmp_path])

        async def trainer_step() -> list[int]:
            sent = []
            async with BackendSession(factory) as session:
                for step in range(3):
                    result = await annotate_async(items(4 + step), persona, session=session)
                    sent.append(result.summary.requests_sent)
            return sent

        sent = asyncio.run(trainer_step())
    assert sent == [4, 5, 6]
    assert len(factory.built) == 1


def test_sync_annotate_from_a_thread_whose_loop_is_running(tmp_path: Path) -> None:
    with start_server() as server:
        name = make_persona(tmp_path, server)

        async def notebook_cell() -> float | None:
            # A synchronous call made from async code: must not crash on the running loop.
            result = annotate(items(3), name, annotators_dirs=[tmp_path])
            return result.annotations[0].preference

        assert asyncio.run(notebook_cell()) == 2.0


def test_sync_session_reuses_backends_across_calls_and_threads(tmp_path: Path) -> None:
    factory = CountingFactory()
    with start_server() as server:
        name = make_persona(tmp_path, server)
        with BackendSession(factory) as session:
            for n in (2, 3):
                result = annotate(items(n), name, annotators_dirs=[tmp_path], session=session)
                assert result.summary.n_annotated == n

            async def from_async_code() -> int:
                again = annotate(items(5), name, annotators_dirs=[tmp_path], session=session)
                return again.summary.requests_sent

            assert asyncio.run(from_async_code()) == 2  # items 3 and 4 are new

            async def awaited_from_another_loop() -> int:
                persona = load_annotator(name, [tmp_path])
                again = await annotate_async(items(6), persona, session=session)
                return again.summary.requests_sent

            assert asyncio.run(awaited_from_another_loop()) == 6  # no cache given: all sent
        assert server.stats()["requests"] == 11
    assert len(factory.built) == 1


def test_async_session_refuses_sync_calls(tmp_path: Path) -> None:
    async def misuse() -> None:
        async with BackendSession() as session:
            annotate(items(1), "longest", session=session)

    with pytest.raises(Exception, match="annotate_async"):
        asyncio.run(misuse())


def test_pool_members_on_one_endpoint_share_its_request_budget(tmp_path: Path) -> None:
    """Two members that differ in answers (extra_body) but talk to one endpoint: a budget
    of 10 is the endpoint's, not 10 per member."""
    with start_server() as server:
        make_persona(tmp_path, server, name="cold", options={"extra_body": {"top_k": 1}})
        make_persona(tmp_path, server, name="warm", options={"extra_body": {"top_k": 40}})
        (tmp_path / "both.yaml").write_text(
            "kind: pool\nmembers:\n  - {persona: cold}\n  - {persona: warm}\n"
        )
        pool = load_annotator("both", [tmp_path])
        result = annotate(
            items(30),
            pool,
            use_cache=False,
            backend_overrides=BackendOverrides(options={"request_budget": 10}),
        )
        assert server.stats()["requests"] == 10
    assert {a.annotator for a in result.annotations} == {"cold", "warm"}
    assert result.summary.failures_by_kind == {"budget": 20}


def test_samples_are_distinct_requests_each_cached(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server(policy="random") as server:
        name = make_persona(
            tmp_path, server, decoding={"temperature": 1.0, "seed": 11, "max_tokens": 8}
        )
        first = annotate(items(4), name, annotators_dirs=[tmp_path], cache_path=cache, samples=3)
        assert server.stats()["requests"] == 12
        again = annotate(items(4), name, annotators_dirs=[tmp_path], cache_path=cache, samples=3)
        assert server.stats()["requests"] == 12
        # Sample 0 is the plain request: a samples=1 run finds it.
        plain = annotate(items(4), name, annotators_dirs=[tmp_path], cache_path=cache)
        assert server.stats()["requests"] == 12
    assert len(first.annotations) == 12 and [len(s) for s in first.by_item()] == [3] * 4
    assert again.summary.cache_hits == 12 and again.summary.requests_sent == 0
    assert [a.preference for a in again.annotations] == [a.preference for a in first.annotations]
    assert [a.preference for a in plain.annotations] == [s[0].preference for s in first.by_item()]
    with CompletionCache(cache) as stored:
        assert len(stored) == 12


def test_sample_requests_differ_in_seed_and_key() -> None:
    request = CompletionRequest(prompt="Which is better?", params=DecodingParams(seed=4))
    samples = [request.for_sample(k) for k in range(3)]
    assert samples[0] is request
    assert [s.params.seed for s in samples] == [4, 5, 6]
    assert [s.sample_index for s in samples] == [0, 1, 2]
    unseeded = CompletionRequest(prompt="Which is better?", params=DecodingParams(temperature=1))
    assert unseeded.for_sample(2).params == unseeded.params


@pytest.mark.slow
def test_a_local_judge_is_built_and_loaded_once_across_calls_in_a_session() -> None:
    """A PPO loop asks its judge every step: the embedded model must load once per session."""
    factory = CountingFactory()
    persona = load_annotator("embedded_gemma")
    with BackendSession(factory) as session:
        for step in range(3):
            batch = items(2 + step)
            result = annotate(batch, persona, use_cache=False, session=session)
            assert result.summary.requests_sent == 2 * len(batch)  # both orders
            assert result.summary.n_annotated == len(batch)
        assert len(factory.built) == 1
        assert getattr(factory.built[0], "loaded", None) is True
    assert getattr(factory.built[0], "loaded", None) is False  # closed with the session


def test_the_run_sends_through_an_injected_executor(tmp_path: Path) -> None:
    """The executor is a seam: the run takes a factory (a Ray one later) and the cache
    stays with the driver."""
    built: list[tuple[BackendSpec, Executor[Any]]] = []
    with start_server() as server:
        persona = load_annotator(make_persona(tmp_path, server), [tmp_path])

        async def main() -> int:
            async with BackendSession() as session:
                in_process = session.executor_factory()

                def factory(spec: BackendSpec, on_result: ResultHandler[Any]) -> Executor[Any]:
                    executor = in_process(spec, on_result)
                    built.append((spec, executor))
                    return executor

                with CompletionCache(tmp_path / "c.sqlite") as cache:
                    result = await annotate_async(
                        items(5), persona, cache=cache, executor_factory=factory
                    )
                    assert len(cache) == 5
                return result.summary.requests_sent

        assert asyncio.run(main()) == 5
    assert len(built) == 1 and built[0][0].options["base_url"] == server.base_url
    assert built[0][1].counters() == ExecutorCounters(submitted=5, finished=5, requests_sent=5)


def test_backends_on_one_endpoint_share_one_limiter() -> None:
    def spec(**options: object) -> BackendSpec:
        base = {"base_url": "http://127.0.0.1:9/v1"}
        return BackendSpec(name="openai", model="m", options={**base, **options})

    session = BackendSession()
    cold = session.backend(spec(extra_body={"top_k": 1}, max_concurrency=8))
    warm = session.backend(spec(extra_body={"top_k": 40}, max_concurrency=4))
    other_model = session.backend(spec().model_copy(update={"model": "n"}))
    assert session.backend(spec(extra_body={"top_k": 1}, max_concurrency=8)) is cold
    assert cold is not warm and cold.limiter is warm.limiter
    assert cold.limiter.max_concurrency == 4  # the stricter declaration wins
    assert other_model.limiter is not cold.limiter
