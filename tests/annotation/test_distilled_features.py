"""The distilled judge's featurizer (:mod:`simfarm.annotation.distilled_features`): the
quality heuristics, instruction coverage and the hashed n-gram tf-idf, and that a head trained
by the recipe's fit and folded into a head file decides by the n-gram block and by coverage
when only they separate winners (so dropping or misaligning either fails here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer

from simfarm.annotation.distilled import DistilledHead, embedded_tokenizer, save_head
from simfarm.annotation.distilled_features import (
    COVERAGE_FEATURE,
    DENSE_FEATURES,
    FEATURE_NAMES,
    QUALITY_FEATURES,
    STYLE_FEATURES,
    NgramEncoder,
    PairFeaturizer,
    coverage,
    dense_features,
    prompt_text,
    quality_features,
)
from simfarm.training.distilled_judge import fit_head, fitted_weights, predict


def test_feature_list() -> None:
    assert len(STYLE_FEATURES) == 8 and len(QUALITY_FEATURES) == 15
    assert (*STYLE_FEATURES, *QUALITY_FEATURES, COVERAGE_FEATURE) == DENSE_FEATURES
    assert FEATURE_NAMES[-2:] == ("mean_input_embedding", "hashed_word_ngrams_tfidf")
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_quality_heuristics_of_one_text() -> None:
    text = "Sure! Here it is.\n\n1. One 22\n2. Two\n- bullet\nI hope this helps"
    q = dict(zip(QUALITY_FEATURES, quality_features(text), strict=True))
    assert q["ends_cleanly"] == 0.0 and q["sycophantic_opener"] == 1.0
    assert q["hope_this_helps"] == 1.0 and q["as_an_ai"] == 0.0 and q["empty"] == 0.0
    assert q["log1p_digits"] == pytest.approx(np.log1p(4))
    assert q["log1p_numbered_lines"] == pytest.approx(np.log1p(2))
    assert q["log1p_bullet_lines"] == pytest.approx(np.log1p(1))
    assert q["log1p_blank_lines"] == pytest.approx(np.log1p(1))
    assert q["trigram_repetition"] == 0.0
    assert quality_features("la la la la la.")[1] == pytest.approx(2 / 3)
    assert quality_features("   ")[QUALITY_FEATURES.index("empty")] == 1.0


def test_coverage_counts_the_instructions_non_stop_words() -> None:
    assert coverage("What is the capital of France?", "Paris is the capital.") == 0.5
    assert coverage("What is the", "anything") == 0.0  # only stop words
    assert prompt_text("Translate", "bonjour") == "Translate\n\nbonjour"
    assert prompt_text("Translate") == "Translate"
    # The pair feature is output 2's coverage minus output 1's, last of the dense block.
    dense = dense_features("capital of France", "Paris.", "The capital of France.", 100.0)
    assert dense[-1] == pytest.approx(1.0 - 0.0)


def test_tfidf_is_scikit_learns() -> None:
    texts = ["the cat sat", "", "the cat sat on the cat", "a dog barked", "Ünïcode ünïcode", ""]
    encoder = NgramEncoder()
    counts = encoder.counts(texts)
    idf = encoder.fit_idf(counts[:4])
    ours = encoder.tfidf(counts, idf)
    theirs = TfidfTransformer(sublinear_tf=True).fit(counts[:4]).transform(counts)
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-12)


WORDS = [f"{a}{b}" for a in ("zor", "vel", "mab", "qin", "tes") for b in ("ka", "po", "ri", "du")]
"""20 made-up words of the same length."""


def _train_and_fold(
    tmp_path: Path, triples: list[tuple[str, str, str]], p_second: np.ndarray
) -> DistilledHead:
    """The recipe's fit on the featurizer's matrix (content block zero: a zero token table),
    folded and written as a head file the persona loads; the folded head must reproduce the
    fit on the training pairs."""
    tokenizer = embedded_tokenizer()
    table = np.zeros((262_144, 1), dtype=np.float32)
    encoder = NgramEncoder()
    texts = sorted({t for _, a, b in triples for t in (a, b)})
    idf = encoder.fit_idf(encoder.counts(texts))
    featurizer = PairFeaturizer(tokenizer, table, 50.0, idf, cache_texts=True)
    matrix = featurizer.matrix(triples)
    assert sparse.issparse(matrix) and matrix.shape[1] == len(DENSE_FEATURES) + 1 + 2**18
    fitted = fit_head(matrix, p_second, C=10.0, max_iter=5000)
    weights = fitted_weights(fitted)
    n_dense = len(DENSE_FEATURES)
    path = save_head(
        tmp_path / "head.npz",
        token_scores=table[:, 0],
        dense_weights=weights[:n_dense],
        ngram_idf=idf,
        ngram_weights=weights[n_dense + 1 :],
        bias=0.0,
        delta_len_std=50.0,
    )
    head = DistilledHead(path)
    folded = [head.probability(tokenizer, *t) for t in triples]
    np.testing.assert_allclose(folded, predict(fitted, matrix), atol=1e-4)
    return head


@pytest.mark.slow
def test_a_head_learns_what_only_an_ngram_separates(tmp_path: Path) -> None:
    """Winners and losers differ in one word of the same length ("zebra" wins, "yacht"
    loses); style, quality, coverage (no instruction) and content (zero table) are equal, so
    only the n-gram block can learn it, and the folded head applies it to new sentences."""
    triples = [("", f"The {w} saw a yacht today.", f"The {w} saw a zebra today.") for w in WORDS]
    p_second = np.ones(len(triples))
    triples += [("", b, a) for _, a, b in triples[:5]]  # a few with the winner first
    p_second = np.concatenate([p_second, np.zeros(5)])
    head = _train_and_fold(tmp_path, triples, p_second)
    tokenizer = embedded_tokenizer()
    p = head.probability(tokenizer, "", "A zebra is here.", "A yacht is here.")
    assert p < 0.25
    assert head.probability(tokenizer, "", "A yacht is here.", "A zebra is here.") == (
        pytest.approx(1 - p)
    )
    assert head.dense_weights[DENSE_FEATURES.index(COVERAGE_FEATURE)] == 0.0


@pytest.mark.slow
def test_a_head_learns_what_only_coverage_separates(tmp_path: Path) -> None:
    """The winner names the word the instruction asks about, the loser the next pair's word:
    every word wins once and loses once, so n-grams cancel and only instruction coverage
    separates; the folded head prefers the on-topic answer for new words and instructions."""
    triples = []
    for i, word in enumerate(WORDS):
        other = WORDS[(i + 1) % len(WORDS)]
        triples.append((f"Tell me about {word}.", f"The {other} is here.", f"The {word} is here."))
    head = _train_and_fold(tmp_path, triples, np.ones(len(triples)))
    tokenizer = embedded_tokenizer()
    ask = "Tell me about glorbix."
    p = head.probability(tokenizer, ask, "The wuzzle is here.", "The glorbix is here.")
    assert p > 0.75
    assert head.probability(tokenizer, ask, "The glorbix is here.", "The wuzzle is here.") == (
        pytest.approx(1 - p)
    )
