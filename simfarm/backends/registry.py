"""Backends by name, imported only when used.

Importing simfarm must not import torch, vLLM or an SDK: a user of the ``openai`` backend
should not pay for (or need) any of them. Each entry is ``module:ClassName`` plus the extra
that provides its dependencies, so a missing dependency becomes an error that says which
``pip install 'simfarm[...]'`` fixes it.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from simfarm.backends.base import Backend, BackendSpec
from simfarm.errors import ConfigError, MissingExtraError


@dataclass(frozen=True)
class BackendEntry:
    target: str
    """``module:ClassName`` of the backend class."""
    extra: str | None
    """The pyproject extra that installs its optional dependencies (None: core only)."""
    options: str
    """``module:ClassName`` of the pydantic model of its ``options``, in a module that
    imports without the extra (no torch, vLLM or SDK), so a persona file is checked when it
    is loaded, not when the first request is due."""


_OPENAI_OPTIONS = "simfarm.backends.openai_http:OpenAIHTTPOptions"

BACKENDS: dict[str, BackendEntry] = {
    "openai": BackendEntry("simfarm.backends.openai_http:OpenAIHTTPBackend", None, _OPENAI_OPTIONS),
    "openai_sdk": BackendEntry(
        "simfarm.backends.openai_sdk:OpenAISDKBackend", "openai", _OPENAI_OPTIONS
    ),
    "transformers": BackendEntry(
        "simfarm.backends.transformers_local:TransformersBackend",
        "local",
        "simfarm.backends.transformers_local:TransformersOptions",
    ),
    "embedded": BackendEntry(
        "simfarm.backends.embedded:EmbeddedBackend",
        "local",
        "simfarm.backends.transformers_local:LocalModelOptions",
    ),
    "vllm": BackendEntry(
        "simfarm.backends.vllm_engine:VLLMBackend",
        "vllm",
        "simfarm.backends.vllm_engine:VLLMOptions",
    ),
}


def unknown_backend_message(name: str) -> str:
    """``unknown backend 'opanai'; did you mean 'openai'? registered: ...``"""
    close = difflib.get_close_matches(name, list(BACKENDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown backend {name!r}{hint} (registered backends: {', '.join(sorted(BACKENDS))})"


def check_backend_options(name: str, options: dict[str, Any]) -> None:
    """Validate a persona's backend name and ``options`` without building the backend (or
    importing torch/vLLM/an SDK). Raises ``ValueError`` naming the option and, for a
    misspelling, the closest real one; callers add the file."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise ValueError(unknown_backend_message(name))
    module_name, class_name = entry.options.split(":")
    try:
        model: type[BaseModel] = getattr(importlib.import_module(module_name), class_name)
    except ModuleNotFoundError as error:  # pragma: no cover - options modules import light
        if (error.name or "").startswith("simfarm"):
            raise
        return  # validated when the backend is built (with its extra's error message)
    try:
        model.model_validate(options)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"])
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(item["loc"][0]), list(model.model_fields))
                message = "unknown option" + (f"; did you mean {close[0]!r}?" if close else "")
                message += f" (options of the {name!r} backend: {', '.join(model.model_fields)})"
            problems.append(f"options.{field}: {message}")
        raise ValueError("; ".join(problems)) from None


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``, importing its module now."""
    try:
        entry = BACKENDS[name]
    except KeyError:
        raise ConfigError(unknown_backend_message(name)) from None
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
