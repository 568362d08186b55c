"""Every judge kind's planned requests have the cache keys they always had.

Judges may plan a request as a :class:`~simfarm.types.RequestDraft` (the rendered turns
or prompt, not yet a validated :class:`~simfarm.types.CompletionRequest`), so a fully
cached rerun keys it without building the request it never sends. These tests pin, for
each judge kind that caches, the key the run computes from what the judge planned to

- the key of the request that would be sent (:func:`~simfarm.cache.cache_key` of it), and
- a golden digest recorded before drafts existed (so neither path can drift),

for single-turn and multi-turn items, both shown orders, raw and chat prompts, and later
samples (``for_sample``), on text that exercises JSON escaping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simfarm.annotation import load_annotator
from simfarm.annotation.hindsight import HindsightJudge, HindsightReading
from simfarm.annotation.judge import AnyJudge, PlannedRequest
from simfarm.annotation.run import judges_for
from simfarm.annotation.scenario import pairs_of
from simfarm.cache import RequestKeys, cache_key
from simfarm.types import ChatMessage, Completion, CompletionRequest, PairwiseItem

IDENTITY = {"backend": "openai", "model": "golden-judge", "options": {"extra_body": {"k": 1}}}
AWKWARD = 'quote " \\ slash / tab\t newline\n é 中文 😀 \u2028 {output_1} <|im_end|>'

SINGLE_TURN = PairwiseItem(
    instruction="Explain: " + AWKWARD,
    input="with input",
    output_1="first " + AWKWARD,
    output_2="second, longer " + AWKWARD,
)
CONVERSATION = PairwiseItem(
    instruction="and now?",
    output_1="one",
    output_2="two " + AWKWARD,
    conversation=[
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="hi " + AWKWARD),
        ChatMessage(role="assistant", content="hello"),
        ChatMessage(role="user", content="and now?"),
    ],
)


def built(request: Any) -> CompletionRequest:
    """The request that would be sent for what a judge planned."""
    return request if isinstance(request, CompletionRequest) else request.build()


def planned_keys(judge: AnyJudge, planned: list[PlannedRequest], sample: int = 0) -> list[str]:
    """The run's keys of ``planned`` (sample ``sample``), each checked against the key of
    the request that would be sent."""
    keys = []
    for request in planned:
        content = request.request.for_sample(sample) if sample else request.request
        run_key = RequestKeys(IDENTITY, judge.template_digest, request.stage).key(content)
        sent = built(content)
        assert isinstance(sent, CompletionRequest) and sent.sample_index == sample
        assert run_key == cache_key(IDENTITY, sent, judge.template_digest, request.stage)
        keys.append(run_key)
    return keys


CONVERSATION_TEMPLATE = (
    "<|im_start|>system\nYou judge.{persona}<|im_end|>\n"
    "<|im_start|>user\n{conversation}\n\nLast: {instruction}\n(a) {output_1}\n(b) {output_2}"
    "<|im_end|>"
)


def conversation_persona(folder: Path) -> str:
    """A sampled pairwise persona (seed, stop, persona text) on a template with
    ``{conversation}`` and a system turn."""
    (folder / "conversation.txt").write_text(CONVERSATION_TEMPLATE, encoding="utf-8")
    (folder / "conversation_judge.yaml").write_text(
        "backend: {name: openai, model: m}\n"
        "prompt_template: conversation.txt\n"
        'persona_text: " Loves detail \\" é."\n'
        'decoding: {temperature: 1.0, max_tokens: 16, seed: 7, stop: ["\\n"]}\n'
        "parser: {kind: regex, pattern: 'Output \\(([ab])\\)', labels: {a: 1, b: 2}}\n",
        encoding="utf-8",
    )
    return "conversation_judge"


def single_items() -> list[Any]:
    from simfarm.annotation.feedback_records import SingleItem

    return [
        SingleItem(instruction="Rate: " + AWKWARD, output="answer " + AWKWARD, reference="ref"),
        SingleItem(instruction="plain", input="in " + AWKWARD, output="o"),
    ]


def kind_keys(persona: str, items: list[Any], folder: Path | None = None) -> list[str]:
    """Keys of each item's first requests, as sample 0 and as sample 2."""
    judge = judges_for(load_annotator(persona, [folder] if folder else None))
    keys = []
    for item in items:
        for sample in (0, 2):
            keys += planned_keys(judge, judge.plan(item), sample)  # type: ignore[union-attr]
    return keys


def hindsight_keys(persona: str) -> list[str]:
    """Foresight (and outcome) requests, then the hindsight stage after them."""
    judge = judges_for(load_annotator(persona))
    assert isinstance(judge, HindsightJudge)
    items = pairs_of(judge.scenario.spec.id, judge.scenario.load_instances())[:2]
    keys = []
    for item in items:
        planned = judge.plan(item)
        keys += planned_keys(judge, planned)
        readings = {
            p.slot: HindsightReading(completion=Completion(text="x"), text="it broke " + AWKWARD)
            for p in planned
        }
        keys += planned_keys(judge, judge.follow_up(item, readings))
    return keys


