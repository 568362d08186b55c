"""The ``openai_sdk`` backend: the same protocol through the official ``openai`` SDK.

For users who want the SDK's own behaviour (Azure, its auth helpers, new endpoints first).
It is off the hot path on purpose: measured here it reaches 0.63-0.70 of the request rate
the shared-aiohttp ``openai`` backend gets (0.74-0.76 with ``DefaultAioHttpClient``, used
when available). Retries, budget, classification and cost accounting are the ``openai``
backend's; the SDK's own retries are switched off so the two never multiply.
"""

from __future__ import annotations

import os
from typing import Any

import openai

from simfarm.backends.base import BackendSpec
from simfarm.backends.openai_http import AttemptFailed, OpenAIHTTPBackend, OpenAIHTTPOptions
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
            env = self.options.api_key_env
            http_client = None
            aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
            if aiohttp_client is not None:
                try:
                    http_client = aiohttp_client()
                except Exception:  # the SDK's aiohttp extra is missing: use its default
                    http_client = None
            self._client = openai.AsyncOpenAI(
                api_key=(os.environ.get(env) if env else None) or "EMPTY",
                base_url=self._base_url,
                max_retries=0,
                timeout=self.options.timeout_s,
                http_client=http_client,
            )
        return self._client

    async def _send(self, path: str, body: dict[str, Any]) -> Any:
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
                "timeout", f"no answer within {self.options.timeout_s}s", True, None
            ) from None
        except openai.APIConnectionError as error:
            raise AttemptFailed("connection", _describe(error), True, None) from None
        except openai.APIStatusError as error:
            transient = error.status_code >= 500 or error.status_code in (408, 409)
            kind: FailureKind = "server_error" if transient else "client_error"
            raise AttemptFailed(kind, _describe(error), transient, _retry_after(error)) from None
        return response.model_dump()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await super().aclose()


def _describe(error: openai.APIError) -> str:
    status = getattr(error, "status_code", None)
    prefix = f"HTTP {status}: " if status else ""
    return f"{prefix}{type(error).__name__}: {error.message[:300]}"


def _retry_after(error: openai.APIError) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
