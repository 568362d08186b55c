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
    """A sliding-window limiter: :meth:`acquire` waits until one more request fits."""

    def __init__(self, spec: RequestRateSpec) -> None:
        self.spec = spec
        self._sent: deque[float] = deque()
        self._lock: asyncio.Lock | None = None

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served
            window, limit = self.spec.window_s, self.spec.max_requests
            while True:
                now = time.monotonic()
                while self._sent and now - self._sent[0] >= window:
                    self._sent.popleft()
                if len(self._sent) < limit:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + window - now)
