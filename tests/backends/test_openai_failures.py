"""How the OpenAI backends fail: secrets never echoed into results, rate-limit outages
ridden out on a time budget, hopeless runs stopped early, paid answers with odd bodies kept.

Each test talks to the fake server (a real HTTP server on loopback) in the fault mode that
shows the defect."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from typing import Any

import pytest

from simfarm.backends import BackendSpec, create_backend
from simfarm.backends.base import Backend
from simfarm.backends.openai_http import OpenAIHTTPBackend, OpenAIHTTPOptions, retry_after_seconds
from simfarm.redaction import redact, redact_url
from simfarm.testing.openai_server import start_server
from simfarm.types import ChatMessage, Completion, CompletionRequest, DecodingParams

FARM_PROMPT = (
    "## Output (a):\nshort\n\n## Output (b):\na much longer answer here\n\n## Which is best?"
)


def _chat(i: int = 0) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="user", content=f"{FARM_PROMPT} #{i}")],
        params=DecodingParams(max_tokens=4),
    )


def _backend(name: str, base_url: str, **options: Any) -> Backend:
    merged = {"base_url": base_url, "backoff_base_s": 0.01, "backoff_max_s": 0.2, **options}
    return create_backend(BackendSpec(name=name, model="test-model", options=merged))


def _run(backend: Backend, requests: list[CompletionRequest]) -> list[Completion]:
    async def go() -> list[Completion]:
        async with backend:
            return await backend.complete(requests)

    return asyncio.run(go())


# --- secrets --------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["openai", "openai_sdk"])
def test_api_key_echoed_by_the_server_never_reaches_the_result(
    monkeypatch: pytest.MonkeyPatch, backend_name: str
) -> None:
    secret = "sk-test-SECRET-9f8e7d"
    monkeypatch.setenv("SIMFARM_TEST_KEY", secret)
    with start_server(fault_rate=1.0, fault_kinds="401") as server:
        backend = _backend(backend_name, server.base_url, api_key_env="SIMFARM_TEST_KEY")
        result = _run(backend, [_chat()])[0]
        # The key really went over the wire, and the server really echoed it back.
        assert server.stats()["authorization"] == [f"Bearer {secret}"]
    assert result.failure is not None and result.failure.kind == "client_error"
    assert "401" in result.failure.message and "***" in result.failure.message
    assert secret not in result.model_dump_json()
    assert secret not in repr(backend.identity())


@pytest.mark.parametrize("backend_name", ["openai", "openai_sdk"])
def test_credentials_in_the_base_url_never_reach_messages(backend_name: str) -> None:
    password = "hunter2-url-secret"
    with start_server(fault_rate=1.0, fault_kinds="401") as server:
        url = server.base_url.replace("http://", f"http://alice:{password}@")
        result = _run(_backend(backend_name, url, api_key_env=None), [_chat()])[0]
    assert result.failure is not None
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    dumped = result.model_dump_json()
    assert password not in dumped and basic not in dumped, dumped


def test_redaction_of_the_usual_shapes() -> None:
    assert "abc123secret" not in redact("Authorization: Bearer abc123secret")
    assert "abc123secret" not in redact('{"authorization": "Basic abc123secret"}')
    assert "abc123secret" not in redact("api_key=abc123secret&x=1")
    assert "pw" not in redact("GET http://bob:pw@host:8000/v1 failed").replace("http", "")
    assert redact_url("https://u:p@example.org:8443/v1") == "https://***@example.org:8443/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


# --- rate-limit outages ---------------------------------------------------------------


def test_a_rate_limit_outage_shorter_than_the_retry_budget_loses_nothing() -> None:
    with start_server(rate_limit_for_s=2.0) as server:
        backend = _backend("openai", server.base_url, retry_budget_s=30, max_concurrency=8)
        results = _run(backend, [_chat(i) for i in range(24)])
        stats = server.stats()
    assert all(r.ok for r in results), [r.failure for r in results if r.failure]
    assert stats["faults"]["outage"] > 24  # every item was refused at least once


def test_a_rate_limit_outage_longer_than_the_retry_budget_fails_by_kind() -> None:
    with start_server(rate_limit_for_s=30.0) as server:
        backend = _backend("openai", server.base_url, retry_budget_s=0.5, max_concurrency=8)
        results = _run(backend, [_chat(i) for i in range(8)])
    assert {r.failure.kind for r in results if r.failure} == {"rate_limit"}
    assert all(not r.ok for r in results)
    assert "retry_budget_s=0.5" in results[0].failure.message  # type: ignore[union-attr]


def test_retry_after_as_an_http_date_is_honoured() -> None:
    # Our own backoff is at most 0.2 s here: without reading the date, each request would
    # be re-sent about ten times during the outage.
    with start_server(rate_limit_for_s=1.5, retry_after="date") as server:
        backend = _backend("openai", server.base_url, retry_budget_s=30, max_concurrency=4)
        results = _run(backend, [_chat(i) for i in range(4)])
        stats = server.stats()
    assert all(r.ok for r in results)
    assert stats["requests"] <= 4 * 3


def test_retry_after_parsing() -> None:
    now = time.time()
    assert retry_after_seconds("2.5") == 2.5
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert retry_after_seconds(in_ten, now=now) == pytest.approx(10, abs=1.0)
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_backoff_jitter_differs_between_backends() -> None:
    # Processes sharing one key must not retry in lockstep (a fixed seed did exactly that).
    a, b = (OpenAIHTTPBackend("m", OpenAIHTTPOptions()) for _ in range(2))
    assert [a._backoff(5, None) for _ in range(5)] != [b._backoff(5, None) for _ in range(5)]


# --- hopeless runs stop early ---------------------------------------------------------


@pytest.mark.parametrize("status", ["401", "404"])
@pytest.mark.parametrize("backend_name", ["openai", "openai_sdk"])
def test_repeated_auth_or_model_errors_stop_sending(backend_name: str, status: str) -> None:
    concurrency = 4
    with start_server(fault_rate=1.0, fault_kinds=status) as server:
        backend = _backend(backend_name, server.base_url, max_concurrency=concurrency)
        results = _run(backend, [_chat(i) for i in range(120)])
        sent = server.stats()["requests"]
    assert sent <= concurrency + 3
    assert backend.requests_sent == sent
    assert {r.failure.kind for r in results if r.failure} == {"client_error"}
    assert all(not r.ok for r in results)
    stopped = [r for r in results if r.failure and "stopped sending" in r.failure.message]
    assert len(stopped) >= 120 - sent
    assert f"HTTP {status}" in stopped[0].failure.message  # type: ignore[union-attr]


def test_a_success_resets_the_count_of_fatal_answers() -> None:
    with start_server(fault_rate=0.3, fault_kinds="404", seed=5) as server:
        backend = _backend("openai", server.base_url, max_concurrency=1, stop_after_fatal=6)
        results = _run(backend, [_chat(i) for i in range(30)])
        sent = server.stats()["requests"]
    # Scattered 404s (30%, never six in a row with this seed and one request at a time):
    # each success resets the count, so every request is sent and most succeed.
    assert sent == 30
    assert sum(r.ok for r in results) >= 15
    assert not any("stopped sending" in (r.failure.message if r.failure else "") for r in results)


# --- paid answers with odd bodies ----------------------------------------------------


def test_an_answer_with_invalid_utf8_is_kept_with_a_warning() -> None:
    with start_server(fault_rate=1.0, fault_kinds="bad_utf8") as server:
        result = _run(_backend("openai", server.base_url), [_chat()])[0]
        assert server.stats()["requests"] == 1
    assert result.ok and result.text.startswith("Output (b)")
    assert "\ufffd" in result.text
    assert result.warnings and "UTF-8" in result.warnings[0]


def test_an_answer_with_malformed_usage_is_kept_with_zero_tokens() -> None:
    with start_server(fault_rate=1.0, fault_kinds="bad_usage") as server:
        result = _run(_backend("openai", server.base_url), [_chat()])[0]
        assert server.stats()["requests"] == 1
    assert result.ok and result.text == "Output (b)"
    assert result.prompt_tokens == 0 and result.completion_tokens == 0
    assert any("usage" in w for w in result.warnings)
