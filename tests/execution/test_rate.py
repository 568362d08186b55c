"""The driver's request-rate limiter: a sliding window, shared across runs and loops."""

from __future__ import annotations

import asyncio
import time

from simfarm.execution.rate import RequestRate, RequestRateSpec


def test_no_window_ever_holds_more_than_the_budget_across_runs() -> None:
    rate = RequestRate(RequestRateSpec(max_requests=4, window_s=0.3))
    stamps: list[float] = []

    async def run(n: int) -> None:
        async def one() -> None:
            await rate.acquire()
            stamps.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(run(6))  # one run, then another on a new event loop: one budget
    asyncio.run(run(6))
    assert len(stamps) == 12
    for i, start in enumerate(stamps):
        within = [t for t in stamps[i:] if t - start < 0.3 - 1e-3]
        assert len(within) <= 4, (i, within)


def test_the_stricter_budget_of_one_endpoint_wins() -> None:
    rate = RequestRate(RequestRateSpec(max_requests=600, window_s=60))
    rate.tighten(RequestRateSpec(max_requests=20, window_s=60))
    rate.tighten(RequestRateSpec(max_requests=100, window_s=60))
    assert rate.spec.max_requests == 20


def test_a_token_budget_admits_no_request_once_the_window_holds_it() -> None:
    """Each answer costs 40 tokens, 100 per 0.3 s: a request is admitted only while the
    tokens booked in the window before it are under the budget."""
    window, budget = 0.3, 100
    rate = RequestRate(RequestRateSpec(max_tokens=budget, window_s=window))
    booked: list[tuple[float, int]] = []
    admitted: list[float] = []

    async def run() -> None:
        for _ in range(9):
            await rate.acquire()
            now = time.monotonic()
            admitted.append(now)
            rate.record(40)
            booked.append((now, 40))

    asyncio.run(run())
    for t in admitted:
        before = sum(n for s, n in booked if t - window + 1e-3 < s < t)
        assert before < budget, (t, before)
    assert admitted[-1] - admitted[0] >= window  # it did have to wait


def test_a_budget_needs_requests_or_tokens() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_requests, max_tokens or both"):
        RequestRateSpec(window_s=60)
