"""The distilled judge's features, defined once: training and scoring both call this module.

A pair's feature vector is output 2's minus output 1's, in :data:`FEATURE_NAMES` order:

- **style** (:data:`STYLE_FEATURES`, 8): log length ratio, tanh of the length difference
  standardised by the training set's spread (``delta_len_std``), and ``log1p`` counts of
  surface patterns (:data:`SURFACE_PATTERNS`: lists, headers, bold, code, refusals, newlines);
- **quality** (:data:`QUALITY_FEATURES`, 15): cheap heuristics of one text
  (:func:`quality_features`: ends cleanly, trigram repetition, sycophantic opener, ...);
- **instruction coverage** (:data:`COVERAGE_FEATURE`, 1): the share of the instruction's
  non-stop words that the output contains (:func:`coverage`); the instruction is
  :func:`prompt_text` of the item (its instruction, and its input if it has one);
- **content** (:data:`CONTENT_FEATURE`): the mean over a response's first :data:`MAX_TOKENS`
  tokens of a per-token table. Training passes the embedded Gemma's input-embedding matrix
  (640 columns); scoring passes the trained weights folded through it (one score per token,
  one column). Because the mean is linear, both give the same logit;
- **n-grams** (:data:`NGRAM_FEATURE`): hashed word 1-2-grams (:data:`NGRAM_BUCKETS` buckets),
  sublinear tf-idf with the training texts' idf, l2-normalised (:class:`NgramEncoder`).
  Training uses the sparse block; scoring folds the weights in (one score per text).

The first three blocks are the head's :data:`DENSE_FEATURES` (one weight each).
:data:`FEATURE_NAMES` is the list a head records; a head trained with another list is refused
when loaded (:class:`simfarm.annotation.distilled.DistilledHead`). To add a feature, add it
here and retrain: ``simfarm train recipes/distilled_judge.yaml --out DIR``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_TOKENS = 1024
"""Tokens of a response that enter its mean embedding (the rest is ignored)."""

SURFACE_PATTERNS: dict[str, re.Pattern[str]] = {
    "list": re.compile(r"^\s*(?:[-*•]|\d+[.)])\s", re.M),
    "header": re.compile(r"^\s*#{1,6}\s", re.M),
    "bold": re.compile(r"\*\*[^*]+\*\*"),
    "code": re.compile(r"```"),
    "refusal": re.compile(r"\b(?:I'm sorry|I am sorry|I cannot|I can't|as an AI)\b", re.I),
    "newline": re.compile(r"\n"),
}
STYLE_FEATURES: tuple[str, ...] = ("log_length_ratio", "tanh_std_delta_len", *SURFACE_PATTERNS)
QUALITY_FEATURES: tuple[str, ...] = (
    "ends_cleanly",
    "trigram_repetition",
    "non_ascii_fraction",
    "log1p_sentences",
    "log1p_words_per_sentence",
    "type_token_ratio",
    "sycophantic_opener",
    "hope_this_helps",
    "as_an_ai",
    "conclusion_words",
    "log1p_digits",
    "log1p_numbered_lines",
    "log1p_bullet_lines",
    "log1p_blank_lines",
    "empty",
)
"""One value per text (:func:`quality_features`); the pair feature is output 2's minus
output 1's."""
COVERAGE_FEATURE = "instruction_coverage"
DENSE_FEATURES: tuple[str, ...] = (*STYLE_FEATURES, *QUALITY_FEATURES, COVERAGE_FEATURE)
"""The features with one weight each in a head."""
CONTENT_FEATURE = "mean_input_embedding"
"""The content block: mean input embedding of the response's tokens (folded into per-token
scores in a trained head)."""
NGRAM_FEATURE = "hashed_word_ngrams_tfidf"
"""The n-gram block (folded into one weight per hash bucket in a trained head)."""
FEATURE_NAMES: tuple[str, ...] = (*DENSE_FEATURES, CONTENT_FEATURE, NGRAM_FEATURE)
"""What a head's weights are over, in order; recorded in every head file."""

NGRAM_BUCKETS = 2**18
STOP_WORDS = frozenset(
    (
        "the",
        "a",
        "an",
        "of",
        "to",
        "in",
        "and",
        "or",
        "is",
        "are",
        "be",
        "for",
        "on",
        "with",
        "that",
        "this",
        "it",
        "as",
        "by",
        "at",
        "from",
        "what",
        "how",
        "why",
        "which",
        "who",
        "you",
        "your",
        "i",
        "me",
        "my",
        "we",
        "our",
        "can",
        "do",
        "does",
    )
)
"""Words that do not count towards instruction coverage."""

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?]+\s")
_OPENER = re.compile(r"^(sure|certainly|of course|absolutely|great question)")
_HOPE = re.compile(r"\b(i hope this helps|let me know if)\b")
_AS_AN_AI = re.compile(r"\b(as an ai|language model)\b")
_CONCLUSION = re.compile(r"\b(in conclusion|overall|in summary)\b")
_DIGIT = re.compile(r"\d")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s", re.M)
_BULLET = re.compile(r"^\s*[-*•]\s", re.M)
_CLEAN_ENDINGS = ".!?)\"'`*:;]}>"


