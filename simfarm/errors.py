"""Exceptions that reach users; each message says what to do about it."""

from __future__ import annotations


class SimfarmError(Exception):
    """Base class for errors simfarm raises on purpose."""


class MissingExtraError(SimfarmError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependency {module!r}, which is not installed. "
            f"Install it with: pip install 'simfarm[{extra}]'"
        )
        self.extra = extra
        self.module = module


class ConfigError(SimfarmError, ValueError):
    """A config or data file is invalid; the message names the file, record and field."""


class BackendError(SimfarmError):
    """A backend cannot be built or used at all (as opposed to one request failing)."""
