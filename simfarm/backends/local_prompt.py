"""The text a local model sees for a request: chat template, or a plain transcript.

Shared by the backends that tokenize prompts themselves (``transformers``, ``embedded``,
``vllm``), so a chat request reads the same to a model whichever of them serves it. Pure
functions over the request and the tokenizer: no torch, no model, importable without extras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from simfarm.types import ChatMessage, CompletionRequest

_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}

FALLBACK_CHAT_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nSystem:")
"""Stop strings added to chat requests rendered with :func:`plain_chat_prompt`: a base model
continuing a transcript writes the next turn itself, which is not part of its answer."""


def plain_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """Render a chat as a plain transcript, for tokenizers without a chat template.

    Base (not instruction-tuned) models have no chat template; what they have seen in
    pre-training is text, and a transcript is the text form of a chat that they continue most
    sensibly. Each message becomes ``"<Role>: <content>"`` (roles ``System``, ``User``,
    ``Assistant``), messages are separated by a blank line, and the prompt ends with
    ``"Assistant:"`` (no trailing space: sentencepiece vocabularies attach the space to the next
    word) so the model writes the assistant's turn. Requests rendered this way also stop at
    :data:`FALLBACK_CHAT_STOPS`.
    """
    turns = [f"{_ROLE_LABELS[m.role]}: {m.content.strip()}" for m in messages]
    turns.append("Assistant:")
    return "\n\n".join(turns)


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that prompt rendering needs."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class RenderedPrompt:
    """A request's input as text, and how to tokenize and stop it."""

    text: str
    templated: bool
    """True when a chat template produced ``text``: it then already holds the special tokens
    (BOS, turn markers) and must be tokenized without adding them again."""
    extra_stop: tuple[str, ...] = ()
    """Stop strings implied by the rendering (see :data:`FALLBACK_CHAT_STOPS`)."""
    strip_output: bool = False
    """The answer is a turn in a plain transcript: whitespace around it is formatting, not
    content (the model writes ``" The answer."`` after ``"Assistant:"``), so it is stripped."""


def render_prompt(request: CompletionRequest, tokenizer: ChatTokenizer | None) -> RenderedPrompt:
    """The text a model sees for ``request``.

    A raw ``prompt`` is used as is. Chat ``messages`` go through the tokenizer's chat template
    (with the generation prompt appended) when it has one, else :func:`plain_chat_prompt`.
    Raises ``ValueError`` when the template rejects the conversation (e.g. a template that
    allows no system message): the request itself is then at fault.
    """
    if request.messages is None:
        return RenderedPrompt(text=request.prompt or "", templated=False)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        conversation = [m.model_dump() for m in request.messages]
        try:
            text = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:  # jinja raises TemplateError (and others) for bad chats
            raise ValueError(f"the chat template rejected the messages: {error}") from error
        return RenderedPrompt(text=str(text), templated=True)
    return RenderedPrompt(
        text=plain_chat_prompt(request.messages),
        templated=False,
        extra_stop=FALLBACK_CHAT_STOPS,
        strip_output=True,
    )
