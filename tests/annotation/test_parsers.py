"""Verdict parsers read only the judge's completion."""

from __future__ import annotations

import math

import pytest

from simfarm.annotation.parsers import LogprobParser, ParseError, RegexParser
from simfarm.annotation.template import PromptTemplate
from simfarm.types import Completion, TokenLogprob


def test_regex_parser_first_match_decides() -> None:
    parser = RegexParser()
    assert parser.parse(Completion(text="Output (b)"))[0] == 2.0
    assert parser.parse(Completion(text="Output (a). Not Output (b)."))[0] == 1.0
    assert RegexParser(match="last").parse(Completion(text="Output (a) .. Output (b)"))[0] == 2.0
    with pytest.raises(ParseError):
        parser.parse(Completion(text="I prefer the second one"))


def test_regex_matches_without_a_label_are_skipped_first_and_last() -> None:
    """A match whose group 1 did not take part names no verdict: the first (last) match
    that does decides, wherever the unlabelled ones are."""
    pattern = r"Output (?:\(([ab])\)|none)"
    text = "Output none, then Output (b), then Output (a), then Output none"
    assert RegexParser(pattern=pattern).parse(Completion(text=text))[0] == 2.0
    assert RegexParser(pattern=pattern, match="last").parse(Completion(text=text))[0] == 1.0
    with pytest.raises(ParseError):
        RegexParser(pattern=pattern).parse(Completion(text="Output none"))


def test_logprob_parser_gives_a_continuous_preference() -> None:
    completion = Completion(
        text="M",
        logprobs=[
            TokenLogprob(
                token="M",
                logprob=math.log(0.7),
                top_logprobs={"M": math.log(0.7), "m": math.log(0.3)},
            )
        ],
    )
    preference, p_second = LogprobParser().parse(completion)
    assert preference == pytest.approx(1.7) and p_second == pytest.approx(0.7)
    with pytest.raises(ParseError):
        LogprobParser().parse(Completion(text="x", logprobs=[TokenLogprob(token="x", logprob=0.0)]))
    with pytest.raises(ParseError):
        LogprobParser().parse(Completion(text="M"))


def test_template_substitution_is_single_pass() -> None:
    template = PromptTemplate("A: {output_1}\nB: {output_2}", "inline")
    rendered = template.render({"output_1": "I say {output_2}", "output_2": "x"})
    assert rendered == "A: I say {output_2}\nB: x"


def test_template_chat_turns() -> None:
    template = PromptTemplate(
        "<|im_start|>system\nS {persona}<|im_end|>\n<|im_start|>user\nU {instruction}<|im_end|>",
        "inline",
    )
    messages = template.render_messages({"persona": "p", "instruction": "i"})
    assert [(m.role, m.content) for m in messages] == [("system", "S p"), ("user", "U i")]