def prompt_text(instruction: str, input: str = "") -> str:
    """What the outputs answer: the instruction, and its input after a blank line if any."""
    return f"{instruction}\n\n{input}" if input else instruction


def surface_counts(text: str) -> np.ndarray:
    return np.array([math.log1p(len(p.findall(text))) for p in SURFACE_PATTERNS.values()])


def quality_features(text: str) -> np.ndarray:
    """:data:`QUALITY_FEATURES` of one text."""
    stripped = text.strip()
    lower = stripped.lower()
    words = _WORD.findall(text.lower())
    n_words = len(words)
    trigrams = [tuple(words[i : i + 3]) for i in range(max(0, n_words - 2))]
    repetition = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    sentences = [s for s in _SENTENCE_END.split(stripped) if s.strip()]
    return np.array(
        [
            float(bool(stripped) and stripped[-1] in _CLEAN_ENDINGS),
            repetition,
            (len(text) - len(text.encode("ascii", "ignore"))) / max(1, len(text)),
            math.log1p(len(sentences)),
            math.log1p(n_words / max(1, len(sentences))),
            len(set(words)) / max(1, n_words),
            float(bool(_OPENER.match(lower))),
            float(bool(_HOPE.search(lower))),
            float(bool(_AS_AN_AI.search(lower))),
            float(bool(_CONCLUSION.search(lower))),
            math.log1p(len(_DIGIT.findall(text))),
            math.log1p(len(_NUMBERED.findall(text))),
            math.log1p(len(_BULLET.findall(text))),
            math.log1p(text.count("\n\n")),
            float(len(stripped) == 0),
        ]
    )


def coverage(prompt: str, text: str) -> float:
    """Share of the prompt's non-stop words (:data:`STOP_WORDS`) found among the text's words
    (0 when the prompt has none)."""
    wanted = {w for w in _WORD.findall(prompt.lower()) if w not in STOP_WORDS}
    if not wanted:
        return 0.0
    return len(wanted & set(_WORD.findall(text.lower()))) / len(wanted)


def text_dense(text: str) -> np.ndarray:
    """The per-text part of the dense features: surface counts then quality features."""
    return np.concatenate([surface_counts(text), quality_features(text)])


def dense_features(
    prompt: str,
    output_1: str,
    output_2: str,
    delta_len_std: float,
    dense_1: np.ndarray | None = None,
    dense_2: np.ndarray | None = None,
) -> np.ndarray:
    """:data:`DENSE_FEATURES`, output 2 minus output 1 (``dense_i``: :func:`text_dense` of
    output ``i`` when already computed)."""
    first = text_dense(output_1) if dense_1 is None else dense_1
    second = text_dense(output_2) if dense_2 is None else dense_2
    len_1, len_2 = len(output_1), len(output_2)
    length = [math.log1p(len_2) - math.log1p(len_1), math.tanh((len_2 - len_1) / delta_len_std)]
    cover = coverage(prompt, output_2) - coverage(prompt, output_1)
    return np.concatenate([length, second - first, [cover]])


def style_features(output_1: str, output_2: str, delta_len_std: float) -> np.ndarray:
    """:data:`STYLE_FEATURES`, output 2 minus output 1."""
    return dense_features("", output_1, output_2, delta_len_std)[: len(STYLE_FEATURES)]


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_TOKENS])


def length_spread(pairs: Sequence[tuple[str, str]]) -> float:
    """``delta_len_std``: the standard deviation of ``len(output_2) - len(output_1)``."""
    delta = np.array([len(second) - len(first) for first, second in pairs], dtype=float)
    spread = float(np.std(delta))
    return spread if spread > 0 else 1.0


