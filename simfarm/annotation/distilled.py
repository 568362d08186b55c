"""A judge distilled from a strong judge's verdicts: a linear Bradley–Terry head over length,
style and quality heuristics, instruction coverage, frozen Gemma 3 270M token embeddings and
hashed word n-grams.

Heads are trained by the ``distilled_judge`` recipe (``simfarm train
recipes/distilled_judge.yaml --out DIR``, :mod:`simfarm.training.distilled_judge`); the shipped
one on GPT-4's AlpacaEval verdicts (``annotations_alpaca_eval_gpt4``, 39 systems against
``text_davinci_003``). The features are defined once, in
:mod:`simfarm.annotation.distilled_features`; a pair's feature is output 2's minus output 1's,
and ``P(output 2 wins) = σ(w · Δfeatures)`` (trained on each pair in both orders, without
intercept, so swapping the outputs gives ``1 - P``). Because the head is linear in the mean
embedding and in the tf-idf vector, ``w`` folds into one score per vocabulary token and one
weight per n-gram hash bucket: what ships is 262,144 token scores, 262,144 n-gram weights and
their idf, plus 24 weights, and scoring needs only the tokenizer and scikit-learn's hasher:
hundreds of pairs per second on one CPU core.

It judges what GPT-4 rewarded in those outputs, by words, style and coverage of the
instruction, blind to whether an answer is correct; read its ``measured_agreement`` before
trusting it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from simfarm.annotation.distilled_features import (
    DENSE_FEATURES,
    FEATURE_NAMES,
    MAX_TOKENS,
    NGRAM_BUCKETS,
    QUALITY_FEATURES,
    STYLE_FEATURES,
    SURFACE_PATTERNS,
    PairFeaturizer,
    prompt_text,
    style_features,
    surface_counts,
    token_ids,
)
from simfarm.errors import ConfigError

__all__ = [
    "DENSE_FEATURES",
    "FEATURE_NAMES",
    "HEAD_PACKAGE",
    "MAX_TOKENS",
    "QUALITY_FEATURES",
    "STYLE_FEATURES",
    "SURFACE_PATTERNS",
    "DistilledHead",
    "embedded_tokenizer",
    "load_head",
    "prompt_text",
    "save_head",
    "style_features",
    "surface_counts",
    "token_ids",
]

HEAD_PACKAGE = "simfarm.annotation.distilled_heads"
HEAD_FIELDS = (
    "token_scores",
    "dense_weights",
    "ngram_idf",
    "ngram_weights",
    "bias",
    "delta_len_std",
    "features",
)
"""The arrays of a head file (``.npz``)."""


def save_head(
    path: Path,
    *,
    token_scores: np.ndarray,
    dense_weights: np.ndarray,
    ngram_idf: np.ndarray,
    ngram_weights: np.ndarray,
    bias: float,
    delta_len_std: float,
) -> Path:
    """Write a head file that records the feature list it was trained with (token scores,
    idf and n-gram weights as float32: the folded-head check holds them to 1e-4)."""
    np.savez_compressed(
        path,
        token_scores=np.asarray(token_scores, dtype=np.float32),
        dense_weights=np.asarray(dense_weights, dtype=np.float64),
        ngram_idf=np.asarray(ngram_idf, dtype=np.float32),
        ngram_weights=np.asarray(ngram_weights, dtype=np.float32),
        bias=np.float64(bias),
        delta_len_std=np.float64(delta_len_std),
        features=np.array(FEATURE_NAMES),
    )
    return path


class DistilledHead:
    """A trained head: dense-feature weights, per-token scores, the n-gram idf and weights,
    bias, its feature list and manifest (``<name>.json`` beside ``<name>.npz``, or the run's
    ``manifest.json``)."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path) as data:
                files = set(data.files)
                arrays = {name: data[name] for name in HEAD_FIELDS if name in files}
                recorded = data["features"] if "features" in files else None
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: not a distilled judge head: {error}") from None
        if recorded is not None and tuple(str(n) for n in recorded) != FEATURE_NAMES:
            raise ConfigError(
                f"{path}: field 'features': the head was trained on features "
                f"{[str(n) for n in recorded]}, but this simfarm computes {list(FEATURE_NAMES)}; "
                "retrain it (`simfarm train recipes/distilled_judge.yaml --out DIR`) or use "
                "the simfarm version it was made with"
            )
        missing = [name for name in HEAD_FIELDS if name not in arrays]
        if missing:
            raise ConfigError(
                f"{path}: not a distilled judge head of this simfarm: field(s) "
                f"{', '.join(repr(m) for m in missing)} missing (a head records the feature "
                "list it was trained with; retrain with `simfarm train "
                "recipes/distilled_judge.yaml --out DIR`)"
            )
        self.token_scores = arrays["token_scores"].astype(np.float32)
        self.dense_weights = arrays["dense_weights"].astype(np.float64)
        self.ngram_idf = arrays["ngram_idf"].astype(np.float64)
        self.ngram_weights = arrays["ngram_weights"].astype(np.float64)
        self.bias = float(arrays["bias"])
        self.delta_len_std = float(arrays["delta_len_std"])
        self.features = FEATURE_NAMES
        expected = {
            "dense_weights": (len(DENSE_FEATURES),),
            "ngram_idf": (NGRAM_BUCKETS,),
            "ngram_weights": (NGRAM_BUCKETS,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ConfigError(
                    f"{path}: field {name!r} has shape {getattr(self, name).shape}, "
                    f"expected {shape}"
                )
        if self.token_scores.ndim != 1:
            raise ConfigError(
                f"{path}: field 'token_scores' has shape {self.token_scores.shape}, "
                "expected one score per vocabulary token"
            )
        self.path = path
        self.manifest: dict[str, Any] = {}
        for manifest in (path.with_suffix(".json"), path.parent / "manifest.json"):
            if manifest.is_file():
                self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
                break
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.weights = np.concatenate([self.dense_weights, [1.0, 1.0]])
        """Over :data:`FEATURE_NAMES`, the content block folded into ``token_scores`` and the
        n-gram block into ``ngram_weights``."""
        self._featurizers: dict[int, PairFeaturizer] = {}

    def featurizer(self, tokenizer: Any) -> PairFeaturizer:
        """The scoring featurizer for this tokenizer (kept: building the hasher costs)."""
        key = id(tokenizer)
        if key not in self._featurizers:
            self._featurizers[key] = PairFeaturizer(
                tokenizer,
                self.token_scores[:, None],
                self.delta_len_std,
                self.ngram_idf,
                self.ngram_weights,
            )
        return self._featurizers[key]

    def probability(self, tokenizer: Any, prompt: str, output_1: str, output_2: str) -> float:
        """P(output 2 wins) for outputs answering ``prompt`` (:func:`prompt_text`)."""
        features = self.featurizer(tokenizer).features(prompt, output_1, output_2)
        return 1.0 / (1.0 + math.exp(-(float(features @ self.weights) + self.bias)))


@functools.cache
def load_head(name: str) -> DistilledHead:
    """A head shipped in :data:`HEAD_PACKAGE` (``<name>.npz`` + ``<name>.json``), or a path
    to a ``.npz`` (a persona's relative path is resolved against its file when loaded)."""
    candidate = Path(name)
    if candidate.suffix == ".npz":
        if not candidate.is_file():
            raise ConfigError(f"no distilled judge head at {candidate}")
        return DistilledHead(candidate)
    shipped = resources.files(HEAD_PACKAGE) / f"{name}.npz"
    if not shipped.is_file():
        raise ConfigError(
            f"no distilled judge head {name!r} (looked in {HEAD_PACKAGE}; a head file is a "
            "path ending in .npz)"
        )
    with resources.as_file(shipped) as path:
        return DistilledHead(Path(path))


@functools.cache
def embedded_tokenizer() -> Any:
    """The embedded Gemma's tokenizer (converting the packaged GGUF once, if needed)."""
    from transformers import AutoTokenizer

    from simfarm.backends.embedded import ensure_converted

    return AutoTokenizer.from_pretrained(ensure_converted())
