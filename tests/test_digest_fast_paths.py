"""The hot-path digests equal the general ones they stand in for.

A fully cached rerun computes a content digest, a seeded draw and a cache key per item;
each has a fast form (strings joined without the general encoder; the shared part of a
cache key encoded once per judge). These tests pin each fast form to the definition it
replaces, on text that exercises JSON escaping, so no cache key or draw can drift.
"""

from __future__ import annotations

from typing import Any

import pytest

from simfarm.cache import CACHE_VERSION, RequestKeys, cache_key
from simfarm.types import (
    ChatMessage,
    CompletionRequest,
    DecodingParams,
    RequestDraft,
    canonical_json,
    stable_digest,
    strings_digest,
)

AWKWARD = [
    "",
    "plain",
    'quote " and backslash \\ and slash /',
    "control \x00 \x01 \x1f tab\t newline\n return\r",
    "unicode é 中文 😀 \u2028 \u2029",
    '{"nested": ["json", 1]}',
    "\x00simfarm-request\x00",
]


@pytest.mark.parametrize("parts", [[], ["one"], AWKWARD, list(reversed(AWKWARD))])
def test_strings_digest_is_the_stable_digest_of_the_list(parts: list[str]) -> None:
    assert strings_digest(parts) == stable_digest(parts)


def reference_key(
    identity: dict[str, Any],
    request: CompletionRequest,
    template_digest: str | None,
    stage: str | None,
) -> str:
    """The cache key's definition: one digest over the whole dict of fields."""
    fields: dict[str, Any] = {
        "cache_version": CACHE_VERSION,
        "backend": identity,
        "request": {
            "messages": [m.model_dump() for m in request.messages] if request.messages else None,
            "prompt": request.prompt,
            "params": request.params.model_dump(),
            **({"sample_index": request.sample_index} if request.sample_index else {}),
        },
        "template_digest": template_digest,
    }
    if stage is not None:
        fields["stage"] = stage
    return stable_digest(fields)


REQUESTS = [
    CompletionRequest(prompt="raw " + AWKWARD[3]),
    CompletionRequest(prompt="", sample_index=12, params=DecodingParams(top_p=0.25)),
    CompletionRequest(messages=[]),
    CompletionRequest(
        messages=[
            ChatMessage(role="system", content=AWKWARD[2]),
            ChatMessage(role="user", content=AWKWARD[4]),
        ],
        params=DecodingParams(temperature=0.7, seed=3, stop=["\n", "é"], logprobs=True),
    ),
    CompletionRequest(messages=[ChatMessage(role="user", content="x")], sample_index=4),
]
IDENTITIES = [
    {"backend": "openai", "model": "m", "options": {"base_url": "http://127.0.0.1:1/v1"}},
    {"backend": "local", "model": "é", "options": {"z": [1, 2.5, None], "a": {"b": True}}},
]


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize("template_digest", [None, "ab" * 32])
@pytest.mark.parametrize("stage", [None, "critique"])
def test_request_keys_equal_the_definition(
    identity: dict[str, Any], template_digest: str | None, stage: str | None
) -> None:
    keys = RequestKeys(identity, template_digest, stage)
    for request in REQUESTS:
        expected = reference_key(identity, request, template_digest, stage)
        assert keys.key(request) == expected
        assert request.content_json() == canonical_json(request.content_fields())
        assert cache_key(identity, request, template_digest, stage) == expected


def test_chat_turns_render_as_one_regex_pass_would() -> None:
    """Pieces split once per template fill exactly as one substitution pass per turn."""
    from simfarm.annotation.template import PromptTemplate

    template = PromptTemplate(
        "<|im_start|>system\n{persona} {unknown_in_values}.<|im_end|>\n"
        "<|im_start|>user\n{instruction}{input}\n(a) {output_1}\n(b) {output_2}{output_2} end"
        "<|im_end|>",
        "inline",
    )
    values = {
        "persona": "p {instruction}",
        "unknown_in_values": "",
        "instruction": "{output_1} é",
        "input": "",
        "output_1": "<|im_end|>{output_2}",
        "output_2": "\\1 \\g<0> {",
    }
    messages = template.render_messages(values)
    assert [(m.role, m.content) for m in messages] == [
        (role, PromptTemplate._substitute(content, values)) for role, content in template.turns
    ]
    assert messages[1].content.endswith("(b) \\1 \\g<0> {\\1 \\g<0> { end")
    # The messages' JSON, from pieces escaped once, is the JSON of the rendered messages.
    turns = [(m.role, m.content) for m in messages]
    expected = canonical_json([m.model_dump() for m in messages])
    assert template.messages_json(values) == expected
    awkward = {name: AWKWARD[i % len(AWKWARD)] + "\\" for i, name in enumerate(values)}
    assert template.messages_json(awkward) == canonical_json(
        [{"content": c, "role": r} for r, c in template.render_turns(awkward)]
    )
    # A draft of the template keys and builds as the rendered turns do, and keeps its own
    # copy of the values (the request sent is the request keyed).
    params = DecodingParams(seed=5)
    draft = template.draft(values, params)
    assert draft.content_json() == RequestDraft(turns=turns, params=params).content_json()
    values["output_1"] = "changed after drafting"
    assert draft.build() == CompletionRequest(messages=messages, params=params)
    assert draft.for_sample(2).build() == CompletionRequest(
        messages=messages, params=params
    ).for_sample(2)