class NgramEncoder:
    """Hashed word 1-2-gram counts and their sublinear tf-idf (scikit-learn's
    ``HashingVectorizer`` + ``TfidfTransformer(sublinear_tf=True)``, smooth idf, l2 norm),
    with the idf fitted on the training texts and stored in the head."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.hasher = HashingVectorizer(
            n_features=NGRAM_BUCKETS,
            ngram_range=(1, 2),
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )

    def counts(self, texts: Sequence[str]) -> Any:
        """Sparse ``(len(texts), NGRAM_BUCKETS)`` counts."""
        return self.hasher.transform(texts).tocsr()

    @staticmethod
    def fit_idf(counts: Any) -> np.ndarray:
        """The smooth idf of the texts whose counts are given (one row per text)."""
        from sklearn.feature_extraction.text import TfidfTransformer

        return TfidfTransformer(sublinear_tf=True).fit(counts).idf_  # type: ignore[no-any-return]

    @staticmethod
    def tfidf(counts: Any, idf: np.ndarray) -> Any:
        """Sublinear tf times idf, each row l2-normalised (as ``TfidfTransformer``; computed
        on the stored entries only, so one text costs what its n-grams cost)."""
        weighted = counts.astype(np.float64).tocsr(copy=True)
        np.log(weighted.data, out=weighted.data)
        weighted.data += 1.0
        weighted.data *= np.asarray(idf, dtype=np.float64)[weighted.indices]
        rows = np.repeat(np.arange(weighted.shape[0]), np.diff(weighted.indptr))
        norms = np.sqrt(np.bincount(rows, weights=weighted.data**2, minlength=weighted.shape[0]))
        norms[norms == 0] = 1.0
        weighted.data /= norms[rows]
        return weighted


class PairFeaturizer:
    """Turns (prompt, output 1, output 2) into the head's features (:data:`FEATURE_NAMES`
    order).

    ``token_table`` is ``(vocabulary, d)``: the embedding matrix when training (``d`` = 640),
    the folded token scores when scoring (``d`` = 1), float32. ``ngram_idf`` is the training
    texts' idf; with ``ngram_weights`` (scoring) the n-gram block is folded into one column
    (the text's tf-idf · weights), without (training) :meth:`matrix` gives the sparse block.
    """

    def __init__(
        self,
        tokenizer: Any,
        token_table: np.ndarray,
        delta_len_std: float,
        ngram_idf: np.ndarray,
        ngram_weights: np.ndarray | None = None,
        *,
        cache_texts: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.token_table = token_table
        self.delta_len_std = delta_len_std
        self.ngram_idf = ngram_idf
        self.ngram_weights = ngram_weights
        self.ngrams = NgramEncoder()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, float]] | None = (
            {} if cache_texts else None
        )

    @property
    def vocabulary(self) -> int:
        return int(self.token_table.shape[0])

    def text_vector(self, text: str) -> np.ndarray:
        """Mean of the table's rows over the text's first :data:`MAX_TOKENS` tokens."""
        ids = token_ids(self.tokenizer, text)
        if ids and max(ids) >= self.vocabulary:
            from simfarm.errors import ConfigError

            raise ConfigError(
                f"token id {max(ids)} outside the head's vocabulary ({self.vocabulary}): "
                "a different tokenizer than the one trained with"
            )
        width = int(self.token_table.shape[1])
        return self.token_table[ids].mean(0) if ids else np.zeros(width, dtype=np.float32)

    def ngram_score(self, text: str) -> float:
        """The text's tf-idf · the folded n-gram weights (scoring only)."""
        if self.ngram_weights is None:
            raise ValueError("ngram_score needs ngram_weights (a trained head)")
        row = self.ngrams.tfidf(self.ngrams.counts([text]), self.ngram_idf)
        return float(row.data @ self.ngram_weights[row.indices].astype(np.float64))

    def _text(self, text: str) -> tuple[np.ndarray, np.ndarray, float]:
        if self._cache is not None and text in self._cache:
            return self._cache[text]
        ngram = self.ngram_score(text) if self.ngram_weights is not None else 0.0
        entry = (text_dense(text), self.text_vector(text), ngram)
        if self._cache is not None:
            self._cache[text] = entry
        return entry

    def _pair(
        self,
        prompt: str,
        output_1: str,
        output_2: str,
        first: tuple[np.ndarray, np.ndarray, float],
        second: tuple[np.ndarray, np.ndarray, float],
    ) -> np.ndarray:
        dense = dense_features(prompt, output_1, output_2, self.delta_len_std, first[0], second[0])
        return np.concatenate([dense, second[1] - first[1]])

    def dense_and_content(self, prompt: str, output_1: str, output_2: str) -> np.ndarray:
        """Dense features then the content block (output 2 minus output 1)."""
        first, second = self._text(output_1), self._text(output_2)
        return self._pair(prompt, output_1, output_2, first, second)

    def features(self, prompt: str, output_1: str, output_2: str) -> np.ndarray:
        """Scoring: dense features, the folded content score, the folded n-gram score."""
        first, second = self._text(output_1), self._text(output_2)
        dense_and_content = self._pair(prompt, output_1, output_2, first, second)
        return np.append(dense_and_content, second[2] - first[2])

    def matrix(self, triples: Sequence[tuple[str, str, str]]) -> Any:
        """Training: one sparse row per ``(prompt, output_1, output_2)``: dense features,
        the content block, the n-gram tf-idf difference (``ngram_idf``)."""
        from scipy import sparse

        dense = np.array([self.dense_and_content(*t) for t in triples])
        texts = sorted({text for _, first, second in triples for text in (first, second)})
        position = {text: i for i, text in enumerate(texts)}
        tfidf = self.ngrams.tfidf(self.ngrams.counts(texts), self.ngram_idf)
        first = np.array([position[t[1]] for t in triples], dtype=np.int64)
        second = np.array([position[t[2]] for t in triples], dtype=np.int64)
        return sparse.hstack([sparse.csr_matrix(dense), tfidf[second] - tfidf[first]]).tocsr()
