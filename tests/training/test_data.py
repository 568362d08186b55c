"""Instruction data from files, save_to_disk folders and hub-layout folders; preference
pairs from simfarm annotation records (ties dropped, failures skipped and counted)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from simfarm.errors import ConfigError
from simfarm.training.config import InstructionSource
from simfarm.training.data import load_instructions, load_preference_pairs

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "recipes" / "data"
ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Fix it.", "input": "he go", "output": "He goes."},
]


def test_bundled_splits_have_the_documented_shape() -> None:
    sizes = {}
    for split in ("sft", "preference", "unlabeled", "eval"):
        examples = load_instructions(InstructionSource(path=str(BUNDLED / f"{split}.jsonl")))
        sizes[split] = len(examples)
        has_outputs = all(ex.output for ex in examples)
        assert has_outputs == (split in ("sft", "eval")), split
    assert sizes["sft"] >= 80 and sizes["preference"] >= 60 and sizes["unlabeled"] >= 60
    assert sizes["eval"] >= 40
    instructions = [
        (ex.instruction, ex.input)
        for split in ("sft", "preference", "unlabeled", "eval")
        for ex in load_instructions(InstructionSource(path=str(BUNDLED / f"{split}.jsonl")))
    ]
    assert len(set(instructions)) == len(instructions), "splits must not overlap"


def test_save_to_disk_and_hub_layout_folders(tmp_path: Path) -> None:
    dataset = datasets.Dataset.from_list(ROWS)
    dataset.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": dataset, "eval": dataset.select([0])}).save_to_disk(
        str(tmp_path / "saved_dict")
    )
    (tmp_path / "hub" / "data").mkdir(parents=True)
    dataset.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    for spec in (
        InstructionSource(path=str(tmp_path / "saved")),
        InstructionSource(path=str(tmp_path / "saved_dict"), split="train"),
        InstructionSource(path=str(tmp_path / "hub"), split="train"),
    ):
        examples = load_instructions(spec, need_output=True)
        assert [ex.output for ex in examples] == ["5", "Blue.", "He goes."], spec.path
    one = load_instructions(InstructionSource(path=str(tmp_path / "saved_dict"), split="eval"))
    assert len(one) == 1


def test_field_mapping_limit_and_bad_column(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        "".join(json.dumps({"q": r["instruction"], "a": r["output"]}) + "\n" for r in ROWS)
    )
    spec = InstructionSource(path=str(path), instruction_field="q", output_field="a", limit=2)
    examples = load_instructions(spec, need_output=True)
    assert [(ex.instruction, ex.input, ex.output) for ex in examples] == [
        ("Add 2 and 3.", "", "5"),
        ("Name a color.", "", "Blue."),
    ]
    with pytest.raises(ConfigError, match="output_field: no column 'output'"):
        load_instructions(
            InstructionSource(path=str(path), instruction_field="q"), need_output=True
        )


def _record(preference: float | None, failure: str | None = None) -> dict:
    record = {
        "instruction": "Say hi.",
        "output_1": "hi",
        "generator_1": "a",
        "output_2": "hello there",
        "generator_2": "b",
        "annotator": "longest",
        "preference": preference,
    }
    if failure:
        record["failure"] = {"kind": failure, "message": "x"}
    return record


def test_preference_pairs_orient_drop_ties_and_count_failures(tmp_path: Path) -> None:
    path = tmp_path / "annotations.jsonl"
    records = [_record(1.0), _record(2.0), _record(1.5), _record(None, "parse"), _record(1.8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs, stats = load_preference_pairs(path)
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("hi", "hello there"),
        ("hello there", "hi"),
        ("hello there", "hi"),
    ]
    assert (stats.records, stats.pairs, stats.ties_dropped, stats.failures_skipped) == (5, 3, 1, 1)
    assert stats.failures_by_kind == {"parse": 1} and stats.annotators == ["longest"]
    with_ties, _ = load_preference_pairs(path, keep_ties=True)
    assert len(with_ties) == 4


def test_bad_annotation_record_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "annotations.jsonl"
    bad = _record(1.0)
    del bad["output_2"]
    path.write_text(json.dumps(_record(1.0)) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ConfigError, match=r"annotations.jsonl: line 2: output_2"):
        load_preference_pairs(path)


def test_truncated_column_is_read_and_checked(tmp_path: Path) -> None:
    from simfarm.training.config import InstructionSource
    from simfarm.training.data import load_instructions

    path = tmp_path / "winners.jsonl"
    rows = [
        {"instruction": "a", "output": "cut off mid", "truncated": True},
        {"instruction": "b", "output": "ended.", "truncated": False},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    loaded = load_instructions(InstructionSource(path=str(path)), need_output=True)
    assert [e.truncated for e in loaded] == [True, False]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"instruction": "a", "output": "x"}) + "\n", encoding="utf-8")
    assert load_instructions(InstructionSource(path=str(plain)))[0].truncated is False
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "truncated": "yes"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.jsonl: record 0: truncated"):
        load_instructions(InstructionSource(path=str(bad)))
