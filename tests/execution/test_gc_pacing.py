"""The bulk phase's garbage-collection pacing is scoped: thresholds always come back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from simfarm.execution.gc_pacing import fewer_collections


@pytest.fixture(autouse=True)
def _keep_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_raised_inside_restored_after() -> None:
    gc.set_threshold(700, 10, 10)
    with fewer_collections(5_000):
        assert gc.get_threshold() == (5_000, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_nested_blocks_restore_only_when_the_outermost_ends() -> None:
    gc.set_threshold(700, 10, 10)
    with fewer_collections(5_000):
        with fewer_collections(9_000):
            assert gc.get_threshold()[0] == 5_000
        assert gc.get_threshold()[0] == 5_000
    assert gc.get_threshold() == (700, 10, 10)


def test_interleaved_blocks_restore_the_original() -> None:
    """Two runs whose blocks end in the other order (two tasks, or two threads)."""
    gc.set_threshold(700, 10, 10)
    first, second = fewer_collections(5_000), fewer_collections(5_000)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == 5_000
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_exception_restores() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), fewer_collections(5_000):
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_never_lowers_or_reenables() -> None:
    gc.set_threshold(50_000, 10, 10)
    with fewer_collections(5_000):
        assert gc.get_threshold()[0] == 50_000
    gc.set_threshold(0, 10, 10)  # collection disabled by the caller
    with fewer_collections(5_000):
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold() == (0, 10, 10)


def test_threads() -> None:
    gc.set_threshold(700, 10, 10)
    inside = threading.Barrier(4)

    def work() -> None:
        with fewer_collections(5_000):
            inside.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.get_threshold() == (700, 10, 10)
