"""Prompt templates: a text file with ``{placeholders}``, optionally split into chat turns.

A template file is either plain text (sent as one user message, or as a raw prompt for
base models) or chat turns marked the way alpaca_eval's prompt files are::

    <|im_start|>system
    You are ...<|im_end|>
    <|im_start|>user
    ... {instruction} ...<|im_end|>

Substitution is a single pass over the template: text that comes *in* through a placeholder
(a model output containing ``{output_1}`` or braces of its own) is never substituted again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from simfarm.errors import ConfigError
from simfarm.types import ChatMessage

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>", re.S)


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    source: str
    """Where the template came from (file path), for error messages."""

    @classmethod
    def from_file(cls, path: Path) -> PromptTemplate:
        try:
            return cls(path.read_text(encoding="utf-8"), str(path))
        except OSError as error:
            raise ConfigError(f"{path}: cannot read prompt template: {error}") from error

    @cached_property
    def digest(self) -> str:
        """sha256 of the template text: part of every cache key that uses it."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @cached_property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.text))

    def render(self, values: Mapping[str, str]) -> str:
        missing = self.placeholders - set(values)
        if missing:
            raise ConfigError(
                f"{self.source}: placeholders {sorted(missing)} have no value "
                f"(available: {sorted(values)})"
            )
        return _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), self.text)

    def render_messages(self, values: Mapping[str, str]) -> list[ChatMessage]:
        """Chat turns if the template marks them, else one user message."""
        rendered = self.render(values)
        turns = _TURN.findall(rendered) if "<|im_start|>" in self.text else []
        if not turns:
            return [ChatMessage(role="user", content=rendered.strip())]
        return [ChatMessage(role=role, content=content.strip()) for role, content in turns]  # type: ignore[arg-type]
