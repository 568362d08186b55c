"""Records shared by every layer: requests to and completions from a backend, and the items
and feedback that annotators produce.

Everything that crosses a boundary (a backend, the cache, a file, the CLI) is one of these
pydantic models, so a malformed value fails where it enters, with the field named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simfarm.redaction import redact

FailureKind = Literal[
    "rate_limit",  # 429 after every retry
    "server_error",  # 5xx after every retry
    "timeout",  # no answer within the timeout after every retry
    "connection",  # could not reach the server
    "client_error",  # 4xx other than 429: the request itself is wrong; not retried
    "budget",  # the run's request budget was spent before this request
    "parse",  # the judge answered, but no verdict could be read from it
    "backend",  # any other backend failure (a local model raised, ...)
    "input",  # the item itself is unusable (e.g. a missing output)
    "worker",  # the workers sending it kept dying (e.g. Ray actors killed)
]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""One encoder for every digest: ``json.dumps`` with options builds a new encoder per call,
which was a measurable share of a fully cached rerun (three digests per item)."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the one serialisation digests are taken over."""
    return _CANONICAL.encode(value)


def stable_digest(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``: stable across processes and machines.

    Used for cache keys and to seed per-item randomness (never Python's salted ``hash()``).
    """
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def strings_digest(parts: Iterable[str]) -> str:
    """``stable_digest(list(parts))`` for a list of strings, without the general encoder.

    Per-item digests (content, seeded draws) run several times per judged item; for a list
    of strings the canonical JSON is just each string's JSON form joined by commas, which
    is what the encoder itself writes (``encode_basestring`` is its string encoder when
    ``ensure_ascii`` is off), so the digest is the same; a test compares the two."""
    text = "[" + ",".join(map(encode_basestring, parts)) + "]"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Record(BaseModel):
    """Base for boundary records: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ChatMessage(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class DecodingParams(Record):
    """Decoding parameters; every field here changes the output and so enters the cache key."""

    temperature: float = 0.0
    """Sampling temperature; 0 means greedy."""
    top_p: float = 1.0
    max_tokens: int = 256
    """Upper bound on generated tokens."""
    stop: list[str] | None = None
    seed: int | None = None
    """Sampling seed passed to backends that honour it."""
    logprobs: bool = False
    """Return the log-probability of each generated token."""
    top_logprobs: int | None = None
    """Also return this many most likely alternatives at each position (needs ``logprobs``)."""

    def json_text(self) -> str:
        """Canonical JSON of these parameters (as they enter cache keys)."""
        return canonical_json(self.model_dump())


_ROLE_TAILS = {
    role: ',"role":' + encode_basestring(role) + "}" for role in ("system", "user", "assistant")
}
"""The end of a message's canonical JSON for each role, encoded once."""


def _messages_json(turns: Iterable[tuple[str, str]]) -> str:
    """Canonical JSON of a list of chat messages given as ``(role, content)`` (each
    message's two fields in sorted order), or ``null`` for none."""
    parts = [
        '{"content":'
        + encode_basestring(content)
        + (_ROLE_TAILS.get(role) or ',"role":' + encode_basestring(role) + "}")
        for role, content in turns
    ]
    return "[" + ",".join(parts) + "]" if parts else "null"


def _content_json(
    messages_json: str, prompt: str | None, params_json: str, sample_index: int
) -> str:
    """The canonical JSON of a request's content fields (see
    :meth:`CompletionRequest.content_fields`), from its parts: ``messages_json`` is the
    JSON list of the messages, or ``null``. One writer for requests and drafts alike."""
    prompt_json = "null" if prompt is None else encode_basestring(prompt)
    text = '{"messages":' + messages_json + ',"params":' + params_json + ',"prompt":' + prompt_json
    if sample_index:
        text += ',"sample_index":' + str(sample_index)
    return text + "}"


def _params_for_sample(params: DecodingParams, current: int, index: int) -> DecodingParams:
    """``params`` of sample ``index`` of a request now at sample ``current``: a fixed seed
    moves with the index (so samples differ on backends that honour seeds)."""
    if params.seed is None:
        return params
    return params.model_copy(update={"seed": params.seed + index - current})


_CONTENT_FIELDS = {"messages", "prompt", "params"}


class CompletionRequest(Record):
    """One request to a backend: either chat ``messages`` or a raw ``prompt``."""

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    params: DecodingParams = Field(default_factory=DecodingParams)
    sample_index: int = Field(default=0, ge=0)
    """Which of k independent samples of the same request this is (best-of-n, judge
    variance, ``samples=k``): sample ``i`` has its own cache entry. Backends do not see it;
    :meth:`for_sample` also shifts a fixed ``seed`` so the k samples really differ."""

    @model_validator(mode="after")
    def _exactly_one_input(self) -> CompletionRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a CompletionRequest needs exactly one of `messages` or `prompt`")
        return self

    @property
    def endpoint(self) -> Literal["chat", "completions"]:
        return "chat" if self.messages is not None else "completions"

    def content_fields(self) -> dict[str, Any]:
        """The fields that determine the output, for cache keys.

        ``sample_index`` enters only when it is not 0, so the key of sample 0 is the key the
        same request had before samples existed (caches made then keep matching)."""
        # One serialiser call for all three (this runs once per request, cached or not).
        fields = self.model_dump(include=_CONTENT_FIELDS)
        if not self.messages:
            fields["messages"] = None
        if self.sample_index:
            fields["sample_index"] = self.sample_index
        return fields

    def content_json(self, params_json: str | None = None) -> str:
        """``canonical_json(self.content_fields())``, written from its parts: the text of
        each message is encoded once, directly, instead of through the general encoder (a
        cache key per request; a test pins the two forms together). ``params_json``: the
        canonical JSON of :attr:`params` when the caller already has it."""
        messages = _messages_json([(m.role, m.content) for m in self.messages or ()])
        params = params_json if params_json is not None else self.params.json_text()
        return _content_json(messages, self.prompt, params, self.sample_index)

    def for_sample(self, index: int) -> CompletionRequest:
        """The same request as sample ``index``; a fixed seed becomes ``seed + index`` so the
        samples differ on backends that honour seeds (without a seed they differ anyway)."""
        if index == self.sample_index:
            return self
        params = _params_for_sample(self.params, self.sample_index, index)
        return self.model_copy(update={"sample_index": index, "params": params})

    def build(self) -> CompletionRequest:
        """Itself (already validated): what :meth:`RequestDraft.build` gives for a draft,
        so a planned request of either form is sent the same way."""
        return self


class ChatTurnSource(Protocol):
    """A prompt template, as a :class:`RequestDraft` uses it (see
    :class:`~simfarm.annotation.template.PromptTemplate`)."""

    def render_turns(self, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """``(role, content)`` of each chat message, placeholders filled from ``values``."""
        ...

    def messages_json(self, values: Mapping[str, str]) -> str:
        """The canonical JSON of those messages (what :func:`_messages_json` writes)."""
        ...


class RequestDraft:
    """A request's content before it is validated: chat turns (given, or a template and
    its values) or a raw prompt, with its decoding parameters and sample index.

    Why: on a fully cached rerun every planned request is keyed and never sent; building
    a validated :class:`CompletionRequest` (and a :class:`ChatMessage` per turn) only to
    key it was a fifth of the rerun's time. A draft's :meth:`content_json` is the JSON of
    the request :meth:`build` makes from it, so its cache key is that request's key; the
    request itself is built, and validated, only to be sent. A draft of a ``template``
    takes the messages' JSON from the template (its literal text JSON-escaped once) and
    renders the turns only if they are needed.
    """

    __slots__ = ("_template", "_turns", "_values", "params", "prompt", "sample_index")

    def __init__(
        self,
        *,
        turns: Sequence[tuple[str, str]] | None = None,
        prompt: str | None = None,
        params: DecodingParams,
        sample_index: int = 0,
        template: ChatTurnSource | None = None,
        values: Mapping[str, str] | None = None,
    ) -> None:
        if (turns is not None) + (prompt is not None) + (template is not None) != 1:
            raise ValueError(
                "a RequestDraft needs exactly one of `turns`, `template` (with `values`) "
                "or `prompt`"
            )
        if (template is None) != (values is None):
            raise ValueError("a RequestDraft's `template` and `values` go together")
        self._turns = turns
        self._template = template
        self._values = None if values is None else dict(values)
        """A snapshot: the key and the request sent are made of the same values."""
        self.prompt = prompt
        self.params = params
        self.sample_index = sample_index

    @property
    def turns(self) -> Sequence[tuple[str, str]] | None:
        """``(role, content)`` of each chat message, or None for a raw prompt."""
        if self._turns is None and self._template is not None:
            assert self._values is not None
            self._turns = self._template.render_turns(self._values)
        return self._turns

    def content_json(self, params_json: str | None = None) -> str:
        """:meth:`CompletionRequest.content_json` of the request this draft builds."""
        if self._template is not None:
            assert self._values is not None
            messages = self._template.messages_json(self._values)
        else:
            messages = _messages_json(self._turns or ())
        params = params_json if params_json is not None else self.params.json_text()
        return _content_json(messages, self.prompt, params, self.sample_index)

    def for_sample(self, index: int) -> RequestDraft:
        """The draft of :meth:`CompletionRequest.for_sample` of the built request."""
        if index == self.sample_index:
            return self
        return RequestDraft(
            turns=self._turns if self._template is None else None,
            prompt=self.prompt,
            params=_params_for_sample(self.params, self.sample_index, index),
            sample_index=index,
            template=self._template,
            values=self._values,
        )

    def build(self) -> CompletionRequest:
        """The validated request (a bad role or sample index fails here, named)."""
        turns = self.turns
        messages = None
        if turns is not None:
            messages = [ChatMessage(role=role, content=text) for role, text in turns]  # type: ignore[arg-type]
        return CompletionRequest(
            messages=messages,
            prompt=self.prompt,
            params=self.params,
            sample_index=self.sample_index,
        )

    def __repr__(self) -> str:
        content = f"turns={self.turns!r}" if self.prompt is None else f"prompt={self.prompt!r}"
        return f"RequestDraft({content}, params={self.params!r}, sample_index={self.sample_index})"


PlannedContent = CompletionRequest | RequestDraft
"""What a judge plans to ask: a validated request, or a draft built only if it is sent."""


class TokenLogprob(Record):
    token: str
    logprob: float
    top_logprobs: dict[str, float] = Field(default_factory=dict)
    """The most likely alternatives at this position (token -> logprob), when asked for."""


class Failure(Record):
    kind: FailureKind
    message: str
    """What went wrong; secrets (API keys, Authorization values, URL credentials) are
    removed when the record is built, so no result file or cache entry can hold one."""
    attempts: int = 1

    @field_validator("message")
    @classmethod
    def _without_secrets(cls, message: str) -> str:
        return redact(message)


class Completion(Record):
    """A backend's answer to one request (or the failure that took its place)."""

    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    """Wall time of the request; batched local backends charge each request its share of
    the batch, so latencies add up to the time a run spent."""
    finish_reason: str | None = None
    cached: bool = False
    """True when this came from the cache (it then cost nothing in this run)."""
    warnings: list[str] = Field(default_factory=list)
    """Oddities of an answer that was kept anyway (invalid UTF-8 replaced, malformed
    ``usage`` counted as 0 tokens): the verdict was paid for and is readable."""
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class PairwiseItem(Record):
    """Two outputs for one instruction. ``output_1`` is the reference in alpaca_eval terms."""

    instruction: str
    input: str = ""
    output_1: str
    output_2: str
    generator_1: str = "output_1"
    generator_2: str = "output_2"
    item_id: str | None = None
    """Optional stable id from the source (dataset index, ...)."""
    conversation: list[ChatMessage] | None = None
    """Multi-turn context: every turn before the two outputs, in order, ending with the user
    turn they answer (``instruction`` is then that turn's text). None for single-turn items,
    which are judged, digested and cached exactly as before the field existed."""

    @field_validator("conversation")
    @classmethod
    def _ends_with_user_turn(cls, turns: list[ChatMessage] | None) -> list[ChatMessage] | None:
        if turns is not None and (not turns or turns[-1].role != "user"):
            raise ValueError("a conversation must end with the user turn the outputs answer")
        return turns

    def content_digest(self) -> str:
        """Digest of what is judged (not of the generator names): seeds per-item randomness."""
        strings = (self.instruction, self.input, self.output_1, self.output_2)
        if self.conversation is None:  # the digest single-turn items always had
            return strings_digest(strings)
        return stable_digest([*strings, [turn.model_dump() for turn in self.conversation]])


Preference = float
"""alpaca_eval semantics: 1.0 = output_1 wins, 2.0 = output_2 wins, 1.5 = tie; values in
between are allowed for probability-weighted judges."""


class PairwiseAnnotation(Record):
    """One pairwise judgement, as written to annotation files (one JSON object per line)."""

    instruction: str
    input: str = ""
    output_1: str
    generator_1: str
    output_2: str
    generator_2: str
    item_id: str | None = None
    conversation: list[ChatMessage] | None = None
    """The item's multi-turn context (see :class:`PairwiseItem`), kept with the verdict."""
    preference: Preference | None = None
    """1 = output_1 wins, 2 = output_2 wins, 1.5 = tie; None when the annotation failed."""
    preference_probability: float | None = None
    """P(output_2 wins) for logprob-weighted judges (then preference = 1 + this)."""
    annotator: str
    """The persona (or pool member) that produced this judgement."""
    pool: str | None = None
    swapped: bool = False
    """True when the outputs were shown to the judge in swapped order (already undone)."""
    position_consistent: bool | None = None
    """In both-orders mode: whether the two orders agreed."""
    raw_completion: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    failure: Failure | None = None
