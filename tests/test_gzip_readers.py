"""Every reader of user data takes a gzipped file exactly like the plain one: pairs and
model outputs for ``annotate``, annotation and rating files for ``evaluate``/``validate``,
and human-labelled sets (JSON, JSON Lines) read from the data root."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simfarm.datafiles import load_model_outputs, load_pairs
from simfarm.evaluation.human_sets import load_human_set, read_set_config
from simfarm.evaluation.io import load_annotation_file, load_rating_scores

PAIRS = [
    {"instruction": "i", "output_1": "a", "output_2": "bb"},
    {"conversation": [{"role": "user", "content": "q"}], "output_1": "x", "output_2": "y"},
]
OUTPUTS = [{"instruction": "i", "output": "o", "generator": "g"}]
ANNOTATIONS = [{**PAIRS[0], "generator_1": "r", "generator_2": "m", "preference": 2.0}]
RATINGS = [{"item_id": "s/all/0", "score": 4}, {"item_id": "s/all/1", "rating": 2}]
HUMAN = [
    {"q": "2+2?", "a": "4", "b": "5", "v": "A"},
    {"q": "Red?", "a": "no", "b": "yes", "v": "B"},
]
SET_CONFIG = (
    "kind: human_set\nname: s\ndescription: d\nformat: pairwise\n"
    "fields: {instruction: q, output_1: a, output_2: b, labels: [v]}\n"
    "label_map: {A: 1, B: 2}\nsubsets: [{name: all, path: FILE}]\n"
)


def _human_set(path: Path) -> Any:
    config = path.parent / f"{path.name}.yaml"
    config.write_text(SET_CONFIG.replace("FILE", path.name))
    loaded = load_human_set(read_set_config(config), data_root=path.parent)
    return [(p.item, p.human) for p in loaded.pairs]


READERS: dict[str, tuple[list[dict[str, Any]], Callable[[Path], Any]]] = {
    "pairs": (PAIRS, lambda p: load_pairs(p).pairs),
    "model outputs": (OUTPUTS, lambda p: load_model_outputs(p).outputs),
    "annotations": (ANNOTATIONS, lambda p: load_annotation_file(p).annotations),
    "ratings": (RATINGS, lambda p: load_rating_scores(p)[0]),
    "human set": (HUMAN, _human_set),
}


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("reader", list(READERS))
def test_each_reader_takes_gzip_transparently(tmp_path: Path, reader: str, suffix: str) -> None:
    records, read = READERS[reader]
    if suffix == ".jsonl":
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
    else:
        data = json.dumps(records).encode()
    plain, zipped = tmp_path / f"plain{suffix}", tmp_path / f"zipped{suffix}.gz"
    plain.write_bytes(data)
    zipped.write_bytes(gzip.compress(data))
    from_plain, from_zipped = read(plain), read(zipped)
    assert from_zipped == from_plain
    assert len(from_zipped) == len(records)
