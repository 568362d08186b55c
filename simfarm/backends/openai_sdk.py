"""The ``openai_sdk`` backend: the same protocol through the official ``openai`` SDK.

For users who want the SDK's own behaviour (Azure, its auth helpers, new endpoints first).
It is off the hot path on purpose: measured here it reaches 0.63-0.70 of the request rate
the shared-aiohttp ``openai`` backend gets (0.74-0.76 with ``DefaultAioHttpClient``, used
when available). Retries, budget, classification and cost accounting are the ``openai``
backend's (time budget, stop on repeated 401/403/404, redaction of echoed secrets); the SDK's
own retries are switched off so the two never multiply.
"""

from __future__ import annotations

from typing import Any

import openai

from simfarm.backends.base import BackendSpec
from simfarm.backends.openai_http import (
    FATAL_STATUSES,
    AttemptFailed,
    OpenAIHTTPBackend,
    OpenAIHTTPOptions,
    retry_after_seconds,
)
from simfarm.redaction import redact
from simfarm.types import FailureKind


class OpenAISDKBackend(OpenAIHTTPBackend):
    name = "openai_sdk"

    def __init__(self, model: str, options: OpenAIHTTPOptions | None = None) -> None:
        super().__init__(model, options)
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> OpenAISDKBackend:
        return cls(spec.model, OpenAIHTTPOptions.model_validate(spec.options))

    def _sdk_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            http_client = None
            aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
            if aiohttp_client is not None:
                try:
                    http_client = aiohttp_client()
                except Exception:  # the SDK's aiohttp extra is missing: use its default
                    http_client = None
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key() or "EMPTY",
                base_url=self._base_url,
                max_retries=0,
                timeout=self.options.timeout_s,
                http_client=http_client,
            )
        return self._client

    async def _send(self, path: str, body: dict[str, Any]) -> tuple[Any, list[str]]:
        client = self._sdk_client()
        known = {
            "model",
            "messages",
            "prompt",
            "temperature",
            "top_p",
            "max_tokens",
            "stop",
            "seed",
            "logprobs",
            "top_logprobs",
        }
        kwargs = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        try:
            if path == "/chat/completions":
                response = await client.chat.completions.create(**kwargs, extra_body=extra or None)
            else:
                response = await client.completions.create(**kwargs, extra_body=extra or None)
        except openai.RateLimitError as error:
            raise AttemptFailed("rate_limit", _describe(error), True, _retry_after(error)) from None
        except openai.APITimeoutError:
            raise AttemptFailed(
                "timeout", f"no answer within {self.options.timeout_s:g}s", True, None
            ) from None
        except openai.APIConnectionError as error:
            raise AttemptFailed("connection", _describe(error), True, None) from None
        except openai.APIStatusError as error:
            status = error.status_code
            transient = status >= 500 or status in (408, 409, 425)
            kind: FailureKind = "server_error" if transient else "client_error"
            message = _describe(error)
            if status in FATAL_STATUSES:
                message = f"{message} ({FATAL_STATUSES[status]})"
            raise AttemptFailed(
                kind, message, transient, _retry_after(error), fatal=status in FATAL_STATUSES
            ) from None
        except (ValueError, TypeError) as error:
            # The client refuses the request itself (e.g. its HTTP layer will not combine
            # URL credentials with the key header): every request would fail alike.
            raise AttemptFailed(
                "backend", f"{type(error).__name__}: {error}", False, None, fatal=True
            ) from None
        return response.model_dump(), []

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await super().aclose()


def _describe(error: openai.APIError) -> str:
    status = getattr(error, "status_code", None)
    prefix = f"HTTP {status}: " if status else ""
    return redact(f"{prefix}{type(error).__name__}: {error.message[:300]}")


def _retry_after(error: openai.APIError) -> float | None:
    response = getattr(error, "response", None)
    return retry_after_seconds(
        response.headers.get("retry-after") if response is not None else None
    )
