"""The ``openai`` backend: any OpenAI-compatible HTTP server (OpenAI, vLLM ``serve``,
llama.cpp server, SGLang), spoken over one shared aiohttp session.

Why not the official SDK on the hot path: measured on these machines against a loopback
server (100 ms latency, 64 in flight), one shared aiohttp session reaches 0.93-0.95 of the
theoretical request rate, ``openai.AsyncOpenAI`` 0.63-0.70 (about 1.5 ms of CPU per request
inside the SDK), and a client per request (alpaca_eval's way) 0.07. The protocol is small
and stable; the SDK stays available as the ``openai_sdk`` backend for users who want it.

Failures are classified. Transient ones (429, 5xx, timeouts, dropped connections) are
retried with exponential backoff and full jitter, seeded per process, honouring
``Retry-After`` (seconds or an HTTP date), until a time budget (``retry_budget_s``, minutes)
is spent; then they are returned as :class:`~simfarm.types.Failure`. Answers no retry can
fix (401, 403, 404) stop the backend after a few in a row: the remaining requests fail at
once instead of each being sent and refused. The API key is read from the environment by
name and only ever placed in the ``Authorization`` header: it never enters identities
(cache keys), errors or logs, and is redacted from anything a server echoes back
(:mod:`simfarm.redaction`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import ipaddress
import json
import logging
import os
import random
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from simfarm.backends.base import Backend, BackendSpec, PriceTable
from simfarm.backends.prices import price_for
from simfarm.errors import ConfigError
from simfarm.redaction import redact, redact_url, register_secret, url_credentials
from simfarm.types import Completion, CompletionRequest, Failure, FailureKind, TokenLogprob

logger = logging.getLogger(__name__)


class OpenAIHTTPOptions(BaseModel):
    """Options of the ``openai`` backend (``backend.options`` in a persona file)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.openai.com/v1"
    """Server root including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1`` for vLLM serve)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (None: send no key)."""
    max_concurrency: int = Field(default=64, ge=1)
    """Requests in flight at once (one connection each)."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Total time allowed for one attempt. A judge answers a few tokens to a few hundred:
    60 s covers a slow, loaded endpoint with room to spare, while a hung connection is
    given up (and retried) after a minute instead of two."""
    retry_budget_s: float = Field(default=300.0, ge=0)
    """Transient failures (429, 5xx, timeouts, dropped connections) are retried until this
    many seconds have passed since a request's first attempt: a rate-limit outage of a few
    minutes costs time, not items."""
    max_retries: int | None = Field(default=None, ge=0)
    """Optional cap on retries per request on top of ``retry_budget_s`` (None: no cap)."""
    backoff_base_s: float = Field(default=0.5, ge=0)
    """First backoff; doubles each retry (full jitter), capped by ``backoff_max_s``."""
    backoff_max_s: float = Field(default=30.0, ge=0)
    stop_after_fatal: int = Field(default=3, ge=1)
    """After this many consecutive answers that no retry can fix (HTTP 401, 403: the key;
    404: the model or URL), stop sending and fail the remaining requests at once."""
    request_budget: int | None = Field(default=None, ge=0)
    """At most this many HTTP requests (attempts) per session (one ``annotate()`` call when
    no session is given), shared by every persona on the same endpoint; the rest fail with
    kind ``budget`` and are not cached, so a later run picks them up."""
    price: PriceTable | None = None
    """USD per million tokens; defaults to the built-in table for known model names."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields sent with every request (e.g. vLLM's ``top_k``)."""


_TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUSES = {
    401: "the API key was refused",
    403: "access denied",
    404: "model or URL not found",
}
"""Answers that say every further request will fail the same way."""


