"""Prompt templates: a text file with ``{placeholders}``, optionally split into chat turns.

A template file is either plain text (sent as one user message, or as a raw prompt for
base models) or chat turns marked the way alpaca_eval's prompt files are::

    <|im_start|>system
    You are ...<|im_end|>
    <|im_start|>user
    ... {instruction} ...<|im_end|>

Substitution is a single pass over the template: text that comes *in* through a placeholder
(a model output containing ``{output_1}`` or braces of its own) is never substituted again.
Chat turns are read from the template file once, before any substitution; placeholders are
then filled inside each turn's content. A candidate output that contains ``<|im_end|>`` or
``<|im_start|>assistant`` is data: it stays verbatim inside the turn it was put in and can
never open, close or forge a turn.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from json.encoder import encode_basestring
from pathlib import Path
from typing import Literal

from simfarm.errors import ConfigError
from simfarm.textfiles import read_text
from simfarm.types import ChatMessage, DecodingParams, RequestDraft

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_TURN = re.compile(r"<\|im_start\|>([a-z]*)\n(.*?)<\|im_end\|>", re.S)
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    source: str
    """Where the template came from (file path), for error messages."""

    @classmethod
    def from_file(cls, path: Path) -> PromptTemplate:
        try:
            return cls(read_text(path), str(path))
        except ConfigError as error:
            raise ConfigError(f"cannot read prompt template: {error}") from error

    @cached_property
    def digest(self) -> str:
        """sha256 of the template text: part of every cache key that uses it."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @cached_property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.text))

    def _check_values(self, values: Mapping[str, str]) -> None:
        if self.placeholders <= values.keys():  # no set built per request (hot path)
            return
        missing = self.placeholders - set(values)
        if missing:
            raise ConfigError(
                f"{self.source}: placeholders {sorted(missing)} have no value "
                f"(available: {sorted(values)})"
            )

    @staticmethod
    def _substitute(text: str, values: Mapping[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), text)

    def render(self, values: Mapping[str, str]) -> str:
        """The whole template as one text (a raw prompt for base models)."""
        self._check_values(values)
        return self._substitute(self.text, values)

    @cached_property
    def turns(self) -> list[tuple[str, str]]:
        """``(role, content template)`` of each chat turn the template file marks, read once
        from the file (never from substituted text); one user turn if it marks none."""
        if "<|im_start|>" not in self.text:
            return [("user", self.text.strip())]
        turns: list[tuple[str, str]] = []
        position = 0
        for match in _TURN.finditer(self.text):
            between = self.text[position : match.start()]
            if between.strip():
                raise ConfigError(
                    f"{self.source}: text outside a <|im_start|>...<|im_end|> turn: "
                    f"{between.strip()[:60]!r}"
                )
            role = match[1]
            if role not in _ROLES:
                raise ConfigError(
                    f"{self.source}: unknown chat role {role!r} (expected one of {_ROLES})"
                )
            turns.append((role, match[2].strip()))
            position = match.end()
        rest = self.text[position:]
        if rest.strip() or not turns:
            raise ConfigError(
                f"{self.source}: a turn is not closed, or text follows the last turn: "
                f"{rest.strip()[:60]!r}"
            )
        return turns

    @cached_property
    def _turn_pieces(self) -> list[tuple[str, list[str]]]:
        """Each turn's role and its content split at placeholders, once: literal text at
        even positions, placeholder names at odd ones (``re.split`` with one group)."""
        return [(role, _PLACEHOLDER.split(content)) for role, content in self.turns]

    def render_messages(self, values: Mapping[str, str]) -> list[ChatMessage]:
        """The template's chat turns with placeholders filled inside each turn's content."""
        return [
            ChatMessage(role=role, content=content)  # type: ignore[arg-type]
            for role, content in self.render_turns(values)
        ]

    def render_turns(self, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """:meth:`render_messages` as ``(role, content)`` pairs, for a
        :class:`~simfarm.types.RequestDraft` (no message validated until one is sent).

        The same single pass as :meth:`render` (inserted text is never looked at again),
        over pieces split once per template instead of a regex pass per request."""
        self._check_values(values)  # so every name below has a value
        turns = []
        for role, pieces in self._turn_pieces:
            filled = pieces.copy()
            filled[1::2] = [values[name] for name in pieces[1::2]]
            turns.append((role, "".join(filled)))
        return turns

    @cached_property
    def _json_turns(self) -> list[tuple[str, list[str]]]:
        """:attr:`_turn_pieces` as they appear inside the JSON string of a turn's content:
        literal text JSON-escaped once (even positions), placeholder names (odd ones)."""
        return [
            (
                ',"role":' + encode_basestring(role) + "}",
                [encode_basestring(p)[1:-1] if i % 2 == 0 else p for i, p in enumerate(pieces)],
            )
            for role, pieces in self._turn_pieces
        ]

    def messages_json(self, values: Mapping[str, str]) -> str:
        """The canonical JSON of :meth:`render_messages` (what a cache key holds), without
        rendering or encoding the template's own text again.

        JSON escapes a string character by character, so the escaped content of a turn is
        its escaped literal pieces joined with its escaped values (a test compares this
        with encoding the rendered turns)."""
        self._check_values(values)
        parts = []
        for role_tail, pieces in self._json_turns:
            filled = pieces.copy()
            filled[1::2] = [encode_basestring(values[name])[1:-1] for name in pieces[1::2]]
            parts.append('{"content":"' + "".join(filled) + '"' + role_tail)
        return "[" + ",".join(parts) + "]"

    def draft(
        self,
        values: Mapping[str, str],
        params: DecodingParams,
        prompt_format: Literal["chat", "raw"] = "chat",
        prefill: str = "",
    ) -> RequestDraft:
        """The request this template makes of ``values``, as a draft (validated only if it
        is sent): one raw prompt followed by ``prefill`` (``prompt_format="raw"``, base
        models), else the chat turns."""
        if prompt_format == "raw":
            return RequestDraft(prompt=self.render(values) + prefill, params=params)
        return RequestDraft(template=self, values=values, params=params)
