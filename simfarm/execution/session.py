"""Backends whose lifetime the caller controls, shared across many annotation runs.

Without a session, every ``annotate()`` call builds its backends and closes them at the end:
a local judge would load its model again per call, which a PPO loop asking its judge
thousands of times cannot afford. A :class:`BackendSession` builds each distinct backend
once (by its spec) and keeps it until the session closes, and gives every backend on one
endpoint (base URL + model) the same :class:`~simfarm.execution.limits.EndpointLimiter`,
so pool members and repeated runs share the endpoint's concurrency and request budget.

Two ways to hold one:

- ``async with BackendSession() as session:`` inside a running event loop (async trainers,
  notebooks): ``await annotate_async(..., session=session)``.
- ``with BackendSession() as session:`` from synchronous code: the session runs its own
  event loop in a background thread (backends such as aiohttp sessions are bound to one
  loop, so they must outlive every call on the same loop); ``annotate(..., session=session)``
  runs there, from any thread, also one whose own loop is running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from simfarm.backends.base import Backend, BackendSpec
from simfarm.backends.registry import create_backend
from simfarm.errors import SimfarmError
from simfarm.execution.executor import ExecutorFactory
from simfarm.execution.limits import EndpointLimiter
from simfarm.execution.local import InProcessExecutor
from simfarm.types import stable_digest

T = TypeVar("T")


class BackendSession:
    """Backends built once per distinct spec, limiters shared per endpoint."""

    def __init__(self, backend_factory: Callable[[BackendSpec], Backend] = create_backend) -> None:
        self._backend_factory = backend_factory
        self._backends: dict[str, Backend] = {}
        self._limiters: dict[str, EndpointLimiter] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- backends and limits --

    def backend(self, spec: BackendSpec) -> Backend:
        """The backend for ``spec``, built on first request and kept for the session."""
        if self._closed:
            raise SimfarmError("this BackendSession is closed")
        key = stable_digest(spec.model_dump(mode="json"))
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backend_factory(spec)
            endpoint = backend.endpoint()
            if endpoint is not None:
                limiter = self._limiters.get(endpoint)
                if limiter is None:
                    limiter = self._limiters[endpoint] = backend.limiter
                else:
                    backend.bind_limiter(limiter)
            self._backends[key] = backend
        return backend

    def limiter(self, endpoint: str) -> EndpointLimiter | None:
        """The shared limiter of ``endpoint`` (see ``Backend.endpoint``), if one is in use."""
        return self._limiters.get(endpoint)

    @property
    def backends(self) -> list[Backend]:
        """The backends built so far."""
        return list(self._backends.values())

    def executor_factory(self) -> ExecutorFactory:
        """In-process executors over this session's backends."""

        def factory(spec: BackendSpec, on_result: Any) -> InProcessExecutor[Any]:
            return InProcessExecutor(self.backend(spec), on_result)

        return factory

    # -- async lifetime --

    async def aclose(self) -> None:
        """Close every backend (connections, models) built by this session."""
        self._closed = True
        backends, self._backends = list(self._backends.values()), {}
        await asyncio.gather(*(backend.aclose() for backend in backends))

    async def __aenter__(self) -> BackendSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- sync lifetime: an event loop of its own in a background thread --

    def __enter__(self) -> BackendSession:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="simfarm-backend-session", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def runs_own_loop(self) -> bool:
        """True for a session entered with ``with`` (sync use)."""
        return self._loop is not None

    def on_own_loop(self) -> bool:
        """True when called from the session's own loop (or the session has none)."""
        if self._loop is None:
            return True
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` run on the session's own loop, from another loop."""
        if self._loop is None:
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the session's loop and wait for it (sync sessions only).

        Ctrl-C while waiting cancels it there (its cleanup runs) and is raised here."""
        if self._loop is None:
            coroutine.close()
            raise SimfarmError(
                "this BackendSession was entered with `async with`: await the async API "
                "(annotate_async) instead, or enter it with `with` for synchronous calls"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            with contextlib.suppress(concurrent.futures.CancelledError, Exception):
                future.result()
            raise

    def close(self) -> None:
        """Close the backends, then stop the session's loop (sync sessions)."""
        if self._loop is None:
            if self._backends:
                raise SimfarmError("an `async with` BackendSession is closed with `await aclose()`")
            self._closed = True
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join()
            self._loop.close()
            self._loop = None