def test_request_keys_follow_changed_decoding_parameters() -> None:
    """One keyer, parameters changed between requests (even in place): every key is the
    definition's (the shared JSON of the parameters is never reused stale)."""
    identity = IDENTITIES[0]
    keys = RequestKeys(identity)
    params = DecodingParams()
    for change in ({}, {"temperature": 0.5}, {"stop": ["x"]}, {}, {"max_tokens": 9}):
        for name, value in change.items():
            setattr(params, name, value)
        request = CompletionRequest(prompt="same prompt", params=params)
        assert keys.key(request) == reference_key(identity, request, None, None)
    params.stop = ["x"]
    keys.key(CompletionRequest(prompt="same prompt", params=params))
    params.stop.append("y")  # mutated inside a field, not reassigned
    request = CompletionRequest(prompt="same prompt", params=params)
    assert keys.key(request) == reference_key(identity, request, None, None)


@pytest.mark.parametrize("parts", [("order", "judge", "ab" * 32), tuple(AWKWARD), ("x", 3, None)])
def test_seeded_random_is_the_first_draw_of_seeded_rng(parts: tuple[object, ...]) -> None:
    from simfarm.annotation.judge import seeded_random, seeded_rng

    assert seeded_random(*parts) == seeded_rng(*parts).random()
    for index in range(200):  # many seeds, so a difference in seeding could not hide
        assert seeded_random(*parts, index) == seeded_rng(*parts, index).random()


@pytest.mark.parametrize("swapped", [False, True])
@pytest.mark.parametrize("probability", [None, 0.25])
@pytest.mark.parametrize("preference", [1.0, 2, 1.5])
def test_one_verdict_record_equals_the_general_path(
    swapped: bool, probability: float | None, preference: float
) -> None:
    from simfarm.annotation import load_annotator
    from simfarm.annotation.pairwise import PairwiseJudge, Verdict
    from simfarm.types import Completion, PairwiseItem

    judge = PairwiseJudge(load_annotator("alpaca_farm_greedy"), "pool-x")
    item = PairwiseItem(instruction="i", output_1="a", output_2="bb", item_id="7")
    completion = Completion(text="Output (b)", cost_usd=0.25, latency_s=0.5, cached=True)
    verdict = Verdict(
        swapped=swapped, completion=completion, preference=preference, probability=probability
    )
    fast = judge.combine(item, {"shown": verdict})
    general = judge._from_verdicts(item, [verdict])
    assert fast.model_dump() == general.model_dump()
    assert fast.model_fields_set == general.model_fields_set
    assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in general.__dict__.values()]


def draft_of(request: CompletionRequest) -> RequestDraft:
    """The draft a judge would plan for ``request``."""
    if request.messages is None:
        draft = RequestDraft(prompt=request.prompt, params=request.params)
    else:
        turns = [(m.role, m.content) for m in request.messages]
        draft = RequestDraft(turns=turns, params=request.params)
    return draft.for_sample(request.sample_index)


@pytest.mark.parametrize("request_", REQUESTS)
def test_a_draft_keys_and_builds_as_its_request(request_: CompletionRequest) -> None:
    """A draft's content JSON and key are its built request's, for every sample index
    (a fixed seed moves the same way), and building validates like the request does."""
    identity = IDENTITIES[1]
    draft = draft_of(request_)
    assert draft.build() == request_
    assert (
        draft.content_json() == request_.content_json() == canonical_json(request_.content_fields())
    )
    for index in (0, 1, 5):
        sampled = draft.for_sample(index)
        assert sampled.build() == request_.for_sample(index)
        assert RequestKeys(identity, "t", "s").key(sampled) == reference_key(
            identity, request_.for_sample(index), "t", "s"
        )


def test_a_draft_fails_validation_when_built_not_before() -> None:
    draft = RequestDraft(turns=[("narrator", "x")], params=DecodingParams())
    with pytest.raises(ValueError, match="role"):
        draft.build()
    with pytest.raises(ValueError, match="exactly one"):
        RequestDraft(turns=[], prompt="", params=DecodingParams())
