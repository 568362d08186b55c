"""Backends by name, imported only when used.

Importing simfarm must not import torch, vLLM or an SDK: a user of the ``openai`` backend
should not pay for (or need) any of them. Each entry is ``module:ClassName`` plus the extra
that provides its dependencies, so a missing dependency becomes an error that says which
``pip install 'simfarm[...]'`` fixes it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from simfarm.backends.base import Backend, BackendSpec
from simfarm.errors import ConfigError, MissingExtraError


@dataclass(frozen=True)
class BackendEntry:
    target: str
    """``module:ClassName`` of the backend class."""
    extra: str | None
    """The pyproject extra that installs its optional dependencies (None: core only)."""


BACKENDS: dict[str, BackendEntry] = {
    "openai": BackendEntry("simfarm.backends.openai_http:OpenAIHTTPBackend", None),
    "openai_sdk": BackendEntry("simfarm.backends.openai_sdk:OpenAISDKBackend", "openai"),
    "transformers": BackendEntry(
        "simfarm.backends.transformers_local:TransformersBackend", "local"
    ),
    "embedded": BackendEntry("simfarm.backends.embedded:EmbeddedBackend", "local"),
    "vllm": BackendEntry("simfarm.backends.vllm_engine:VLLMBackend", "vllm"),
}


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``, importing its module now."""
    try:
        entry = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}; registered backends: {', '.join(sorted(BACKENDS))}"
        ) from None
    module_name, class_name = entry.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if entry.extra is None or (error.name or "").startswith("simfarm"):
            raise
        raise MissingExtraError(f"the {name!r} backend", entry.extra, error.name or "?") from error
    cls: type[Backend] = getattr(module, class_name)
    return cls


def create_backend(spec: BackendSpec) -> Backend:
    """Build the backend a spec describes (options validated by the backend itself)."""
    cls = backend_class(spec.name)
    return cls.from_spec(spec)  # type: ignore[attr-defined, no-any-return]
