"""Splitting a dataset's transcripts into turns: Anthropic's HH-RLHF layout and its like.

HH-RLHF stores each side of a pair as one text, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``;
chosen and rejected share the conversation and differ in the last assistant turn. The turn
markers are the *dataset's* structure, declared by the set's config, and are read once, here,
when the set is loaded. What comes out is structured turns (role + text); the two last
assistant turns become the candidate outputs and are never parsed for roles again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from simfarm.types import ChatMessage


class TranscriptError(ValueError):
    """A transcript that does not have the declared turn structure (message says why)."""


@dataclass(frozen=True)
class TranscriptMarkers:
    """The text that opens a user turn and an assistant turn (HH-RLHF's by default)."""

    user: str = "\n\nHuman:"
    assistant: str = "\n\nAssistant:"

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        # Longest first, so a marker that extends another is never cut short.
        ordered = sorted((self.user, self.assistant), key=len, reverse=True)
        return re.compile("|".join(re.escape(m) for m in ordered))

    def role(self, marker: str) -> str:
        return "user" if marker == self.user else "assistant"


def split_transcript(text: str, markers: TranscriptMarkers) -> list[ChatMessage]:
    """The turns of one transcript, in order; each turn's text is stripped of surrounding
    whitespace (HH-RLHF puts a space after each marker).

    A transcript that starts with a marker without its leading newlines (``"Human: hi..."``)
    is read as if it had them; any other text before the first marker is an error."""
    for marker in (markers.user, markers.assistant):
        bare = marker.lstrip()
        if bare != marker and text.lstrip().startswith(bare):
            text = marker + text.lstrip()[len(bare) :]
            break
    found = list(markers.pattern.finditer(text))
    if not found:
        raise TranscriptError(
            f"no turn markers ({markers.user!r}, {markers.assistant!r}) in {text[:60]!r}"
        )
    before = text[: found[0].start()]
    if before.strip():
        raise TranscriptError(f"text before the first turn marker: {before.strip()[:60]!r}")
    turns: list[ChatMessage] = []
    for number, match in enumerate(found):
        end = found[number + 1].start() if number + 1 < len(found) else len(text)
        content = text[match.end() : end].strip()
        turns.append(ChatMessage(role=markers.role(match[0]), content=content))  # type: ignore[arg-type]
    return turns


def context_and_response(turns: Sequence[ChatMessage]) -> tuple[list[ChatMessage], str]:
    """(every turn before the last, the last turn's text); the last turn must be the
    assistant's and the one before it the user's."""
    if turns[-1].role != "assistant":
        raise TranscriptError(
            f"the transcript ends with a {turns[-1].role} turn, not an assistant turn"
        )
    if len(turns) < 2 or turns[-2].role != "user":
        raise TranscriptError("the last assistant turn does not answer a human turn")
    return list(turns[:-1]), turns[-1].content


def first_difference(a: Sequence[ChatMessage], b: Sequence[ChatMessage]) -> str | None:
    """Where two contexts part (a description), or None when they are the same."""
    for number, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"turn {number} ({x.role} vs {y.role}) differs"
    if len(a) != len(b):
        return f"{len(a)} turns vs {len(b)}"
    return None
