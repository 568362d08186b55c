"""Helpers for the training tests: recipe files for the tiny model, pairs labelled by a
simulated annotator."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "recipes" / "data"


def tiny_model(folder: Path) -> dict[str, Any]:
    return {"name_or_path": str(folder), "dtype": "float32", "device": "cpu"}


def write_recipe(folder: Path, data: dict[str, Any], name: str = "recipe.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _truncated(text: str, rng: random.Random) -> str:
    words = text.split()
    keep = max(1, len(words) // 3)
    short = " ".join(words[:keep])
    return short if len(short) < len(text) else text[: max(1, len(text) // 2)]


def length_labelled_pairs(path: Path, splits: tuple[str, ...], seed: int = 0) -> Path:
    """Annotation records for (reference response, truncated response) pairs from the bundled
    data, shown in random order and labelled by simfarm's real `longest` persona."""
    from simfarm.annotation.run import annotate
    from simfarm.types import PairwiseItem

    rng = random.Random(seed)
    items = []
    for split in splits:
        for line in (BUNDLED / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            full, short = row["output"], _truncated(row["output"], rng)
            first, second = (full, short) if rng.random() < 0.5 else (short, full)
            items.append(
                PairwiseItem(
                    instruction=row["instruction"],
                    input=row["input"],
                    output_1=first,
                    output_2=second,
                )
            )
    result = annotate(items, "longest", use_cache=False)
    path.write_text(
        "".join(a.model_dump_json() + "\n" for a in result.annotations), encoding="utf-8"
    )
    return path
