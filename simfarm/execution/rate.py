"""Request and token budgets for one endpoint, enforced where every request is dispatched.

Per-actor limits multiply with the number of actors: 4 actors each allowed 600 requests
per minute send 2,400, and the provider answers the surplus with 429s. The Ray executor's
driver dispatches every request of a run, so one :class:`RequestRate` per endpoint there
bounds the whole job, however many actors send it. (Retries an actor's backend makes after
a 429 or a 5xx happen inside the actor and are not counted again here.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RequestRateSpec(BaseModel):
    """At most ``max_requests`` requests and ``max_tokens`` tokens in any ``window_s``."""

    model_config = ConfigDict(extra="forbid")

    max_requests: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    """Prompt plus completion tokens. A request's tokens are known only once it is answered,
    so the requests in flight when the budget fills can overshoot it by their own size."""
    window_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _some_budget(self) -> RequestRateSpec:
        if self.max_requests is None and self.max_tokens is None:
            raise ValueError("give max_requests, max_tokens or both")
        return self


def _stricter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


class RequestRate:
    """A sliding-window limiter: :meth:`acquire` waits until one more request fits;
    :meth:`record` books the tokens of an answer.

    Holds no asyncio primitive (the check and the booking happen with no ``await`` between
    them), so one limiter serves every run of a session, whichever event loop runs it."""

    def __init__(self, spec: RequestRateSpec) -> None:
        self.spec = spec
        self._sent: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def tighten(self, spec: RequestRateSpec) -> None:
        """Adopt the stricter budgets of two declared for one endpoint (the first window)."""
        scale = self.spec.window_s / spec.window_s
        requests = None if spec.max_requests is None else max(1, int(spec.max_requests * scale))
        tokens = None if spec.max_tokens is None else max(1, int(spec.max_tokens * scale))
        self.spec = RequestRateSpec(
            max_requests=_stricter(self.spec.max_requests, requests),
            max_tokens=_stricter(self.spec.max_tokens, tokens),
            window_s=self.spec.window_s,
        )

    def record(self, tokens: int) -> None:
        if tokens > 0 and self.spec.max_tokens is not None:
            self._tokens.append((time.monotonic(), tokens))
            self._token_sum += tokens

    def _expire(self, now: float) -> None:
        window = self.spec.window_s
        while self._sent and now - self._sent[0] >= window:
            self._sent.popleft()
        while self._tokens and now - self._tokens[0][0] >= window:
            self._token_sum -= self._tokens.popleft()[1]

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            self._expire(now)
            waits: list[float] = []
            limit, budget = self.spec.max_requests, self.spec.max_tokens
            if limit is not None and len(self._sent) >= limit:
                waits.append(self._sent[-limit] + self.spec.window_s - now)
            if budget is not None and self._token_sum >= budget:
                waits.append(self._tokens[0][0] + self.spec.window_s - now)
            if not waits:
                self._sent.append(now)
                return
            await asyncio.sleep(max(0.0, min(waits)))
