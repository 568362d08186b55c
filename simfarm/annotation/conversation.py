"""Multi-turn context shown to a judge: the turns before the two outputs, as prompt text.

A conversation arrives as structured turns (``ChatMessage``: role + text), read from a
dataset whose turn structure its format declares, or from a pairs file's ``conversation``
list. It is rendered here into the text of the ``{conversation}`` placeholder, and that text
goes into the judge's prompt through the template's single substitution pass: like a
candidate output, it is data inside the turn it was put in and can never open or close a
turn of the judge's request. Nothing here, or after it, parses any text for roles.
"""

from __future__ import annotations

from collections.abc import Sequence

from simfarm.types import ChatMessage, PairwiseItem

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
"""How each role is labelled in the rendered conversation."""


def render_conversation(turns: Sequence[ChatMessage]) -> str:
    """``User: ...`` / ``Assistant: ...`` paragraphs, one per turn, in order."""
    return "\n\n".join(f"{ROLE_LABELS[turn.role]}: {turn.content}" for turn in turns)


def item_conversation(item: PairwiseItem) -> str:
    """The item's context as text: its turns, or for a single-turn item its instruction (and
    input) as the one user turn, so one template serves both kinds of item."""
    if item.conversation is not None:
        return render_conversation(item.conversation)
    request = f"{item.instruction}\n\n{item.input}" if item.input else item.instruction
    return render_conversation([ChatMessage(role="user", content=request)])


def conversation_values(item: PairwiseItem, placeholders: set[str]) -> dict[str, str]:
    """Template values for an item's context.

    A template with ``{conversation}`` gets the rendered turns there. A template without it
    (every single-turn template) gets them in ``{instruction}`` when the item has earlier
    turns, so a judge never sees only the last request of a conversation; single-turn items
    get exactly the values they always had."""
    if "conversation" in placeholders:
        return {"instruction": item.instruction, "conversation": item_conversation(item)}
    if item.conversation is not None and len(item.conversation) > 1:
        return {"instruction": render_conversation(item.conversation)}
    return {"instruction": item.instruction}