class AttemptFailed(Exception):
    """One failed attempt: its kind, whether to retry, and the server's Retry-After.

    ``fatal``: the answer says every further request will fail the same way (bad key,
    unknown model), so the backend stops sending after a few in a row."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        retry: bool,
        retry_after: float | None,
        fatal: bool = False,
    ):
        super().__init__(redact(message))
        self.kind = kind
        self.retry = retry
        self.retry_after = retry_after
        self.fatal = fatal


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIHTTPBackend(Backend):
    name = "openai"
    batch_size = 1
    options_model = OpenAIHTTPOptions
    OPERATIONAL_FIELDS = frozenset(
        {
            "api_key_env",
            "max_concurrency",
            "timeout_s",
            "retry_budget_s",
            "max_retries",
            "backoff_base_s",
            "backoff_max_s",
            "stop_after_fatal",
            "request_budget",
            "price",
        }
    )
    options: OpenAIHTTPOptions

    def __init__(self, model: str, options: OpenAIHTTPOptions | None = None) -> None:
        if not model:
            raise ConfigError("the 'openai' backend needs a `model`")
        self.model = model
        self.options = options or OpenAIHTTPOptions()
        self.max_concurrency = self.options.max_concurrency
        self.price = self.options.price or price_for(model)
        self._base_url = self.options.base_url.rstrip("/")
        self._display_url = redact_url(self._base_url)
        user, password = url_credentials(self._base_url)
        for credential in (user, password):
            register_secret(credential)
        if user is not None:  # aiohttp sends URL credentials as Basic auth: that value too
            register_secret(base64.b64encode(f"{user}:{password or ''}".encode()).decode())
        self._session: aiohttp.ClientSession | None = None
        self._requests_sent = 0
        self._fatal_in_a_row = 0
        self._stopped: Failure | None = None
        # Seeded from the OS, not a constant: processes sharing one key must not retry in
        # lockstep (a fixed seed makes every process back off by the same delays).
        self._rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        self._stopped = self._missing_key()

    def _missing_key(self) -> Failure | None:
        """Said before any request: the variable the persona names for the key is unset.

        A remote server would refuse every request (after retries and seconds of waiting),
        so nothing is sent to it: each request fails at once, naming the variable (never a
        value). Cached answers still count (the backend is only asked for what is not
        cached). A loopback server (vLLM serve, llama.cpp) usually needs no key: it gets
        the requests without one, with a warning."""
        env = self.options.api_key_env
        if not env or os.environ.get(env):
            return None
        if _is_loopback(self._base_url):
            logger.warning("%s is unset: sending to %s without an API key", env, self._display_url)
            return None
        message = (
            f"not sent: the environment variable {env} (backend.options.api_key_env) that "
            f"holds the API key for {self._display_url} is unset; export it, or set "
            "api_key_env: null for a server that needs no key"
        )
        logger.error("%s", message)
        return Failure(kind="client_error", message=message, attempts=0)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> OpenAIHTTPBackend:
        return cls(spec.model, OpenAIHTTPOptions.model_validate(spec.options))

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        # One server, however its URL is spelt; credentials in the URL never enter a key.
        identity["options"]["base_url"] = _without_credentials(self._base_url)
        return identity

    def endpoint(self) -> str:
        return f"{_without_credentials(self._base_url)} {self.model}"

    def request_budget(self) -> int | None:
        return self.options.request_budget

    @property
    def requests_sent(self) -> int:
        return self._requests_sent

    def _api_key(self) -> str | None:
        """The key from the environment variable the options name (registered as a secret)."""
        env = self.options.api_key_env
        key = os.environ.get(env) if env else None
        register_secret(key)
        return key or None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        if len(requests) == 1:
            return [await self._complete_one(requests[0])]
        return list(await asyncio.gather(*(self._complete_one(r) for r in requests)))

    def _body(self, request: CompletionRequest) -> tuple[str, dict[str, Any]]:
        params = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if request.messages is not None:
            path = "/chat/completions"
            body["messages"] = [m.model_dump() for m in request.messages]
            if params.logprobs:
                body["logprobs"] = True
                if params.top_logprobs:
                    body["top_logprobs"] = params.top_logprobs
        else:
            path = "/completions"
            body["prompt"] = request.prompt
            if params.logprobs:
                body["logprobs"] = params.top_logprobs or 1
                if params.max_tokens == 0:
                    # A scoring request: the log-probability of the prompt's own tokens
                    # (OpenAI's legacy `echo`; vLLM and others accept it too).
                    body["echo"] = True
        body.update(self.options.extra_body)
        return path, body

    def _refusal(self, attempts: int) -> Failure | None:
        """Why this request must not be sent (budget spent, or sending was stopped)."""
        if self._stopped is not None:
            return self._stopped.model_copy(update={"attempts": attempts})
        limiter = self.limiter
        budget = limiter.request_budget
        if budget is not None and limiter.requests_spent >= budget:
            return Failure(
                kind="budget",
                message=f"request budget of {budget} requests spent",
                attempts=attempts,
            )
        return None

    async def _complete_one(self, request: CompletionRequest) -> Completion:
        limiter = self.limiter
        path, body = self._body(request)
        attempts = 0
        started = time.monotonic()
        deadline = started + self.options.retry_budget_s
        while True:
            refusal = self._refusal(attempts)
            if refusal is not None:
                return Completion(failure=refusal)
            attempts += 1
            try:
                async with limiter.slots():
                    # Checked again inside: a request queued behind the semaphore may find
                    # that sending stopped (or the endpoint's budget ran out) while it waited.
                    refusal = self._refusal(attempts - 1)
                    if refusal is not None:
                        return Completion(failure=refusal)
                    limiter.try_spend()  # cannot refuse: the budget was checked just above
                    self._requests_sent += 1
                    data, warnings = await self._send(path, body)
                completion = self._parse(data, request, warnings)
                completion.latency_s = time.monotonic() - started
                self._fatal_in_a_row = 0
                return completion
            except AttemptFailed as failed:
                self._note_fatal(failed)
                delay = self._backoff(attempts, failed.retry_after) if failed.retry else 0.0
                if (
                    not failed.retry
                    or time.monotonic() + delay > deadline
                    or (
                        self.options.max_retries is not None and attempts > self.options.max_retries
                    )
                ):
                    message = str(failed)
                    if failed.retry:
                        asked = (
                            f"; the server asked to wait {failed.retry_after:g}s more"
                            if failed.retry_after
                            else ""
                        )
                        message += (
                            f" (gave up after {attempts} attempts in "
                            f"{time.monotonic() - started:.1f}s; retry_budget_s="
                            f"{self.options.retry_budget_s:g}{asked})"
                        )
                    return Completion(
                        latency_s=time.monotonic() - started,
                        failure=Failure(kind=failed.kind, message=message, attempts=attempts),
                    )
                await asyncio.sleep(delay)

    def _note_fatal(self, failed: AttemptFailed) -> None:
        """Count answers no retry can fix; after ``stop_after_fatal`` in a row, stop."""
        if not failed.fatal:
            self._fatal_in_a_row = 0
            return
        self._fatal_in_a_row += 1
        if self._stopped is None and self._fatal_in_a_row >= self.options.stop_after_fatal:
            self._stopped = Failure(
                kind=failed.kind,
                message=(
                    f"not sent: {self._fatal_in_a_row} requests in a row were refused in a way "
                    f"no retry can fix, so simfarm stopped sending to {self._display_url}. "
                    f"Last answer: {failed}"
                ),
            )
            logger.error("%s", self._stopped.message)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a server's ``Retry-After`` is a lower bound."""
        cap = min(self.options.backoff_max_s, self.options.backoff_base_s * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, cap)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _send(self, path: str, body: dict[str, Any]) -> tuple[Any, list[str]]:
        """One attempt: the response JSON and any oddities in it, or :class:`AttemptFailed`
        saying what went wrong."""
        session = self._ensure_session()
        url = self._base_url + path
        shown = self._display_url + path
        try:
            async with session.post(url, data=json.dumps(body)) as response:
                status = response.status
                raw = await response.read()
                text, warnings = decode_body(raw)
                if status == 200:
                    try:
                        return json.loads(text), warnings
                    except json.JSONDecodeError:
                        raise AttemptFailed(
                            "server_error", f"invalid JSON from {shown}: {text[:200]!r}", True, None
                        ) from None
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                message = f"HTTP {status} from {shown}: {_error_message(text)}"
                if status == 429:
                    raise AttemptFailed("rate_limit", message, True, retry_after)
                if status >= 500 or status in _TRANSIENT_STATUSES:
                    raise AttemptFailed("server_error", message, True, retry_after)
                if status in FATAL_STATUSES:
                    message = f"{message} ({FATAL_STATUSES[status]})"
                raise AttemptFailed(
                    "client_error", message, False, None, fatal=status in FATAL_STATUSES
                )
        except TimeoutError:
            raise AttemptFailed(
                "timeout",
                f"no answer from {shown} within {self.options.timeout_s:g}s "
                "(raise it with `timeout_s` or --timeout)",
                True,
                None,
            ) from None
        except aiohttp.ClientError as error:
            raise AttemptFailed(
                "connection", f"{type(error).__name__}: {error}", True, None
            ) from None

    def _parse(
        self, data: Any, request: CompletionRequest, warnings: list[str] | None = None
    ) -> Completion:
        warnings = list(warnings or [])
        try:
            choice = data["choices"][0]
            if request.messages is not None:
                text = choice["message"].get("content") or ""
                logprobs = _chat_logprobs(choice.get("logprobs"))
            else:
                text = choice.get("text") or ""
                logprobs = _completion_logprobs(choice.get("logprobs"))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
            raise AttemptFailed(
                "server_error", f"malformed response ({error!r}): {str(data)[:200]}", True, None
            ) from None
        usage = data.get("usage") if isinstance(data, dict) else None
        prompt_tokens, completion_tokens = _token_counts(usage, warnings)
        for warning in warnings:
            logger.warning("answer from %s kept despite: %s", self._display_url, warning)
        return Completion(
            text=text,
            logprobs=logprobs,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self.price.cost(prompt_tokens, completion_tokens),
            finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
            warnings=warnings,
        )


