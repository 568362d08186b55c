"""The openai backend against a real loopback server speaking the OpenAI protocol."""

from __future__ import annotations

import asyncio
import math

import pytest

from simfarm.backends import BackendSpec, create_backend
from simfarm.backends.openai_http import OpenAIHTTPBackend, OpenAIHTTPOptions
from simfarm.testing.openai_server import start_server
from simfarm.types import ChatMessage, CompletionRequest, DecodingParams

FARM_PROMPT = (
    "## Output (a):\nshort\n\n## Output (b):\na much longer answer here\n\n## Which is best?"
)


def _backend(base_url: str, **options: object) -> OpenAIHTTPBackend:
    opts = OpenAIHTTPOptions.model_validate(
        {"base_url": base_url, "backoff_base_s": 0.01, "backoff_max_s": 0.2, **options}
    )
    return OpenAIHTTPBackend("test-model", opts)


def _chat(text: str = FARM_PROMPT, **params: object) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=text)], params=DecodingParams(**params)
    )


def _run(backend: OpenAIHTTPBackend, requests: list[CompletionRequest]):
    async def go():
        async with backend:
            return await backend.complete(requests)

    return asyncio.run(go())


def test_chat_and_completions_endpoints() -> None:
    with start_server() as server:
        backend = _backend(server.base_url)
        raw = CompletionRequest(prompt=FARM_PROMPT, params=DecodingParams(max_tokens=4))
        chat, completion = _run(backend, [_chat(), raw])
        assert chat.ok and chat.text == "Output (b)"
        assert completion.ok and completion.text == "Output (b)"
        assert chat.prompt_tokens > 0 and chat.completion_tokens > 0
        assert chat.latency_s > 0
        assert server.stats()["requests"] == 2


def test_logprobs_are_parsed_for_both_endpoints() -> None:
    with start_server() as server:
        backend = _backend(server.base_url)
        chat = _chat(logprobs=True, top_logprobs=2, max_tokens=1)
        raw = CompletionRequest(
            prompt=FARM_PROMPT, params=DecodingParams(logprobs=True, top_logprobs=2)
        )
        for result in _run(backend, [chat, raw]):
            assert result.ok and result.logprobs is not None
            top = result.logprobs[0].top_logprobs
            assert set(top) == {"m", "M"}
            assert math.isclose(math.exp(top["M"]), 0.8, rel_tol=1e-6)


def test_rate_limits_and_server_errors_are_retried_then_reported() -> None:
    with start_server(fault_rate=1.0, fault_kinds="429") as server:
        result = _run(_backend(server.base_url, max_retries=2), [_chat()])[0]
        assert result.failure is not None and result.failure.kind == "rate_limit"
        assert result.failure.attempts == 3
        assert server.stats()["requests"] == 3
    with start_server(fault_rate=1.0, fault_kinds="500") as server:
        result = _run(_backend(server.base_url, max_retries=1), [_chat()])[0]
        assert result.failure is not None and result.failure.kind == "server_error"
        assert server.stats()["requests"] == 2


def test_transient_faults_recover_with_retries() -> None:
    with start_server(fault_rate=0.3, fault_kinds="429,500", seed=3) as server:
        results = _run(_backend(server.base_url, max_retries=8), [_chat()] * 40)
        assert all(r.ok for r in results)
        stats = server.stats()
        assert stats["requests"] > 40 and sum(stats["faults"].values()) > 0


def test_timeouts_are_classified() -> None:
    with start_server(fault_rate=1.0, fault_kinds="timeout", timeout_sleep_s=1.5) as server:
        backend = _backend(server.base_url, timeout_s=0.3, max_retries=1)
        result = _run(backend, [_chat()])[0]
        assert result.failure is not None and result.failure.kind == "timeout"
        assert result.failure.attempts == 2


def test_client_errors_are_not_retried() -> None:
    with start_server(fault_rate=1.0, fault_kinds="400") as server:
        result = _run(_backend(server.base_url, max_retries=5), [_chat()])[0]
        assert result.failure is not None and result.failure.kind == "client_error"
        assert server.stats()["requests"] == 1


def test_connection_refused_is_a_failure_not_an_exception() -> None:
    backend = _backend("http://127.0.0.1:9/v1", max_retries=1)
    result = _run(backend, [_chat()])[0]
    assert result.failure is not None and result.failure.kind == "connection"


def test_request_budget_stops_sending() -> None:
    with start_server() as server:
        results = _run(
            _backend(server.base_url, request_budget=3, max_concurrency=1), [_chat()] * 5
        )
        assert [r.ok for r in results].count(True) == 3
        assert {r.failure.kind for r in results if r.failure} == {"budget"}
        assert server.stats()["requests"] == 3


def test_api_key_is_sent_but_never_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET-9f8e7d"
    monkeypatch.setenv("SIMFARM_TEST_KEY", secret)
    # The server echoes the Authorization header in its 401 body, as some gateways do.
    with start_server(fault_rate=1.0, fault_kinds="401") as server:
        backend = _backend(server.base_url, api_key_env="SIMFARM_TEST_KEY")
        result = _run(backend, [_chat()])[0]
        assert server.stats()["authorization"] == [f"Bearer {secret}"]
    assert result.failure is not None and "401" in result.failure.message
    assert secret not in result.model_dump_json()
    assert secret not in repr(backend.identity())
    assert secret not in repr(backend.options)


def test_cost_uses_the_price_table() -> None:
    with start_server() as server:
        price = {"prompt_per_million": 1_000_000.0, "completion_per_million": 2_000_000.0}
        result = _run(_backend(server.base_url, price=price), [_chat()])[0]
        assert result.cost_usd == pytest.approx(result.prompt_tokens + 2 * result.completion_tokens)


def test_registry_builds_it_and_rejects_unknown_options() -> None:
    backend = create_backend(BackendSpec(name="openai", model="m", options={"base_url": "x"}))
    assert isinstance(backend, OpenAIHTTPBackend)
    with pytest.raises(ValueError, match="not_an_option"):
        create_backend(BackendSpec(name="openai", model="m", options={"not_an_option": 1}))


def test_sdk_backend_speaks_the_same_protocol() -> None:
    with start_server(fault_rate=0.3, fault_kinds="429,500", seed=1) as server:
        spec = BackendSpec(
            name="openai_sdk",
            model="test-model",
            options={"base_url": server.base_url, "backoff_base_s": 0.01, "max_retries": 8},
        )
        backend = create_backend(spec)

        async def go():
            async with backend:
                return await backend.complete([_chat(), _chat(logprobs=True, top_logprobs=2)] * 5)

        results = asyncio.run(go())
    assert all(r.ok for r in results)
    assert results[0].text == "Output (b)"
    assert results[1].logprobs is not None and set(results[1].logprobs[0].top_logprobs) == {
        "m",
        "M",
    }
