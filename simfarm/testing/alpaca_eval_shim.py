"""Lets alpaca_eval 0.6 import on setuptools >= 81, for the tests and benches that compare with it.

alpaca_eval 0.6.x imports ``pkg_resources`` for two helpers (version parsing, a distribution's
version), and setuptools >= 81 no longer ships that module. This provides the same two from
``packaging`` and ``importlib.metadata``; nothing simfarm compares against uses anything else.
One copy, shared by ``tests/evaluation`` and ``bench/``, so the stand-in cannot drift.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types


def provide_pkg_resources() -> None:
    """Install the two-function ``pkg_resources`` stand-in unless the real one imports."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse  # type: ignore[attr-defined]
        shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = shim
