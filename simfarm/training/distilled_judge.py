"""The ``distilled_judge`` recipe: distil a judge's pairwise verdicts into a head for the
``distilled`` rule (:mod:`simfarm.annotation.distilled`), the way ``embedded_distilled`` ships.

Features are :mod:`simfarm.annotation.distilled_features`' (length, style and quality
heuristics, instruction coverage, the embedded Gemma 3 270M's mean input embedding and hashed
word 1-2-gram tf-idf of each output; output 2 minus output 1), one sparse matrix. The head is a
Bradley–Terry logistic regression (scikit-learn, lbfgs, L2 with ``C`` on features each divided
by its root mean square over the training pairs): every pair in both orders and no intercept,
so the judge is symmetric (``P(a, b) = 1 - P(b, a)``) and learns nothing from the data's fixed
roles (in alpaca_eval files output 1 is always the reference). A soft label ``p`` (a weighted
annotator's preference) enters as two rows per order weighted ``p`` and ``1 - p``, as
alpaca_eval reads it. The scaling, the embedding matrix and the tf-idf are then folded into one
score per vocabulary token and one weight per n-gram bucket, and the folded head, scored
through the same code path the persona uses, must reproduce the fitted one.

Before that, unless ``heldout.enabled`` is false, the same fit is measured on systems it never
saw: ``GroupKFold`` over ``generator_2``, so no system's pairs are split between training and
test (the idf and the scaling are refitted on each fold's training pairs); agreement with the
judge on decisive pairs, on length-balanced pairs, and the Spearman correlation of the systems'
predicted win rates with the judge's, beside ``longest`` on the same pairs, overall and per
verdict source (``by_source``: the records' ``annotator``, else their folder's name), so a
pool mixing two judges says how the head does on each. After it, if
``data.test_annotations`` is set, those verdicts (soft labels) are scored with the same figures
(``test_*`` in ``result.json``, ``test`` in the manifest): each test system that is also a
training system by a head refitted without its pairs, the others by the shipped head
(:mod:`simfarm.training.distilled_unseen`; the shipped head's own figures on all of them are
kept as ``shipped_head``).

Writes ``head.npz`` (usable as a persona's ``head:``), ``manifest.json`` (data digests,
hyper-parameters, feature list, the command, package versions), ``metrics.jsonl`` (one line per
held-out fold), ``folds/fold-K.npz`` (each finished fold's held-out predictions) and
``result.json``. A killed run resumes at fold granularity (:mod:`simfarm.training.distilled_folds`):
run the same command again and the finished folds are read back, not refitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from simfarm.training.config import LoraSpec, RecipeConfig, _Strict
from simfarm.training.distilled_board import LeaderboardSpec

if TYPE_CHECKING:
    import numpy as np

    from simfarm.training.run import RecipeOutcome, RunContext
    from simfarm.training.verdicts import Verdicts

HEAD_FILE = "head.npz"
EMBEDDING_KEY = "model.embed_tokens.weight"
"""The input-embedding matrix in the embedded Gemma's converted ``model.safetensors``."""


