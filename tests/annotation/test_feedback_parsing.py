"""Reading ratings and critiques, rubric files, and turning ratings into pairs (no server)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simfarm.annotation.critique import split_critique
from simfarm.annotation.feedback_records import RatingRecord
from simfarm.annotation.feedback_specs import Scale
from simfarm.annotation.parsers import ParseError
from simfarm.annotation.rating import expected_score, parse_rating
from simfarm.annotation.rating_pairs import PairingOptions, pairs_from_ratings
from simfarm.annotation.rubric import load_rubric
from simfarm.errors import ConfigError
from simfarm.types import TokenLogprob

SCALES = {"helpfulness": Scale(min=1, max=5), "honesty": Scale(min=0, max=4)}


def test_rating_lines_are_read_with_rationales_in_any_reasonable_markup() -> None:
    text = "**Helpfulness**: 4/5 - clear and correct.\n- honesty (0-4): 0 — overclaims\n"
    scores, rationales, offsets = parse_rating(text, SCALES)
    assert scores == {"helpfulness": 4.0, "honesty": 0.0}
    assert rationales == {"helpfulness": "clear and correct.", "honesty": "overclaims"}
    assert text[offsets["helpfulness"]] == "4"


@pytest.mark.parametrize(
    "text",
    [
        "helpfulness: 6 - too high\nhonesty: 2",  # out of range
        "helpfulness: 4\nhonesty: -1",  # below the scale
        "helpfulness: 4 - fine",  # honesty missing
        "The response is good.",
    ],
)
def test_missing_or_out_of_range_scores_are_unreadable(text: str) -> None:
    with pytest.raises(ParseError):
        parse_rating(text, SCALES)


def test_expected_score_is_the_mean_over_in_scale_score_tokens() -> None:
    text = "helpfulness: 4"
    tokens = [
        TokenLogprob(token="helpfulness", logprob=0.0),
        TokenLogprob(token=":", logprob=0.0),
        TokenLogprob(
            token=" 4",
            logprob=math.log(0.5),
            top_logprobs={" 4": math.log(0.5), "5": math.log(0.3), "9": math.log(0.2)},
        ),
    ]
    value = expected_score(tokens, text, text.index("4"), "4", Scale(min=1, max=5))
    assert value == pytest.approx((4 * 0.5 + 5 * 0.3) / 0.8)  # "9" is off the scale
    # a score split over tokens ("1", "0") has no distribution of its own
    split = [TokenLogprob(token="x: ", logprob=0.0), TokenLogprob(token="1", logprob=0.0)]
    assert expected_score(split, "x: 10", 3, "10", Scale(min=1, max=10)) is None


def test_critique_is_the_text_before_the_last_result() -> None:
    critique, value = split_critique("Feedback: Clear, but [RESULT] is a tag.\n[RESULT] 4")
    assert (critique, value) == ("Clear, but [RESULT] is a tag.", "4")
    with pytest.raises(ParseError):
        split_critique("Feedback: no verdict here")
    with pytest.raises(ParseError):
        split_critique("[RESULT] 3")  # a score without a critique


def test_a_malformed_rubric_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("criteria: Is it good?\nscores:\n  1: bad\n  2: [a, list]\n  3: good\n")
    with pytest.raises(ConfigError) as raised:
        load_rubric(path)
    assert f"{path}:4: scores.2: Input should be a valid string" in str(raised.value)
    path.write_text("criteria: Is it good?\nscores: {1: bad, 3: good}\ncolour: red\n")
    with pytest.raises(ConfigError) as raised:
        load_rubric(path)
    message = str(raised.value)
    assert f"{path}:3: colour: Extra inputs are not permitted" in message
    assert "scores: Value error, scores must be at least 2 consecutive integers" in message


def _rating(instruction: str, output: str, overall: float, helpful: float) -> RatingRecord:
    return RatingRecord(
        instruction=instruction,
        output=output,
        generator=output,
        item_id=output,
        annotator="judge",
        scores={"helpfulness": helpful, "honesty": 3.0},
        overall=overall,
        score=overall,
    )


RATINGS = [
    _rating("q1", "a", 7, 2),
    _rating("q1", "b", 9, 4),
    _rating("q1", "c", 7, 5),
    _rating("q1", "d", 3, 1),
    _rating("q2", "e", 5, 3),
    _rating("q2", "f", 5, 3),
    _rating("q3", "lonely", 5, 3),
]


def test_best_vs_worst_on_overall_drops_ties_and_singletons() -> None:
    pairs, report = pairs_from_ratings(RATINGS, PairingOptions(strategy="best-vs-worst"))
    assert [(p.output_1, p.output_2, p.preference) for p in pairs] == [("b", "d", 1.0)]
    assert (report.n_groups, report.n_ties_dropped, report.n_pairs) == (2, 1, 1)
    kept, _ = pairs_from_ratings(RATINGS, PairingOptions(strategy="best-vs-worst", ties="keep"))
    assert [(p.output_1, p.output_2, p.preference) for p in kept][1] == ("e", "f", 1.5)


def test_all_pairs_with_a_margin_on_one_aspect() -> None:
    options = PairingOptions(strategy="all-pairs", score="helpfulness", margin=2)
    pairs, report = pairs_from_ratings(RATINGS, options)
    assert {(p.output_1, p.output_2, p.preference) for p in pairs} == {
        ("a", "b", 2.0),  # differ by exactly the margin: kept
        ("a", "c", 2.0),
        ("b", "d", 1.0),
        ("c", "d", 1.0),
    }
    assert report.n_ties_dropped == 3  # a-d, b-c (differ by < 2) and e-f


def test_best_vs_random_is_seeded_and_never_pairs_the_best_with_itself() -> None:
    options = PairingOptions(strategy="best-vs-random", score="mean", seed=3)
    first, _ = pairs_from_ratings(RATINGS, options)
    again, _ = pairs_from_ratings(RATINGS, options)
    assert first == again
    q1 = next(p for p in first if p.instruction == "q1")
    assert "c" in (q1.output_1, q1.output_2)  # best by the mean of aspects: c (4.0)
    others = {
        next(
            p
            for p in pairs_from_ratings(RATINGS, options.model_copy(update={"seed": s}))[0]
            if p.instruction == "q1"
        ).output_2
        for s in range(20)
    }
    assert len(others) > 1


def test_an_unknown_aspect_is_an_error_naming_the_aspects() -> None:
    with pytest.raises(ConfigError, match="helpfulness, honesty"):
        pairs_from_ratings(RATINGS, PairingOptions(score="fluency"))


def test_pairwise_entry_points_refuse_rating_and_critique_personas() -> None:
    from simfarm.annotation import annotate_pairs
    from simfarm.types import PairwiseItem

    item = PairwiseItem(instruction="q", output_1="a", output_2="b")
    for persona in ("ultrafeedback_rating", "prometheus_helpfulness_relative"):
        with pytest.raises(ConfigError, match="needs a pairwise one"):
            annotate_pairs([item], persona, use_cache=False)
