"""Limits that belong to an endpoint, not to a backend instance.

Two pool members on one server, or one persona used by many ``annotate()`` calls in a
session, must not multiply the server's concurrency or a run's request budget. A
:class:`~simfarm.execution.session.BackendSession` therefore hands every backend that talks
to the same endpoint (e.g. base URL + model) the same :class:`EndpointLimiter`.
"""

from __future__ import annotations

import asyncio


class EndpointLimiter:
    """At most ``max_concurrency`` requests in flight and ``request_budget`` requests in all.

    The semaphore is made on first use, in the event loop that uses it (a limiter belongs
    to one session, and a session to one loop).
    """

    def __init__(self, max_concurrency: int, request_budget: int | None = None) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.request_budget = request_budget
        self.requests_spent = 0
        """Requests (attempts) counted against the budget so far."""
        self._semaphore: asyncio.Semaphore | None = None

    def tighten(self, max_concurrency: int, request_budget: int | None) -> None:
        """Adopt the stricter of two declarations for one endpoint (before first use)."""
        if self._semaphore is None:
            self.max_concurrency = max(1, min(self.max_concurrency, max_concurrency))
        if request_budget is not None:
            current = self.request_budget
            self.request_budget = (
                request_budget if current is None else min(current, request_budget)
            )

    def try_spend(self) -> bool:
        """Count one request against the budget; False when it is spent (send nothing)."""
        if self.request_budget is not None and self.requests_spent >= self.request_budget:
            return False
        self.requests_spent += 1
        return True

    def slots(self) -> asyncio.Semaphore:
        """The endpoint's concurrency slots: ``async with limiter.slots(): send(...)``."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._semaphore