def decode_body(raw: bytes) -> tuple[str, list[str]]:
    """A response body as text. Invalid UTF-8 is replaced (U+FFFD), not fatal: the verdict
    of a paid answer is usually readable around one bad byte. Returns the oddity too."""
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as error:
        return raw.decode("utf-8", errors="replace"), [
            f"invalid UTF-8 in the response at byte {error.start}; replaced with U+FFFD"
        ]


def _token_counts(usage: Any, warnings: list[str]) -> tuple[int, int]:
    """Prompt and completion tokens from ``usage``; 0 (and a warning) when malformed."""
    if usage is None:
        return 0, 0
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name) if isinstance(usage, dict) else None
        if value is None:
            counts.append(0)
            continue
        try:
            count = int(value)
            if count < 0 or isinstance(value, bool):
                raise ValueError(value)
        except (TypeError, ValueError):
            warnings.append(f"malformed usage.{name} {str(value)[:40]!r}; counted as 0 tokens")
            count = 0
        counts.append(count)
    if not isinstance(usage, dict):
        warnings.append(f"malformed usage {str(usage)[:40]!r}; counted as 0 tokens")
    return counts[0], counts[1]


def _chat_logprobs(raw: Any) -> list[TokenLogprob] | None:
    """Chat format: ``{"content": [{"token", "logprob", "top_logprobs": [{token, logprob}]}]}``."""
    if not raw or raw.get("content") is None:
        return None
    return [
        TokenLogprob(
            token=entry["token"],
            logprob=float(entry["logprob"]),
            top_logprobs={
                alt["token"]: float(alt["logprob"]) for alt in entry.get("top_logprobs") or []
            },
        )
        for entry in raw["content"]
    ]


def _completion_logprobs(raw: Any) -> list[TokenLogprob] | None:
    """Legacy completions format: parallel ``tokens``, ``token_logprobs``, ``top_logprobs``."""
    if not raw or raw.get("tokens") is None:
        return None
    tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
    return [
        TokenLogprob(
            token=token,
            logprob=float(logprob) if logprob is not None else 0.0,
            top_logprobs={k: float(v) for k, v in (top or {}).items()},
        )
        for token, logprob, top in zip(raw["tokens"], raw["token_logprobs"], tops, strict=False)
    ]


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:secret@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: either a number of seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a naive one is read as UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict):
            return str(error.get("message", error))[:300]
        return str(error)[:300]
    except (json.JSONDecodeError, AttributeError):
        return text[:300]