class DistilledJudgeData(_Strict):
    """The judge's verdicts to distil."""

    annotations: list[Path] = Field(json_schema_extra={"input": True})
    """A folder of annotation files, or a list of files (relative to the recipe file):
    alpaca_eval ``annotations.json`` (preference 1/2, or a float in [1, 2] as a soft label)
    or `simfarm annotate` output (JSONL, .json, .parquet)."""
    test_annotations: list[Path] | None = Field(default=None, json_schema_extra={"input": True})
    """Optional: annotations of systems to score after training (same readers, relative to
    the recipe file, soft labels): agreement, length-balanced agreement and Spearman of the
    systems' mean P against the judge's win rate go in ``result.json`` (``test_*``)."""
    test_leaderboard: LeaderboardSpec | None = None
    """Optional: a published leaderboard and the outputs of the systems it ranks. Each system
    is paired with the board's reference and scored by a head that never trained on it (its
    held-out fold's head if it is a training system, the shipped head otherwise); Spearman and
    Kendall of the systems' mean P against the board go in ``result.json``
    (``test_leaderboard_*``) and the manifest (:mod:`simfarm.training.distilled_board`)."""
    labels: Literal["decisive", "soft", "auto"] = "soft"
    """"soft": every judged pair, ``preference - 1`` as the probability that output 2 won
    (ties count half each way); "decisive": only verdicts that are exactly 1 or 2; "auto":
    every judged pair but exact ties (1.5, alpaca_eval's 0), so discrete 1/2 verdicts are
    hard labels and a weighted judge's preferences stay soft (for pools of both kinds)."""
    on_bad_record: Literal["coerce", "skip", "error"] = "error"
    """A record with a missing or malformed field: "error" stops, listing file, record index
    and field of each; "coerce" repairs what can be repaired faithfully and skips the rest;
    "skip" drops every bad record. Either way each is listed in the manifest."""

    @field_validator("annotations", "test_annotations", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value


class HeldOutSpec(_Strict):
    """Measure the recipe on systems it never saw before fitting the final head."""

    enabled: bool = True
    """Run the held-out evaluation (needs at least two systems)."""
    folds: int = Field(default=5, ge=2)
    """GroupKFold folds over systems (``generator_2``); fewer when there are fewer systems."""
    balance: float = Field(default=0.8, gt=0, le=1)
    """A pair is length-balanced when its shorter output is at least this share of the
    longer one."""


class DistilledJudgeConfig(RecipeConfig):
    """A linear Bradley–Terry head over style, quality and instruction-coverage features, the
    embedded Gemma's token embeddings and hashed word n-grams, distilled from a judge's
    pairwise verdicts (scikit-learn; no LoRA, no GPU)."""

    method: Literal["distilled_judge"] = "distilled_judge"
    """Always "distilled_judge"."""
    lora: SkipJsonSchema[LoraSpec] = Field(default_factory=LoraSpec, exclude=True)
    """Not a setting here: the head is a linear model over fixed features, with no LoRA
    adapters, so a recipe (or ``--set lora.*``) that sets it is refused, and the manifest
    records none."""
    data: DistilledJudgeData
    """The verdicts to learn from."""
    C: float = Field(default=0.01, gt=0)
    """Inverse L2 strength of the logistic regression (scikit-learn's ``C``), on features
    each divided by its root mean square over the training pairs."""
    max_iter: int = Field(default=2000, ge=1)
    """L-BFGS iterations at most."""
    heldout: HeldOutSpec = Field(default_factory=HeldOutSpec)
    """Held-out evaluation by system."""
    check_pairs: int = Field(default=200, ge=1)
    """Pairs on which the folded head (token scores) must reproduce the fitted one."""
    check_tolerance: float = Field(default=1e-4, gt=0)
    """Largest allowed |P_folded - P_fitted| on those pairs."""

    def portable_path(self, path: Path | str) -> str:
        """``path`` as the manifest records it: relative to the recipe file's folder (as the
        recipe gives it), never the absolute path of the machine that trained the head."""
        return Path(os.path.relpath(Path(path).absolute(), self.recipe_dir.absolute())).as_posix()

    def manifest_config(self) -> dict[str, Any]:
        """The config with its input paths relative to the recipe file (portable)."""
        dumped = self.model_dump(mode="json")
        for key in ("annotations", "test_annotations"):
            paths = getattr(self.data, key)
            if paths is not None:
                dumped["data"][key] = [self.portable_path(p) for p in paths]
        board = self.data.test_leaderboard
        if board is not None:
            section = dumped["data"]["test_leaderboard"]
            for entry, published in zip(section["boards"], board.boards, strict=True):
                entry["path"] = self.portable_path(published.path)
            section.update(
                reference=self.portable_path(board.reference),
                outputs=[self.portable_path(p) for p in board.outputs],
                pair_outputs=[self.portable_path(p) for p in board.pair_outputs],
            )
        return dumped

    def digest_text(self) -> str:
        """The portable config (paths relative to the recipe file), as JSON."""
        return json.dumps(self.manifest_config(), sort_keys=True)

    @field_validator("lora", mode="before")
    @classmethod
    def _no_lora(cls, value: Any) -> Any:
        # Runs only when the recipe or an override sets `lora`; the default is never used.
        raise PydanticCustomError(
            "no_lora",
            "the distilled judge is a linear head over fixed features and has no LoRA "
            "adapters; remove `lora` from the recipe (and any --set lora.*)",
        )

    @model_validator(mode="after")
    def _embedded_only(self) -> DistilledJudgeConfig:
        if self.model.name_or_path != "embedded":
            raise ValueError(
                "model.name_or_path: the distilled judge scores with the embedded Gemma's "
                'tokenizer and embeddings; only "embedded" is supported'
            )
        return self


# ---------------------------------------------------------------------------------------
# Fitting


def both_orders(features: Any, p_second: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """Rows, labels and sample weights (None when all are 1) of the Bradley–Terry fit.

    Pair ``i`` forwards gives label 1 with weight ``p`` and label 0 with weight ``1 - p``;
    backwards (negated features) the reverse. Zero-weight rows are left out, so decisive
    verdicts give exactly one row per order: ``[X; -X]`` with labels ``[y; 1 - y]``.
    ``features`` may be a numpy array or a scipy sparse matrix (the rows keep its kind).
    """
    import numpy as np
    from scipy import sparse

    n = len(p_second)
    index = np.repeat(np.arange(n), 2)
    label = np.tile([1, 0], n)
    rows, labels, weights = [], [], []
    for sign, p_label_1 in ((1.0, p_second), (-1.0, 1.0 - p_second)):
        weight = np.where(label == 1, p_label_1[index], 1.0 - p_label_1[index])
        keep = weight > 0
        rows.append(features[index[keep]] * sign)
        labels.append(label[keep])
        weights.append(weight[keep])
    all_weights = np.concatenate(weights)
    uniform = bool(np.all(all_weights == 1.0))
    stacked = sparse.vstack(rows).tocsr() if sparse.issparse(features) else np.vstack(rows)
    return stacked, np.concatenate(labels), None if uniform else all_weights


def column_rms(features: Any) -> np.ndarray:
    """Each column's root mean square over the pairs (1 where a column is all zero): the
    scale of a symmetric fit, whose rows come in both signs, so no centring."""
    import numpy as np
    from scipy import sparse

    if sparse.issparse(features):
        square = np.asarray(features.multiply(features).mean(0)).ravel()
    else:
        square = (np.asarray(features, dtype=np.float64) ** 2).mean(0)
    rms = np.sqrt(square)
    rms[rms == 0] = 1.0
    return rms  # type: ignore[no-any-return]


def _scaled(features: Any, rms: np.ndarray) -> Any:
    from scipy import sparse

    if sparse.issparse(features):
        return (features @ sparse.diags(1.0 / rms)).tocsr()
    return features / rms


def fit_head(features: Any, p_second: np.ndarray, C: float, max_iter: int) -> Any:
    """The scaled logistic regression; returns ``(rms, model)``."""
    from sklearn.linear_model import LogisticRegression

    rms = column_rms(features)
    rows, labels, weights = both_orders(_scaled(features, rms), p_second)
    model = LogisticRegression(C=C, max_iter=max_iter, fit_intercept=False)
    model.fit(rows, labels, sample_weight=weights)
    return rms, model


def predict(fitted: Any, features: Any) -> np.ndarray:
    rms, model = fitted
    return model.predict_proba(_scaled(features, rms))[:, 1]  # type: ignore[no-any-return]


def fitted_weights(fitted: Any) -> np.ndarray:
    """The fit's weights over the unscaled features."""
    rms, model = fitted
    return model.coef_[0] / rms  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Held-out figures


def agreement_figures(
    prob: np.ndarray,
    p_second: np.ndarray,
    len_1: np.ndarray,
    len_2: np.ndarray,
    systems: np.ndarray,
    balance: float,
) -> dict[str, float]:
    """Agreement with the judge on its decisive pairs (a 0.5 prediction scores half), on the
    length-balanced ones among them, and Spearman over systems of mean P(output 2 wins)
    against the judge's win rate (mean ``p``)."""
    import numpy as np
    from scipy.stats import spearmanr

    decisive = p_second != 0.5
    correct = np.where(prob == 0.5, 0.5, ((prob > 0.5) == (p_second > 0.5)).astype(float))
    balanced = decisive & (np.minimum(len_1, len_2) >= balance * np.maximum(len_1, len_2))
    names = sorted(set(systems.tolist()))
    ours = [float(prob[systems == s].mean()) for s in names]
    theirs = [float(p_second[systems == s].mean()) for s in names]
    spearman = float(spearmanr(ours, theirs).statistic) if len(names) > 2 else float("nan")
    return {
        "agreement": float(correct[decisive].mean()) if decisive.any() else float("nan"),
        "agreement_balanced": float(correct[balanced].mean()) if balanced.any() else float("nan"),
        "spearman_systems": spearman,
        "n_decisive": int(decisive.sum()),
        "n_balanced": int(balanced.sum()),
        "n_systems": len(names),
    }


def source_counts(verdicts: Verdicts) -> dict[str, dict[str, int]]:
    """Pairs and systems per verdict source."""
    sources: dict[str, set[str]] = {}
    pairs: dict[str, int] = {}
    for verdict in verdicts.verdicts:
        sources.setdefault(verdict.source, set()).add(verdict.generator_2)
        pairs[verdict.source] = pairs.get(verdict.source, 0) + 1
    return {
        name: {"n_pairs": pairs[name], "n_systems": len(sources[name])} for name in sorted(sources)
    }


def figures_by_source(
    prob: np.ndarray,
    p_second: np.ndarray,
    len_1: np.ndarray,
    len_2: np.ndarray,
    systems: np.ndarray,
    sources: np.ndarray,
    balance: float,
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`agreement_figures` of the head (``prob``) and of ``longest`` on each source's
    pairs (Spearman over that source's systems, against that source's verdicts)."""
    by_source: dict[str, dict[str, dict[str, float]]] = {}
    longest = longest_probability(len_1, len_2)
    for name in sorted(set(sources.tolist())):
        mask = sources == name
        args = (p_second[mask], len_1[mask], len_2[mask], systems[mask], balance)
        by_source[name] = {
            "distilled": agreement_figures(prob[mask], *args),
            "longest": agreement_figures(longest[mask], *args),
        }
    return by_source


def metric_name(text: str) -> str:
    """A source's name as part of a metric key (letters, digits, ``_``, ``.``, ``-``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def system_folds(systems: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays; each system's pairs lie wholly on one side."""
    from sklearn.model_selection import GroupKFold

    n_systems = len(set(systems.tolist()))
    splitter = GroupKFold(n_splits=min(folds, n_systems))
    return list(splitter.split(systems, groups=systems))


def longest_probability(len_1: np.ndarray, len_2: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.where(len_2 > len_1, 1.0, np.where(len_2 < len_1, 0.0, 0.5))


# ---------------------------------------------------------------------------------------
# The run


def load_embedding() -> tuple[Path, np.ndarray]:
    """The embedded Gemma's converted folder and its input-embedding matrix as float32
    (262,144 x 640, 670 MB; gathering rows from numpy is ~30x faster than from the bfloat16
    tensor)."""
    from safetensors import safe_open

    from simfarm.backends.embedded import ensure_converted

    folder = ensure_converted()
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        return folder, handle.get_tensor(EMBEDDING_KEY).float().numpy()


def fold_token_scores(embedding: np.ndarray, content_weights: np.ndarray) -> np.ndarray:
    """One score per vocabulary token: its embedding row · the content weights (float64
    arithmetic, stored as float32)."""
    import numpy as np

    return (embedding @ content_weights).astype(np.float32)  # type: ignore[no-any-return]


def command_line() -> str:
    """This process's command line (``simfarm train ...``), secrets redacted, each absolute
    path written relative to the working directory (a manifest holds no absolute path of the
    machine that trained the head)."""
    from simfarm.redaction import redact

    def portable(arg: str) -> str:
        try:
            return os.path.relpath(arg) if os.path.isabs(arg) else arg
        except ValueError:  # another drive (Windows): no relative form
            return arg

    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
    return shlex.join(redact(portable(arg)) for arg in argv)


def portable_files(config: DistilledJudgeConfig, verdicts: Verdicts) -> list[dict[str, Any]]:
    """The files read, each path relative to the recipe file, beside its digest and counts."""
    return [{**vars(f), "path": config.portable_path(f.path)} for f in verdicts.files]


def _record_manifest(
    config: DistilledJudgeConfig,
    context: RunContext,
    verdicts: Verdicts,
    head: dict[str, Any],
    heldout: dict[str, Any] | None,
    test: dict[str, Any] | None = None,
) -> None:
    from simfarm.annotation.distilled_features import FEATURE_NAMES, MAX_TOKENS, NGRAM_BUCKETS
    from simfarm.provenance import package_versions as versions_of
    from simfarm.training.manifest import package_versions

    command = command_line()
    context.record(
        "packages",
        {
            **package_versions(),
            **versions_of(("numpy", "scikit-learn", "scipy", "safetensors")),
        },
    )
    context.record(
        "training_data",
        {
            "n_pairs": len(verdicts.verdicts),
            "systems": verdicts.systems,
            "labels": config.data.labels,
            "sources": source_counts(verdicts),
            "failed_left_out": verdicts.failed,
            "not_decisive_left_out": verdicts.not_decisive,
            "ties_left_out": verdicts.ties,
            "bad_records": [
                issue.model_copy(update={"file": config.portable_path(issue.file)}).describe()
                for issue in verdicts.issues
            ],
        },
    )
    context.record(
        "hyper_parameters",
        {
            "C": config.C,
            "max_iter": config.max_iter,
            "model": "sklearn LogisticRegression (lbfgs, L2), no intercept, both orders",
            "scale": "each column / its RMS over the training pairs, folded into the weights",
            "max_tokens": MAX_TOKENS,
            "ngrams": {
                "buckets": NGRAM_BUCKETS,
                "ngram_range": [1, 2],
                "tfidf": "sublinear tf, smooth idf of the training outputs, l2 norm",
            },
        },
    )
    context.record("features", list(FEATURE_NAMES))
    context.record("head", head)
    context.record("heldout", heldout)
    context.record("test", test)
    context.record("command", command)
    # Run from Python (not the CLI), the config is in this manifest's "config".
    context.record("reproduce", command if command.startswith("simfarm train ") else None)


def score_test_annotations(
    prob: np.ndarray,
    shipped_prob: np.ndarray,
    verdicts: Verdicts,
    config: DistilledJudgeConfig,
    refitted: list[str],
    outputs_in_training: dict[str, int],
) -> dict[str, Any]:
    """Figures on test verdicts (soft labels): ``distilled`` with every system scored by a
    head that never trained on its pairs (:mod:`simfarm.training.distilled_unseen`),
    ``shipped_head`` with the shipped (folded) head on all of them, beside ``longest``; and
    each system's win rate (mean P(output 2 wins)) by the judge and by each of them."""
    import numpy as np

    rows = verdicts.verdicts
    p_second = np.array([v.p_second for v in rows])
    len_1 = np.array([len(v.output_1) for v in rows], dtype=float)
    len_2 = np.array([len(v.output_2) for v in rows], dtype=float)
    systems = np.array([v.generator_2 for v in rows])
    balance = config.heldout.balance
    longest = longest_probability(len_1, len_2)
    win_rates = {
        name: {
            "judge": float(p_second[systems == name].mean()),
            "distilled": float(prob[systems == name].mean()),
            "shipped_head": float(shipped_prob[systems == name].mean()),
            "longest": float(longest[systems == name].mean()),
        }
        for name in sorted(set(systems.tolist()))
    }
    return {
        "files": portable_files(config, verdicts),
        "sha256": verdicts.data_sha256,
        "labels": "soft",
        "balance": balance,
        "win_rates": win_rates,
        "refitted_without": refitted,
        "outputs_in_training": outputs_in_training,
        "distilled": agreement_figures(prob, p_second, len_1, len_2, systems, balance),
        "shipped_head": agreement_figures(shipped_prob, p_second, len_1, len_2, systems, balance),
        "longest": agreement_figures(longest, p_second, len_1, len_2, systems, balance),
    }


def run_distilled_judge(config: DistilledJudgeConfig, context: RunContext) -> RecipeOutcome:
    import numpy as np
    from scipy import sparse

    from simfarm.annotation.distilled import DistilledHead, embedded_tokenizer, save_head
    from simfarm.annotation.distilled_features import (
        DENSE_FEATURES,
        NgramEncoder,
        PairFeaturizer,
        length_spread,
    )
    from simfarm.errors import ConfigError, SimfarmError
    from simfarm.training.distilled_board import SHIPPED, board_figures, read_board
    from simfarm.training.distilled_folds import FoldStore, run_digest
    from simfarm.training.distilled_unseen import (
        outputs_in_training,
        overlapping_systems,
        unseen_probabilities,
    )
    from simfarm.training.manifest import config_digest
    from simfarm.training.run import RecipeOutcome
    from simfarm.training.verdicts import annotation_files, read_verdicts

    started = time.perf_counter()
    files = annotation_files(config.data.annotations)
    test_files = (
        annotation_files(config.data.test_annotations) if config.data.test_annotations else []
    )
    context.report("reading verdicts", 0, len(files))
    verdicts = read_verdicts(files, config.data.labels, config.data.on_bad_record)
    context.report("reading verdicts", len(files), len(files))
    board = (
        read_board(config.data.test_leaderboard, config.data.on_bad_record)
        if config.data.test_leaderboard is not None
        else None
    )
    trained_on_board = sorted(set(board.systems) & set(verdicts.systems)) if board else []
    if trained_on_board and not config.heldout.enabled:
        named = ", ".join(trained_on_board[:3]) + (", ..." if len(trained_on_board) > 3 else "")
        raise ConfigError(
            f"data.test_leaderboard: {len(trained_on_board)} of its systems are training "
            f"systems ({named}), scored by the held-out folds' heads; set "
            "heldout.enabled=true or leave test_leaderboard out"
        )
    # Recorded now, so a killed run's manifest says which data its saved folds came from.
    data_digest = verdicts.data_sha256 + (f"+{board.sha256}" if board else "")
    store = FoldStore(
        context.out_dir, run_digest(config_digest(config), data_digest), board is not None
    )
    context.manifest_extra.setdefault("data", {})["annotations"] = {
        "sha256": verdicts.data_sha256,
        "files": portable_files(config, verdicts),
    }
    if board is not None:
        context.manifest_extra["data"]["test_leaderboard"] = {
            "sha256": board.sha256,
            "files": [{**f, "path": config.portable_path(f["path"])} for f in board.files],
        }
    context.record("run_digest", store.digest)
    context.write_manifest()
    triples = [(v.prompt, v.output_1, v.output_2) for v in verdicts.verdicts]
    pairs = [(first, second) for _, first, second in triples]
    p_second = np.array([v.p_second for v in verdicts.verdicts])
    systems = np.array([v.generator_2 for v in verdicts.verdicts])
    sources = np.array([v.source for v in verdicts.verdicts])
    if config.heldout.enabled and len(set(systems.tolist())) < 2:
        raise ConfigError(
            f"heldout: the held-out evaluation holds out whole systems (generator_2), but the "
            f"data has only {sorted(set(systems.tolist()))}; give more systems or set "
            "heldout.enabled=false"
        )

    # Folds finish in order: the leading run of saved ones is reused (checked before the
    # minutes of featurising, so other data fails at once); any later one is refitted.
    splits = system_folds(systems, config.heldout.folds) if config.heldout.enabled else []
    saved = [store.load(fold, test) for fold, (_, test) in enumerate(splits)]
    reused = 0
    while reused < len(saved) and saved[reused] is not None:
        reused += 1

    folder, embedding = load_embedding()
    tokenizer = embedded_tokenizer()
    delta_len_std = length_spread(pairs)
    featurizer = PairFeaturizer(tokenizer, embedding, delta_len_std, np.ones(0), cache_texts=True)
    rows = []
    for index, triple in enumerate(triples):
        rows.append(featurizer.dense_and_content(*triple))
        if index % 1000 == 0:
            context.report("featurising pairs", index, len(pairs))
    context.report("featurising pairs", len(pairs), len(pairs))
    dense = np.array(rows)
    board_pairs = list(zip(board.references, board.outputs, strict=True)) if board else []
    board_dense = np.zeros((0, dense.shape[1]))
    if board:
        context.report("featurising leaderboard pairs", 0, len(board_pairs))
        board_dense = np.array(
            [
                featurizer.dense_and_content(prompt, *pair)
                for prompt, pair in zip(board.prompts, board_pairs, strict=True)
            ]
        )
        context.report("featurising leaderboard pairs", len(board_pairs), len(board_pairs))
    del rows, featurizer
    # The n-gram block: counts of each distinct output once; tf-idf with the idf of the
    # texts a fit trains on (refitted per held-out fold, so held-out texts stay unseen).
    texts = sorted({text for pair in pairs + board_pairs for text in pair})
    position = {text: i for i, text in enumerate(texts)}
    first = np.array([position[a] for a, _ in pairs], dtype=np.int64)
    second = np.array([position[b] for _, b in pairs], dtype=np.int64)
    board_first = np.array([position[a] for a, _ in board_pairs], dtype=np.int64)
    board_second = np.array([position[b] for _, b in board_pairs], dtype=np.int64)
    board_systems = np.array(board.systems if board else [])
    board_prob = np.full(len(board_pairs), np.nan)
    scored_by: dict[str, str] = {}
    encoder = NgramEncoder()
    counts = encoder.counts(texts)

    def idf_of(subset: np.ndarray) -> np.ndarray:
        return encoder.fit_idf(counts[np.unique(np.concatenate([first[subset], second[subset]]))])

    def matrix(subset: np.ndarray, tfidf: Any, of_board: bool = False) -> Any:
        """The features of ``subset`` (training pairs, or leaderboard pairs ``of_board``);
        ``tfidf`` is every text's tf-idf under one fit's idf (computed once per fit)."""
        one, two, rows = (
            (board_first, board_second, board_dense) if of_board else (first, second, dense)
        )
        ngrams = tfidf[two[subset]] - tfidf[one[subset]]
        return sparse.hstack([sparse.csr_matrix(rows[subset]), ngrams]).tocsr()

    everything = np.arange(len(pairs))
    len_1 = np.array([len(a) for a, _ in pairs], dtype=float)
    len_2 = np.array([len(b) for _, b in pairs], dtype=float)
    heldout: dict[str, Any] | None = None
    if config.heldout.enabled:
        prob = np.zeros(len(pairs))
        context.metrics.truncate_after(reused - 1, stage="heldout")
        logged = {r.get("step") for r in context.metrics.read() if r.get("stage") == "heldout"}
        if reused:
            attempts = context.manifest_extra.setdefault("attempts", [])
            attempts.append({"heldout_folds_reused": reused, "of": len(splits)})
        for fold, (train, test) in enumerate(splits):
            context.report("held-out folds", fold, len(splits))
            on_board = np.flatnonzero(np.isin(board_systems, systems[test]))
            for name in set(board_systems[on_board].tolist()):
                scored_by[name] = f"held-out fold {fold}"
            kept = saved[fold] if fold < reused else None
            if kept is not None:
                prob[test] = kept
                board_prob[on_board] = store.load_board(fold, on_board)
                if fold in logged:
                    continue
            else:
                tfidf = encoder.tfidf(counts, idf_of(train))
                fitted = fit_head(matrix(train, tfidf), p_second[train], config.C, config.max_iter)
                prob[test] = predict(fitted, matrix(test, tfidf))
                if len(on_board):
                    board_prob[on_board] = predict(fitted, matrix(on_board, tfidf, of_board=True))
                store.save(fold, test, prob[test], on_board, board_prob[on_board])
            figures = agreement_figures(
                prob[test],
                p_second[test],
                len_1[test],
                len_2[test],
                systems[test],
                config.heldout.balance,
            )
            context.metrics.log(
                fold,
                {**figures, "n_test_pairs": len(test)},
                stage="heldout",
                test_systems=sorted(set(systems[test].tolist())),
                test_sources={
                    name: sorted(set(systems[test][sources[test] == name].tolist()))
                    for name in sorted(set(sources[test].tolist()))
                },
            )
        context.report("held-out folds", len(splits), len(splits))
        balance = config.heldout.balance
        heldout = {
            "folds": len(splits),
            "split": "GroupKFold over generator_2 (whole systems held out)",
            "balance": balance,
            "distilled": agreement_figures(prob, p_second, len_1, len_2, systems, balance),
            "longest": agreement_figures(
                longest_probability(len_1, len_2), p_second, len_1, len_2, systems, balance
            ),
            "by_source": figures_by_source(prob, p_second, len_1, len_2, systems, sources, balance),
        }

    n_dense, width = len(DENSE_FEATURES), int(embedding.shape[1])

    def write_head(target: Path, weights: np.ndarray, idf: np.ndarray) -> None:
        """A head file the persona reads: the fit's weights over the unscaled features, the
        content block folded through the embedding into one score per token."""
        save_head(
            target,
            token_scores=fold_token_scores(embedding, weights[n_dense : n_dense + width]),
            dense_weights=weights[:n_dense],
            ngram_idf=idf,
            ngram_weights=weights[n_dense + width :],
            bias=0.0,
            delta_len_std=delta_len_std,
        )

    context.report("fitting the head", 0, 1)
    ngram_idf = idf_of(everything)
    ngram_tfidf = encoder.tfidf(counts, ngram_idf)
    features = matrix(everything, ngram_tfidf)
    fitted = fit_head(features, p_second, config.C, config.max_iter)
    context.report("fitting the head", 1, 1)

    path = context.out_dir / HEAD_FILE
    tmp = context.out_dir / "head.tmp.npz"
    write_head(tmp, fitted_weights(fitted), ngram_idf)
    os.replace(tmp, path)
    # The folded head, scored through the persona's own code path, must be the fitted one.
    check = np.random.default_rng(0).choice(
        len(pairs), min(config.check_pairs, len(pairs)), replace=False
    )
    folded = DistilledHead(path)
    ours = np.array([folded.probability(tokenizer, *triples[i]) for i in check])
    worst = float(np.max(np.abs(predict(fitted, features[check]) - ours)))
    board_result: dict[str, Any] | None = None
    if board is not None:
        unseen = np.flatnonzero(np.isnan(board_prob))
        for name in set(board_systems[unseen].tolist()):
            scored_by[name] = SHIPPED
        if len(unseen):
            board_prob[unseen] = predict(fitted, matrix(unseen, ngram_tfidf, of_board=True))
        # A baseline beside `longest`: how much each output looks like the reference's
        # (cosine of their word 1-2-gram tf-idf, the shipped head's idf).
        similarity = np.asarray(
            ngram_tfidf[board_first].multiply(ngram_tfidf[board_second]).sum(1)
        ).ravel()
        board_result = board_figures(board_prob, board, scored_by, verdicts.verdicts, similarity)
    train_seconds = round(time.perf_counter() - started, 1)
    test_result: dict[str, Any] | None = None
    if test_files and worst <= config.check_tolerance:
        context.report("scoring test annotations", 0, len(test_files))
        test_verdicts = read_verdicts(test_files, "soft", config.data.on_bad_record)
        overlap = overlapping_systems(test_verdicts.verdicts, verdicts.systems)

        def head_without(system: str) -> DistilledHead:
            """The head fitted as the final one but without ``system``'s pairs."""
            context.report(f"refitting without {system}", 0, 1)
            keep = np.flatnonzero(systems != system)
            idf = idf_of(keep)
            refit = fit_head(
                matrix(keep, encoder.tfidf(counts, idf)), p_second[keep], config.C, config.max_iter
            )
            target = context.out_dir / "head.without.tmp.npz"
            write_head(target, fitted_weights(refit), idf)
            head = DistilledHead(target)
            target.unlink()
            return head

        prob, shipped_prob = unseen_probabilities(
            test_verdicts.verdicts, tokenizer, folded, head_without, overlap
        )
        test_result = score_test_annotations(
            prob,
            shipped_prob,
            test_verdicts,
            config,
            overlap,
            outputs_in_training(test_verdicts.verdicts, verdicts.verdicts),
        )
        context.report("scoring test annotations", len(test_files), len(test_files))
    head = {
        "file": HEAD_FILE,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "embedding": f"{folder.name}/model.safetensors:{EMBEDDING_KEY}",
        "vocabulary": int(embedding.shape[0]),
        "delta_len_std": delta_len_std,
        "folded_vs_fitted_max_abs_diff": worst,
        "train_seconds": train_seconds,
    }
    _record_manifest(config, context, verdicts, head, heldout, test_result)
    context.record("test_leaderboard", board_result)
    context.write_manifest()
    if worst > config.check_tolerance:
        path.unlink()
        raise SimfarmError(
            f"the folded head differs from the fitted one by {worst:.2e} "
            f"(> check_tolerance {config.check_tolerance}); head.npz removed"
        )
    metrics: dict[str, float] = {
        "n_pairs": float(len(pairs)),
        "n_systems": float(len(verdicts.systems)),
        "folded_check_max_abs_diff": worst,
        "bad_records": float(len(verdicts.issues)),
        "train_seconds": float(train_seconds),
        "train_agreement": agreement_figures(
            predict(fitted, features), p_second, len_1, len_2, systems, config.heldout.balance
        )["agreement"],
    }
    evaluations: list[tuple[str, dict[str, Any] | None]] = [
        ("heldout", heldout),
        ("test", test_result),
    ]
    for prefix, evaluation in evaluations:
        if evaluation is None:
            continue
        for who in ("distilled", "shipped_head", "longest"):
            if who not in evaluation:
                continue  # shipped_head: test annotations only
            for key in ("agreement", "agreement_balanced", "spearman_systems"):
                metrics[f"{prefix}_{who}_{key}"] = evaluation[who][key]
        metrics[f"{prefix}_n_balanced"] = float(evaluation["distilled"]["n_balanced"])
        for source, figures in evaluation.get("by_source", {}).items():
            key = f"{prefix}_source_{metric_name(source)}"
            for who in ("distilled", "longest"):
                for name in ("agreement", "agreement_balanced", "spearman_systems"):
                    metrics[f"{key}_{who}_{name}"] = figures[who][name]
            for name in ("n_decisive", "n_balanced", "n_systems"):
                metrics[f"{key}_{name}"] = float(figures["distilled"][name])
    if board_result is not None:
        for board_name, figures in board_result["boards"].items():
            key = f"test_leaderboard_{board_name}"
            for who in ("distilled", "longest", "reference_similarity"):
                for name in ("spearman", "kendall"):
                    metrics[f"{key}_{who}_{name}"] = figures[who][name]
            metrics[f"{key}_n_systems"] = float(figures["n_systems"])
    finite = {key: value for key, value in metrics.items() if np.isfinite(value)}
    return RecipeOutcome(final_metrics=finite, checkpoint=path, resumed=reused > 0)
