"""The distilled judge's features, defined once: training and scoring both call this module.

A pair's feature vector is output 2's minus output 1's:

- **style** (:data:`STYLE_FEATURES`): log length ratio, tanh of the length difference
  standardised by the training set's spread (``delta_len_std``), and ``log1p`` counts of
  surface patterns (:data:`SURFACE_PATTERNS`: lists, headers, bold, code, refusals, newlines);
- **content** (:data:`CONTENT_FEATURE`): the mean over a response's first :data:`MAX_TOKENS`
  tokens of a per-token table. Training passes the embedded Gemma's input-embedding matrix
  (640 columns); scoring passes the trained weights folded through it (one score per token,
  one column). Because the mean is linear, both give the same logit.

:data:`FEATURE_NAMES` is the list a head records; a head trained with another list is refused
when loaded (:class:`simfarm.annotation.distilled.DistilledHead`). To add a feature, add it
here (a pattern to :data:`SURFACE_PATTERNS`, or a term to :func:`style_features` and its name to
:data:`STYLE_FEATURES`) and retrain: ``simfarm train recipes/distilled_judge.yaml --out DIR``.
"""

from __future__ import annotations

import math
import re
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
CONTENT_FEATURE = "mean_input_embedding"
"""The content block: mean input embedding of the response's tokens (folded into per-token
scores in a trained head)."""
FEATURE_NAMES: tuple[str, ...] = (*STYLE_FEATURES, CONTENT_FEATURE)
"""What a head's weights are over, in order; recorded in every head file."""


def surface_counts(text: str) -> np.ndarray:
    return np.array([math.log1p(len(p.findall(text))) for p in SURFACE_PATTERNS.values()])


def style_features(output_1: str, output_2: str, delta_len_std: float) -> np.ndarray:
    """Output 2 minus output 1: log length ratio, tanh of the standardised length difference
    (``delta_len_std`` is the training set's spread), surface counts."""
    len_1, len_2 = len(output_1), len(output_2)
    length = [math.log1p(len_2) - math.log1p(len_1), math.tanh((len_2 - len_1) / delta_len_std)]
    return np.concatenate([length, surface_counts(output_2) - surface_counts(output_1)])


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_TOKENS])


def length_spread(pairs: list[tuple[str, str]]) -> float:
    """``delta_len_std``: the standard deviation of ``len(output_2) - len(output_1)``."""
    delta = np.array([len(second) - len(first) for first, second in pairs], dtype=float)
    spread = float(np.std(delta))
    return spread if spread > 0 else 1.0


class PairFeaturizer:
    """Turns (output 1, output 2) into the head's feature vector (:data:`FEATURE_NAMES` order,
    the content block expanded to ``token_table``'s columns).

    ``token_table`` is ``(vocabulary, d)``: the embedding matrix when training (``d`` = 640),
    the folded token scores when scoring (``d`` = 1), float32.
    """

    def __init__(
        self,
        tokenizer: Any,
        token_table: np.ndarray,
        delta_len_std: float,
        *,
        cache_texts: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.token_table = token_table
        self.delta_len_std = delta_len_std
        self._cache: dict[str, np.ndarray] | None = {} if cache_texts else None

    @property
    def vocabulary(self) -> int:
        return int(self.token_table.shape[0])

    def text_vector(self, text: str) -> np.ndarray:
        """Mean of the table's rows over the text's first :data:`MAX_TOKENS` tokens."""
        if self._cache is not None and text in self._cache:
            return self._cache[text]
        ids = token_ids(self.tokenizer, text)
        if ids and max(ids) >= self.vocabulary:
            from simfarm.errors import ConfigError

            raise ConfigError(
                f"token id {max(ids)} outside the head's vocabulary ({self.vocabulary}): "
                "a different tokenizer than the one trained with"
            )
        width = int(self.token_table.shape[1])
        vector = self.token_table[ids].mean(0) if ids else np.zeros(width, dtype=np.float32)
        if self._cache is not None:
            self._cache[text] = vector
        return vector

    def features(self, output_1: str, output_2: str) -> np.ndarray:
        """Output 2 minus output 1: style features, then the content block."""
        style = style_features(output_1, output_2, self.delta_len_std)
        content = self.text_vector(output_2) - self.text_vector(output_1)
        return np.concatenate([style, content])

    def matrix(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One row of :meth:`features` per ``(output_1, output_2)``."""
        return np.array([self.features(first, second) for first, second in pairs])
