"""A requests-per-window budget for one endpoint, enforced where every request is dispatched.

Per-actor limits multiply with the number of actors: 4 actors each allowed 600 requests
per minute send 2,400, and the provider answers the surplus with 429s. The Ray executor's
driver dispatches every request of a run, so one :class:`RequestRate` there bounds the whole
job, however many actors send it. (Retries an actor's backend makes after a 429 or a 5xx
happen inside the actor and are not counted again here.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from pydantic import BaseModel, ConfigDict, Field


class RequestRateSpec(BaseModel):
    """At most ``max_requests`` requests in any ``window_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    max_requests: int = Field(ge=1)
    window_s: float = Field(default=60.0, gt=0)


class RequestRate:
    """A sliding-window limiter: :meth:`acquire` waits until one more request fits.

    Holds no asyncio primitive (the check and the booking happen with no ``await`` between
    them), so one limiter serves every run of a session, whichever event loop runs it."""

    def __init__(self, spec: RequestRateSpec) -> None:
        self.spec = spec
        self._sent: deque[float] = deque()

    def tighten(self, spec: RequestRateSpec) -> None:
        """Adopt the stricter of two budgets declared for one endpoint."""
        if spec.max_requests / spec.window_s < self.spec.max_requests / self.spec.window_s:
            self.spec = spec

    async def acquire(self) -> None:
        while True:
            window, limit = self.spec.window_s, self.spec.max_requests
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= window:
                self._sent.popleft()
            if len(self._sent) < limit:
                self._sent.append(now)
                return
            await asyncio.sleep(self._sent[-limit] + window - now)
