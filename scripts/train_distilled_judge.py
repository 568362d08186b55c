"""Train the ``embedded_distilled`` judge's head and write it into the package.

Reads GPT-4's AlpacaEval verdicts (``../shared/data/alpaca_eval/annotations_alpaca_eval_gpt4``:
39 systems against ``text_davinci_003``; decisive verdicts only), featurises every pair as
:mod:`simfarm.annotation.distilled` does (mean Gemma 3 270M input embedding of each output,
length and style counts; output 2 minus output 1), fits a standardised L2 logistic regression
(``C`` below) on all of it, each pair in both orders without intercept (a Bradley–Terry head,
symmetric in the two outputs), folds the standardisation and the embedding matrix into one score
per vocabulary token, checks the folded scorer reproduces the fitted head, and writes
``simfarm/annotation/distilled_heads/embedded_distilled.{npz,json}`` (the JSON is the manifest:
data, digests, hyper-parameters, and the held-out figures measured by
``bench/distil_judge.py``, passed with ``--measured``).

    nice -n 10 python scripts/train_distilled_judge.py --measured /tmp/distil_results.json
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

REPO = Path(__file__).resolve().parents[1]
GPT4_DIR = REPO.parent / "shared" / "data" / "alpaca_eval" / "annotations_alpaca_eval_gpt4"
OUT = REPO / "simfarm" / "annotation" / "distilled_heads" / "embedded_distilled"
C = 0.05
EMBEDDING_KEY = "model.embed_tokens.weight"


def load_pairs() -> list[dict[str, Any]]:
    pairs = []
    for path in sorted(GPT4_DIR.glob("*.json")):
        for record in json.loads(path.read_text(encoding="utf-8")):
            preference = record.get("preference")
            if preference is None or float(preference) not in (1.0, 2.0):
                continue
            pairs.append(
                {
                    "system": path.stem,
                    "output_1": record["output_1"] or "",
                    "output_2": record["output_2"] or "",
                    "label": int(float(preference) == 2.0),
                }
            )
    return pairs


def main() -> None:
    import torch
    from safetensors import safe_open
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from simfarm.annotation.distilled import (
        STYLE_FEATURES,
        DistilledHead,
        embedded_tokenizer,
        style_features,
        token_ids,
    )
    from simfarm.backends.embedded import ensure_converted

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--measured", type=Path, nargs="*", default=[], help="bench/distil_judge.py --json outputs"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not GPT4_DIR.is_dir():
        sys.exit(f"no GPT-4 annotations in {GPT4_DIR}")
    start = time.perf_counter()
    pairs = load_pairs()
    folder = ensure_converted()
    tokenizer = embedded_tokenizer()
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        embedding = handle.get_tensor(EMBEDDING_KEY).float().numpy()
    cache: dict[str, np.ndarray] = {}

    def mean_embedding(text: str) -> np.ndarray:
        if text not in cache:
            ids = token_ids(tokenizer, text)
            cache[text] = embedding[ids].mean(0) if ids else np.zeros(embedding.shape[1])
        return cache[text]

    delta = np.array([len(p["output_2"]) - len(p["output_1"]) for p in pairs], dtype=float)
    delta_len_std = float(np.std(delta))
    emb = np.array([mean_embedding(p["output_2"]) - mean_embedding(p["output_1"]) for p in pairs])
    style = np.array([style_features(p["output_1"], p["output_2"], delta_len_std) for p in pairs])
    features = np.hstack([style, emb])
    labels = np.array([p["label"] for p in pairs])
    # Bradley-Terry: every pair in both orders and no intercept, so the judge is symmetric
    # (P(a, b) = 1 - P(b, a)) and learns nothing from the training data's fixed roles
    # (output 2 is always the system, output 1 always text_davinci_003).
    both = np.vstack([features, -features])
    both_labels = np.concatenate([labels, 1 - labels])
    scaler = StandardScaler(with_mean=False).fit(both)
    head = LogisticRegression(C=C, max_iter=2000, fit_intercept=False)
    head.fit(scaler.transform(both), both_labels)
    weights = head.coef_[0] / scaler.scale_
    bias = 0.0
    n_style = len(STYLE_FEATURES)
    token_scores = (embedding @ weights[n_style:]).astype(np.float32)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    npz = args.out.with_suffix(".npz")
    np.savez_compressed(
        npz,
        token_scores=token_scores,
        style_weights=weights[:n_style],
        bias=np.float64(bias),
        delta_len_std=np.float64(delta_len_std),
    )
    # The folded scorer must be the fitted head.
    folded = DistilledHead(npz)
    check = np.random.default_rng(0).choice(len(pairs), 200, replace=False)
    fitted = head.predict_proba(scaler.transform(features[check]))[:, 1]
    ours = [
        folded.probability(tokenizer, pairs[i]["output_1"], pairs[i]["output_2"]) for i in check
    ]
    worst = float(np.max(np.abs(fitted - np.array(ours))))
    if worst > 1e-4:
        sys.exit(f"folded head differs from the fitted one by {worst:.2e}")
    files = sorted(GPT4_DIR.glob("*.json"))
    manifest = {
        "what": (
            "linear Bradley-Terry head (symmetric, no intercept) over mean Gemma 3 270M "
            "input embeddings + length/style counts"
        ),
        "trained_on": str(GPT4_DIR.relative_to(REPO.parent)),
        "systems": [f.stem for f in files],
        "data_sha256": hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest(),
        "n_pairs": len(pairs),
        "labels": "decisive GPT-4 verdicts (alpaca_eval_gpt4 annotator); ties/failures left out",
        "embedding": f"{folder.name}/model.safetensors:{EMBEDDING_KEY}",
        "features": [*STYLE_FEATURES, "mean input embedding (640, folded into token_scores)"],
        "C": C,
        "delta_len_std": delta_len_std,
        "folded_vs_fitted_max_abs_diff": worst,
        "npz_sha256": hashlib.sha256(npz.read_bytes()).hexdigest(),
        "reproduce": "nice -n 10 python scripts/train_distilled_judge.py",
        "held_out_figures": {
            name: figures
            for path in args.measured
            for name, figures in json.loads(path.read_text()).items()
        }
        or None,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    args.out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {npz} ({npz.stat().st_size / 1e6:.2f} MB); folded check {worst:.2e}")


if __name__ == "__main__":
    main()
