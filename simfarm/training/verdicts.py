"""A judge's pairwise verdicts as training labels for a distilled judge.

Reads alpaca_eval annotation files (``annotations.json``: a JSON array; ``preference`` 1 or 2,
or a float in [1, 2] from a weighted annotator, legacy 0 = draw, null = failed) and simfarm's
own ``simfarm annotate`` output (JSONL, ``.json`` or ``.parquet``), through the evaluation
reader (:func:`simfarm.evaluation.io.parse_annotation_records`), so both formats are checked
field by field and a bad record is reported with file, record index and field under the
usual :data:`~simfarm.record_checks.BadRecordPolicy`.

Each verdict becomes a soft label ``p = preference - 1``: the probability that output 2 won,
as alpaca_eval reads a weighted preference. ``labels: decisive`` keeps only verdicts that are
exactly 1 or 2 (what the shipped head was trained on); ``soft`` keeps every judged pair;
``auto`` keeps every judged pair but exact ties (1.5, alpaca_eval's legacy 0), so a discrete
judge's 1/2 verdicts are hard labels and a weighted judge's preferences stay soft: one setting
for a mix of both pools. A value outside [1, 2] is a bad record (file, record, field) whatever
the mode.

Each verdict also carries its ``source``: the record's ``annotator`` (the judge that gave it),
or the parent folder's name when the record has none, so held-out figures can be broken down
by judge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from simfarm.errors import ConfigError
from simfarm.record_checks import BadRecordPolicy, RecordIssue, raise_if_error

LabelMode = Literal["decisive", "soft", "auto"]
ANNOTATION_SUFFIXES = (".json", ".jsonl", ".parquet", ".json.gz", ".jsonl.gz")
"""Files of a ``data.annotations`` folder that are read (others, e.g. a README, are not)."""


@dataclass(frozen=True)
class Verdict:
    """One judged pair: ``p_second`` is the probability that output 2 won."""

    output_1: str
    output_2: str
    generator_2: str
    p_second: float
    prompt: str = ""
    """What the outputs answer (:func:`~simfarm.annotation.distilled_features.prompt_text`:
    the instruction, then the input if any)."""
    source: str = ""
    """Who gave the verdict: the record's ``annotator``, else its file's parent folder name."""


@dataclass
class VerdictFile:
    path: str
    sha256: str
    records: int
    kept: int


@dataclass
class Verdicts:
    """Every verdict kept, with what happened to the other records."""

    verdicts: list[Verdict] = field(default_factory=list)
    files: list[VerdictFile] = field(default_factory=list)
    failed: int = 0
    """Records without a verdict (failed annotations, null preference)."""
    not_decisive: int = 0
    """Records left out by ``labels: decisive`` (ties and soft preferences)."""
    ties: int = 0
    """Exact ties (1.5, or alpaca_eval's legacy 0) left out by ``labels: auto``."""
    issues: list[RecordIssue] = field(default_factory=list)
    data_sha256: str = ""
    """sha256 of the files' bytes, concatenated in the order read."""

    @property
    def systems(self) -> list[str]:
        return sorted({v.generator_2 for v in self.verdicts})


def annotation_files(
    source: Path | Sequence[Path], key: str = "data.annotations", what: str = "annotation files"
) -> list[Path]:
    """The files to read: a folder's data files (sorted by name), or the files given; ``key``
    names the config field in errors."""
    sources = [Path(source)] if isinstance(source, str | Path) else [Path(s) for s in source]
    files: list[Path] = []
    for path in sources:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.name.endswith(ANNOTATION_SUFFIXES)
            )
            if not found:
                raise ConfigError(
                    f"{path}: {key}: no {what} ({', '.join(ANNOTATION_SUFFIXES)}) in this folder"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{key}: not found: {path}")
    return files


def read_verdicts(
    files: Sequence[Path], labels: LabelMode = "soft", policy: BadRecordPolicy = "error"
) -> Verdicts:
    """Read every file; stop (policy ``error``) listing every bad record, or keep the
    repairable ones (``coerce``) / drop them (``skip``), each listed in ``issues``."""
    from simfarm.annotation.distilled_features import prompt_text
    from simfarm.datafiles import read_records
    from simfarm.evaluation.io import parse_annotation_records

    result = Verdicts()
    combined = hashlib.sha256()
    for path in files:
        data = Path(path).read_bytes()
        combined.update(data)
        records = read_records(Path(path))
        loaded = parse_annotation_records(str(path), records, policy)
        raise_if_error(loaded.issues, policy, str(path))
        result.issues.extend(loaded.issues)
        kept = 0
        # The reader fills a missing annotator with its default; the raw records say
        # whether the field was there (a file is one judge's in practice, but check each).
        named = _annotator_named(records)
        for annotation in loaded.annotations:
            preference = annotation.preference
            if preference is None:
                result.failed += 1
                continue
            if labels == "decisive" and preference not in (1.0, 2.0):
                result.not_decisive += 1
                continue
            if labels == "auto" and preference == 1.5:
                result.ties += 1
                continue
            result.verdicts.append(
                Verdict(
                    output_1=annotation.output_1,
                    output_2=annotation.output_2,
                    generator_2=annotation.generator_2,
                    p_second=float(preference) - 1.0,
                    prompt=prompt_text(annotation.instruction, annotation.input),
                    source=annotation.annotator
                    if annotation.annotator in named
                    else Path(path).resolve().parent.name,
                )
            )
            kept += 1
        result.files.append(
            VerdictFile(
                path=str(path),
                sha256=hashlib.sha256(data).hexdigest(),
                records=len(records),
                kept=kept,
            )
        )
    result.data_sha256 = combined.hexdigest()
    if not result.verdicts:
        raise ConfigError(
            f"data.annotations: no usable verdicts in {len(files)} file(s) "
            f"({result.failed} failed, {result.not_decisive} not decisive, {result.ties} ties "
            f"under labels: {labels})"
        )
    return result


def _annotator_named(records: Sequence[object]) -> set[str]:
    """The ``annotator`` values the records themselves give (text, not empty)."""
    return {
        record["annotator"]
        for record in records
        if isinstance(record, dict)
        and isinstance(record.get("annotator"), str)
        and record["annotator"]
    }
