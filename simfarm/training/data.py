"""Training data: instruction examples from files / datasets folders / the hub, and
preference pairs from simfarm's own pairwise annotation records.

Text from a dataset is data: it is never parsed for structure, only read from the named
columns. A bad record fails naming the file, the record and the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from simfarm.errors import ConfigError
from simfarm.training.config import InstructionSource
from simfarm.types import PairwiseAnnotation

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class InstructionExample(BaseModel):
    """One instruction (with optional input) and, for SFT data, its reference response."""

    model_config = ConfigDict(extra="forbid")

    instruction: str
    input: str = ""
    output: str | None = None
    truncated: bool = False
    """The output was cut off by a length limit (SFT then appends no end-of-sequence token)."""


class PreferencePair(BaseModel):
    """One pairwise preference, oriented: ``chosen`` beat ``rejected``."""

    model_config = ConfigDict(extra="forbid")

    instruction: str
    input: str = ""
    chosen: str
    rejected: str


@dataclass
class PreferenceStats:
    """What happened to the records of a preference file."""

    records: int = 0
    pairs: int = 0
    ties_dropped: int = 0
    failures_skipped: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    annotators: list[str] = field(default_factory=list)


def _load_dataset(spec: InstructionSource) -> Any:
    """A ``datasets.Dataset`` for the source (the split chosen when it holds several)."""
    try:
        import datasets
    except ModuleNotFoundError as error:  # pragma: no cover - datasets is a core dependency
        raise ConfigError(f"{spec.path}: reading datasets needs the 'datasets' package") from error
    path = Path(spec.path)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(
                f"{path}: unsupported data file type {path.suffix!r}; "
                f"use one of {', '.join(sorted(_FILE_BUILDERS))}"
            )
        loaded = datasets.load_dataset(builder, data_files=str(path), split=spec.split or "train")
    elif path.is_dir() and (
        (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    ):
        loaded = datasets.load_from_disk(str(path))
    else:  # a folder in hub layout, or a hub id (needs network)
        loaded = datasets.load_dataset(spec.path, spec.name, split=spec.split)
    if isinstance(loaded, datasets.DatasetDict):
        split = spec.split or ("train" if "train" in loaded else None)
        if split is None or split not in loaded:
            raise ConfigError(
                f"{spec.path}: split: choose one of {', '.join(loaded)} (got {spec.split!r})"
            )
        loaded = loaded[split]
    return loaded


def load_instructions(
    spec: InstructionSource, *, need_output: bool = False
) -> list[InstructionExample]:
    """Read instruction examples (``need_output``: each must have a reference response)."""
    dataset = _load_dataset(spec)
    columns = set(dataset.column_names)
    if spec.instruction_field not in columns:
        raise ConfigError(
            f"{spec.path}: instruction_field: no column {spec.instruction_field!r} "
            f"(columns: {', '.join(sorted(columns))})"
        )
    if need_output and spec.output_field not in columns:
        raise ConfigError(
            f"{spec.path}: output_field: no column {spec.output_field!r} "
            f"(columns: {', '.join(sorted(columns))})"
        )
    rows = dataset if spec.limit is None else dataset.select(range(min(spec.limit, len(dataset))))
    examples = []
    for index, row in enumerate(rows):
        instruction = row[spec.instruction_field]
        text_input = row.get(spec.input_field) or "" if spec.input_field in columns else ""
        output = row.get(spec.output_field) if spec.output_field in columns else None
        if not isinstance(instruction, str) or not instruction.strip():
            raise ConfigError(f"{spec.path}: record {index}: {spec.instruction_field}: empty")
        if need_output and (not isinstance(output, str) or not output.strip()):
            raise ConfigError(f"{spec.path}: record {index}: {spec.output_field}: empty")
        truncated = row.get(spec.truncated_field) if spec.truncated_field in columns else None
        if truncated is not None and not isinstance(truncated, bool):
            raise ConfigError(
                f"{spec.path}: record {index}: {spec.truncated_field}: expected true or false, "
                f"got {type(truncated).__name__}"
            )
        examples.append(
            InstructionExample(
                instruction=instruction,
                input=str(text_input),
                output=output,
                truncated=bool(truncated),
            )
        )
    return examples


def read_annotations(path: Path) -> list[PairwiseAnnotation]:
    """simfarm pairwise annotation records from a JSONL file (blank lines skipped)."""
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(PairwiseAnnotation.model_validate_json(line))
            except ValidationError as error:
                first = error.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or "record"
                raise ConfigError(f"{path}: line {number}: {loc}: {first['msg']}") from None
    return records


def preference_pairs(
    records: Sequence[PairwiseAnnotation], *, keep_ties: bool = False
) -> tuple[list[PreferencePair], PreferenceStats]:
    """Orient annotation records into (chosen, rejected) pairs.

    Failed annotations (no preference) are skipped and counted by kind; ties (1.5) are
    dropped unless ``keep_ties`` (then output_1 counts as chosen); a probability-weighted
    preference goes to the side it leans to.
    """
    stats = PreferenceStats(records=len(records))
    pairs = []
    for record in records:
        if record.annotator not in stats.annotators:
            stats.annotators.append(record.annotator)
        if record.preference is None or record.failure is not None:
            stats.failures_skipped += 1
            kind = record.failure.kind if record.failure is not None else "missing"
            stats.failures_by_kind[kind] = stats.failures_by_kind.get(kind, 0) + 1
            continue
        if record.preference == 1.5 and not keep_ties:
            stats.ties_dropped += 1
            continue
        first_wins = record.preference <= 1.5
        chosen, rejected = (
            (record.output_1, record.output_2) if first_wins else (record.output_2, record.output_1)
        )
        pairs.append(
            PreferencePair(
                instruction=record.instruction, input=record.input, chosen=chosen, rejected=rejected
            )
        )
    stats.pairs = len(pairs)
    return pairs, stats


def load_preference_pairs(
    path: Path, *, keep_ties: bool = False
) -> tuple[list[PreferencePair], PreferenceStats]:
    """Read an annotation file and orient it (see :func:`preference_pairs`)."""
    return preference_pairs(read_annotations(path), keep_ties=keep_ties)


def write_jsonl(path: Path, records: Sequence[BaseModel]) -> None:
    """Write records as JSONL atomically (a crash leaves the old file or the new, never half)."""
    import os

    tmp = Path(path).with_suffix(Path(path).suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.model_dump(mode="json"), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
