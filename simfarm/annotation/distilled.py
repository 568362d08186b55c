"""A judge distilled from a strong judge's verdicts: a linear Bradley–Terry head over frozen
Gemma 3 270M token embeddings and a few length and style features.

The head was trained (``scripts/train_distilled_judge.py``) on GPT-4's AlpacaEval verdicts
(``annotations_alpaca_eval_gpt4``, 39 systems against ``text_davinci_003``). A response's
features are the mean of the embedded Gemma's *input* embeddings over its tokens (no forward
pass), plus length and surface-style counts; a pair's feature is output 2's minus output 1's,
and ``P(output 2 wins) = σ(w · Δfeatures)`` (trained on each pair in both orders, without
intercept, so swapping the outputs gives ``1 - P``). Because the head is linear in the mean
embedding, ``w`` folded through the embedding matrix is one score per vocabulary token, so
what ships is a vector of 262,144 token scores (float16, ~0.5 MB) plus ~10 weights, and
scoring needs only the tokenizer: thousands of pairs per second on one CPU core.

It judges what GPT-4 rewarded in those outputs, by content words and style, blind to whether
an answer is correct; read its ``measured_agreement`` before trusting it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from simfarm.errors import ConfigError

HEAD_PACKAGE = "simfarm.annotation.distilled_heads"
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
STYLE_FEATURES = ("log_length_ratio", "tanh_std_delta_len", *SURFACE_PATTERNS)


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


class DistilledHead:
    """A trained head: per-token scores, style weights, bias, and its manifest."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path) as data:
                self.token_scores = data["token_scores"].astype(np.float32)
                self.style_weights = data["style_weights"].astype(np.float64)
                self.bias = float(data["bias"])
                self.delta_len_std = float(data["delta_len_std"])
        except (OSError, KeyError, ValueError) as error:
            raise ConfigError(f"{path}: not a distilled judge head: {error}") from None
        if self.style_weights.shape != (len(STYLE_FEATURES),):
            raise ConfigError(
                f"{path}: field 'style_weights' has shape {self.style_weights.shape}, "
                f"expected ({len(STYLE_FEATURES)},)"
            )
        manifest = path.with_suffix(".json")
        self.manifest: dict[str, Any] = (
            json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
        )
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def embedding_score(self, ids: list[int]) -> float:
        if not ids:
            return 0.0
        index = np.asarray(ids)
        if int(index.max()) >= self.token_scores.size:
            raise ConfigError(
                f"token id {int(index.max())} outside the head's vocabulary "
                f"({self.token_scores.size}): a different tokenizer than the one trained with"
            )
        return float(self.token_scores[index].mean())

    def probability(self, tokenizer: Any, output_1: str, output_2: str) -> float:
        """P(output 2 wins)."""
        content = self.embedding_score(token_ids(tokenizer, output_2)) - self.embedding_score(
            token_ids(tokenizer, output_1)
        )
        style = float(style_features(output_1, output_2, self.delta_len_std) @ self.style_weights)
        return 1.0 / (1.0 + math.exp(-(content + style + self.bias)))


@functools.cache
def load_head(name: str) -> DistilledHead:
    """A head shipped in :data:`HEAD_PACKAGE` (``<name>.npz`` + ``<name>.json``), or a path."""
    candidate = Path(name)
    if candidate.suffix == ".npz" and candidate.is_file():
        return DistilledHead(candidate)
    shipped = resources.files(HEAD_PACKAGE) / f"{name}.npz"
    if not shipped.is_file():
        raise ConfigError(f"no distilled judge head {name!r} (looked in {HEAD_PACKAGE})")
    with resources.as_file(shipped) as path:
        return DistilledHead(Path(path))


@functools.cache
def embedded_tokenizer() -> Any:
    """The embedded Gemma's tokenizer (converting the packaged GGUF once, if needed)."""
    from transformers import AutoTokenizer

    from simfarm.backends.embedded import ensure_converted

    return AutoTokenizer.from_pretrained(ensure_converted())
