"""Can a small offline judge distilled from GPT-4's AlpacaEval verdicts judge beyond length?

Training data: the GPT-4 annotations of 39 systems against ``text_davinci_003`` in
``../shared/data/alpaca_eval/annotations_alpaca_eval_gpt4/`` (discrete verdicts; ties and
failed annotations are left out of training and of agreement). Whole systems are held out:
``GroupKFold`` over systems, so every system is scored by a head that never saw any of its
pairs; the figures are pooled over the folds.

Candidates (each a logistic-regression head, L2, on features of (instruction, output) pairs;
the feature of a pair is model-side minus reference-side, so the head is a Bradley–Terry
scorer):

``longest``            the longer output wins (no training)
``length``             length features only (log length ratio, tanh of standardised Δlen)
``surface``            length + surface style (lists, headers, bold, code, refusals)
``static_emb``         + Gemma 3 270M input-embedding mean of the output tokens (no forward)
``gemma_hidden``       + Gemma 3 270M last-layer mean-pooled hidden state of
                       "User: <instruction>\\nAssistant: <output>" (a frozen forward pass;
                       only on a subsample of instructions, what extracts in the time box)

Metrics on held-out systems: agreement with GPT-4 on decisive pairs, overall and on
length-balanced pairs (lengths within 20% of each other), and Spearman of the systems'
predicted win rates (mean P(model wins)) with GPT-4's win rates on the same pairs.

Embeddings are cached in ``--cache`` (one ``.npy`` per text digest) so a rerun or a crash
re-extracts nothing. Run it niced: ``nice -n 10 python bench/distil_judge.py``.
Last line: ``ratio=<best candidate's length-balanced agreement / longest's>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from simfarm.annotation.distilled_features import (
    DENSE_FEATURES,
    STYLE_FEATURES,
    PairFeaturizer,
    length_spread,
)
from simfarm.training.distilled_judge import agreement_figures, longest_probability

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpaca_eval"
GPT4_DIR = DATA / "annotations_alpaca_eval_gpt4"
BALANCE = 0.2
"""Pairs whose shorter output is at least 80% of the longer one count as length-balanced."""


def load_pairs() -> list[dict[str, Any]]:
    """Decisive GPT-4 verdicts: label 1 when the model (``output_2``) won."""
    pairs: list[dict[str, Any]] = []
    for path in sorted(GPT4_DIR.glob("*.json")):
        for index, record in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            preference = record.get("preference")
            if preference is None:
                continue
            value = float(preference)
            if value not in (1.0, 2.0):
                continue  # ties and failures: not a verdict to learn or score
            pairs.append(
                {
                    "system": path.stem,
                    "index": index,
                    "instruction": record["instruction"],
                    "reference": record["output_1"] or "",
                    "output": record["output_2"] or "",
                    "label": int(value == 2.0),
                }
            )
    return pairs


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:24]


class GemmaFeatures:
    """Frozen Gemma 3 270M (the embedded package's converted folder) as a feature extractor."""

    def __init__(self, cache: Path, max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from simfarm.backends.embedded import ensure_converted

        torch.set_num_threads(1)
        folder = ensure_converted()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
        self.model.eval()
        self.embedding = self.model.get_input_embeddings().weight.detach().float().numpy()  # type: ignore[operator]
        self.cache = cache
        self.max_tokens = max_tokens
        cache.mkdir(parents=True, exist_ok=True)

    def hidden(self, instruction: str, output: str) -> np.ndarray:
        """Mean of the last layer over the output's tokens, and the last token's state."""
        path = self.cache / f"{_digest(str(self.max_tokens), instruction, output)}.npy"
        if path.is_file():
            return np.load(path)
        prompt_ids = self.tokenizer(f"User: {instruction}\nAssistant:", add_special_tokens=True)[
            "input_ids"
        ][: self.max_tokens // 3]
        output_ids = self.tokenizer(" " + output, add_special_tokens=False)["input_ids"]
        output_ids = output_ids[: max(1, self.max_tokens - len(prompt_ids))]
        ids = self.torch.tensor([prompt_ids + output_ids])
        with self.torch.inference_mode():
            states = self.model(ids, output_hidden_states=True).hidden_states[-1][0].float()
        response = states[len(prompt_ids) :]
        vector = np.concatenate([response.mean(0).numpy(), states[-1].numpy()])
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vector)
        tmp.replace(path)
        return vector


def evaluate(
    name: str,
    features: np.ndarray | None,
    pairs: list[dict[str, Any]],
    folds: int,
    C: float,
    symmetric: bool = False,
) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    labels = np.array([p["label"] for p in pairs])
    systems = np.array([p["system"] for p in pairs])
    len_ref = np.array([len(p["reference"]) for p in pairs], dtype=float)
    len_out = np.array([len(p["output"]) for p in pairs], dtype=float)
    if features is None:  # longest
        prob = longest_probability(len_ref, len_out)
    else:
        prob = np.zeros(len(pairs))
        for train, test in GroupKFold(n_splits=folds).split(features, labels, systems):
            x, y = features[train], labels[train]
            if symmetric:  # Bradley-Terry: each pair in both orders, no intercept
                x, y = np.vstack([x, -x]), np.concatenate([y, 1 - y])
            scaler = StandardScaler(with_mean=not symmetric).fit(x)
            head = LogisticRegression(C=C, max_iter=2000, fit_intercept=not symmetric)
            head.fit(scaler.transform(x), y)
            prob[test] = head.predict_proba(scaler.transform(features[test]))[:, 1]
    # The recipe's own metrics (every verdict here is decisive), so bench and recipe agree.
    figures = agreement_figures(
        prob, labels.astype(float), len_ref, len_out, systems, balance=1 - BALANCE
    )
    result = {
        "agreement": figures["agreement"],
        "agreement_balanced": figures["agreement_balanced"],
        "n_pairs": len(pairs),
        "n_balanced": int(figures["n_balanced"]),
        "spearman_systems": figures["spearman_systems"],
        "n_systems": int(figures["n_systems"]),
    }
    print(
        f"{name:14s} agreement {result['agreement']:.3f}  length-balanced "
        f"{result['agreement_balanced']:.3f} (n={result['n_balanced']})  Spearman over "
        f"{result['n_systems']} held-out systems {result['spearman_systems']:.3f}  "
        f"[{len(pairs)} pairs]",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=int, default=48, help="subsample for gemma_hidden")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--budget-s", type=float, default=1200.0, help="extraction time box")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=0.05)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/simfarm-distil-cache"))
    parser.add_argument("--skip-hidden", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    if not GPT4_DIR.is_dir():
        sys.exit(f"no GPT-4 annotations in {GPT4_DIR}")
    pairs = load_pairs()
    print(f"{len(pairs)} decisive GPT-4 verdicts of {len({p['system'] for p in pairs})} systems")
    results: dict[str, dict[str, float]] = {}
    # The shipped judge's own features (simfarm.annotation.distilled_features), one matrix.
    gemma = GemmaFeatures(args.cache, args.max_tokens)
    start = time.perf_counter()
    outputs = [(p["reference"], p["output"]) for p in pairs]
    featurizer = PairFeaturizer(
        gemma.tokenizer, gemma.embedding, length_spread(outputs), np.ones(0), cache_texts=True
    )
    # The shipped dense features and content block (its n-gram block is measured by the
    # recipe itself: `simfarm train recipes/distilled_judge.yaml`, manifest "heldout"/"test").
    shipped = np.array(
        [featurizer.dense_and_content(p["instruction"], p["reference"], p["output"]) for p in pairs]
    )
    print(f"features (dense + static embeddings): {time.perf_counter() - start:.0f} s", flush=True)
    style, emb = shipped[:, : len(STYLE_FEATURES)], shipped[:, len(DENSE_FEATURES) :]
    dense = shipped[:, : len(DENSE_FEATURES)]
    length = style[:, :2]
    results["longest"] = evaluate("longest", None, pairs, args.folds, args.C)
    results["length"] = evaluate("length", length, pairs, args.folds, args.C)
    results["surface"] = evaluate("surface", style, pairs, args.folds, args.C)
    results["static_emb"] = evaluate(
        "static_emb", np.hstack([style, emb]), pairs, args.folds, args.C
    )
    # What ships (embedded_distilled): the same features, symmetric in the two outputs.
    results["static_emb_bt"] = evaluate(
        "static_emb_bt", np.hstack([style, emb]), pairs, args.folds, args.C, symmetric=True
    )
    results["surface_bt"] = evaluate("surface_bt", style, pairs, args.folds, args.C, symmetric=True)
    # Style + quality heuristics + instruction coverage + embeddings (the shipped head without
    # its n-gram block).
    results["dense_emb_bt"] = evaluate(
        "dense_emb_bt", np.hstack([dense, emb]), pairs, args.folds, args.C, symmetric=True
    )

    if not args.skip_hidden:
        rng = np.random.default_rng(0)
        all_index = sorted({p["index"] for p in pairs})
        chosen = set(rng.choice(all_index, size=args.instructions, replace=False).tolist())
        # Instruction by instruction (all systems), so a cut-off keeps every system.
        sub = sorted(
            (i for i, p in enumerate(pairs) if p["index"] in chosen),
            key=lambda i: (pairs[i]["index"], pairs[i]["system"]),
        )
        start = time.perf_counter()
        vectors: dict[int, np.ndarray] = {}
        done = 0
        for i in sub:
            if time.perf_counter() - start > args.budget_s:
                break
            p = pairs[i]
            ref = gemma.hidden(p["instruction"], p["reference"])
            out = gemma.hidden(p["instruction"], p["output"])
            vectors[i] = out - ref
            done += 1
        elapsed = time.perf_counter() - start
        print(f"gemma hidden states: {done}/{len(sub)} pairs in {elapsed:.0f} s", flush=True)
        kept = [i for i in sub if i in vectors]
        sub_pairs = [pairs[i] for i in kept]
        hidden = np.array([vectors[i] for i in kept])
        sub_style = style[kept]
        results["longest@sub"] = evaluate("longest@sub", None, sub_pairs, args.folds, args.C)
        results["surface@sub"] = evaluate("surface@sub", sub_style, sub_pairs, args.folds, args.C)
        results["static_emb@sub"] = evaluate(
            "static_emb@sub", np.hstack([sub_style, emb[kept]]), sub_pairs, args.folds, args.C
        )
        results["gemma_hidden@sub"] = evaluate(
            "gemma_hidden@sub", np.hstack([sub_style, hidden]), sub_pairs, args.folds, args.C
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    best = max(
        (r["agreement_balanced"], name) for name, r in results.items() if "longest" not in name
    )
    print(
        f"best length-balanced: {best[1]} {best[0]:.3f} vs longest "
        f"{results['longest']['agreement_balanced']:.3f}"
    )
    print(f"ratio={best[0] / results['longest']['agreement_balanced']:.3f}")


if __name__ == "__main__":
    main()