PAIRS = [SINGLE_TURN, CONVERSATION]
CASES = {
    "alpaca_farm_greedy": lambda _: kind_keys("alpaca_farm_greedy", PAIRS),
    "weighted_alpaca_eval": lambda _: kind_keys("weighted_alpaca_eval", PAIRS),
    "embedded_gemma": lambda _: kind_keys("embedded_gemma", PAIRS),  # raw, both orders
    "literature_fan": lambda _: kind_keys("literature_fan", PAIRS),
    "conversation": lambda folder: kind_keys(conversation_persona(folder), PAIRS, folder),
    "ultrafeedback_rating": lambda _: kind_keys("ultrafeedback_rating", single_items()),
    "topical_chat_rating_chat": lambda _: kind_keys("topical_chat_rating_chat", single_items()),
    "topical_chat_rating": lambda _: kind_keys("topical_chat_rating", single_items()),
    "prometheus_helpfulness": lambda _: kind_keys("prometheus_helpfulness", single_items()),
    "embedded_critique": lambda _: kind_keys("embedded_critique", single_items()),
    "prometheus_helpfulness_relative": lambda _: kind_keys(
        "prometheus_helpfulness_relative", PAIRS
    ),
    "likelihood_response": lambda _: kind_keys("likelihood_response", PAIRS),
    "likelihood_follow_up": lambda _: kind_keys("likelihood_follow_up", PAIRS),
    "hindsight_shopping": lambda _: hindsight_keys("hindsight_shopping"),
    "hindsight_world_model": lambda _: hindsight_keys("hindsight_world_model"),
}
"""Case -> its keys, in plan order (first 16 hex digits in :data:`GOLDEN`)."""

GOLDEN = {
    "alpaca_farm_greedy": [
        "1e0b9c69f3775142",
        "cfde16f214c2a56a",
        "ee832f90f05ea090",
        "06b644b01733c759",
    ],
    "weighted_alpaca_eval": [
        "86d8c7da5cc56580",
        "8ecd07771907f843",
        "61840a6f8ea07e75",
        "f3024dbee9f8f341",
    ],
    "embedded_gemma": [
        "13fae87677640343",
        "273dad1202fa2990",
        "2e21a75dd428b2cd",
        "4cae6472111e791d",
        "38a85a30e5d194e5",
        "dc1c112d18f5305d",
        "10c013946eb08a38",
        "38d66c18feab0434",
    ],
    "literature_fan": [
        "8a1d2f5be364476a",
        "475ed39ba9fbf22d",
        "a70173b34436131c",
        "24a233df32aeed01",
    ],
    "conversation": [
        "8754f4bab2895d4b",
        "907bd9d652c12dbc",
        "d1b87d2ad2315527",
        "d0a919c201f3c2c2",
    ],
    "ultrafeedback_rating": [
        "86f183013c08bc3f",
        "014df55bc5691482",
        "e18c15110d25e464",
        "f95c66c208649565",
    ],
    "topical_chat_rating_chat": [
        "e66fc406b1c629d6",
        "7702f1bdce6c85ba",
        "d719304dcb79f6ce",
        "cd6ea6e510227216",
    ],
    "topical_chat_rating": [
        "c2b40ecc4df2245f",
        "54c4b4031ba35434",
        "09982341c4c9a776",
        "767c406f148b72dc",
    ],
    "prometheus_helpfulness": [
        "77793bb261623946",
        "f08db69ae690b8cd",
        "e3645f179592d3aa",
        "110efc4fbc88aae6",
    ],
    "embedded_critique": [
        "bf03054056286b2c",
        "f302544d8fe9bac5",
        "788185b42f42871c",
        "b7747b6499b49086",
    ],
    "prometheus_helpfulness_relative": [
        "57b7a5fc63b285c2",
        "d999c1dc2cd457fb",
        "19fa12af3c581b86",
        "5f4c01dffc7f437e",
    ],
    "likelihood_response": [
        "a43ba5ec2e8cdc5c",
        "636a81f5097b5881",
        "9e31b6d9f53d5dfb",
        "733b49a271482e19",
        "251736af469b6723",
        "fa28b9d458dca018",
        "36c2118a1fcb47fa",
        "cb07c1325f4443ae",
        "b30d8934c780da62",
        "e66210079974add0",
        "e96087a70b00ed34",
        "6d896aa938f7d958",
    ],
    "likelihood_follow_up": [
        "634067bc0c86c5f7",
        "01a6ba26140ab7cc",
        "9191a9ee759ce172",
        "7232fb0465a15cca",
        "bdde78fbf14e4810",
        "764207c9667263d3",
        "b931741ca7c36ba8",
        "064ffde0fa28b6ce",
        "118022f41a5936cb",
        "2e5d865d63ad8f42",
        "e7b5ba61110733e1",
        "3ffeafe25c9aa53a",
        "bc772c04259b5c99",
        "d95cd259ba60c01d",
        "c44822adc150575c",
        "fd750dc68b92853e",
    ],
    "hindsight_shopping": [
        "cfc189936b555c55",
        "0cbe9d54b3b16643",
        "47ddc0d25c18dd83",
        "05a4da30a89d3ed6",
    ],
    "hindsight_world_model": [
        "6eaa0e9f54122017",
        "c558b32ab1b049fe",
        "b090df468fa224f0",
        "0ed0370259298b55",
        "5017cb63030e7282",
        "c558b32ab1b049fe",
        "327006e10a34aaa9",
        "26a0ca1c3ab5be65",
    ],
}


@pytest.mark.parametrize("case", CASES)
def test_planned_keys_equal_sent_request_keys_and_golden_digests(case: str, tmp_path: Path) -> None:
    keys = CASES[case](tmp_path)
    assert [key[:16] for key in keys] == GOLDEN[case]
