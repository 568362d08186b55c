"""Reading evaluation inputs into typed records: annotations and model outputs.

Annotations come as alpaca_eval ``annotations.json`` (read as is: ``price_per_example`` and
``time_per_example`` become ``cost_usd`` and ``latency_s``, a legacy ``0`` preference is a
draw, a null/NaN preference a failed annotation) or as simfarm's own annotation JSONL (one
``PairwiseAnnotation`` per line). Model outputs come as alpaca_eval ``model_outputs.json``,
JSONL, Parquet/CSV, a ``datasets`` folder (``save_to_disk``), or ``hf:<repo>[:<config>][@<split>]``
for a dataset on the Hugging Face hub.

Every record is checked field by field. A problem is a :class:`RecordIssue` with file, record
index and field; the :data:`BadRecordPolicy` decides its fate (see :mod:`.issues`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simfarm.datafiles import read_records
from simfarm.record_checks import (
    BadRecordPolicy,
    RecordChecker,
    RecordIssue,
    is_nan,
    raise_or_warn,
)
from simfarm.types import PairwiseAnnotation

_ALPACA_ALIASES = {"price_per_example": "cost_usd", "time_per_example": "latency_s"}
_ANNOTATION_FIELDS = set(PairwiseAnnotation.model_fields)


@dataclass
class AnnotationFile:
    """The annotations of one file, with what was wrong in it."""

    path: str
    annotations: list[PairwiseAnnotation]
    issues: list[RecordIssue]
    ignored_fields: list[str]
    """Fields present in the file that have no place in a ``PairwiseAnnotation``
    (alpaca_eval's ``dataset``, ...): read and dropped, listed here for transparency."""


def parse_annotation_records(
    source: str,
    records: list[Any],
    policy: BadRecordPolicy = "coerce",
    default_generator_2: str | None = None,
) -> AnnotationFile:
    """Typed annotations from raw records (alpaca_eval or simfarm field names)."""
    checker = RecordChecker(source, policy)
    annotations: list[PairwiseAnnotation] = []
    ignored: set[str] = set()
    for index, record in checker.objects(records):
        data: dict[str, Any] = {}
        for key, value in record.items():
            target = _ALPACA_ALIASES.get(key, key)
            if target in _ANNOTATION_FIELDS:
                data[target] = value
            else:
                ignored.add(key)
        data["instruction"] = checker.text(record, "instruction")
        data["input"] = checker.text(record, "input", default="")
        data["output_1"] = checker.text(record, "output_1")
        data["output_2"] = checker.text(record, "output_2")
        data["generator_1"] = checker.text(record, "generator_1", default="reference")
        data["generator_2"] = checker.text(
            record, "generator_2", default=default_generator_2 or Path(source).stem
        )
        data["annotator"] = checker.text(record, "annotator", default="unknown")
        data["preference"] = checker.preference(record)
        for alias, target in (*_ALPACA_ALIASES.items(), ("cost_usd", "cost_usd")):
            if alias in record:
                data[target] = checker.number(record, alias)
        if "latency_s" in record:
            data["latency_s"] = checker.number(record, "latency_s")
        raw = record.get("raw_completion")
        if raw is not None and not isinstance(raw, str):
            data["raw_completion"] = json.dumps(raw, ensure_ascii=False, default=str)
        annotation: PairwiseAnnotation | None = None
        try:
            annotation = PairwiseAnnotation.model_validate(data)
        except ValidationError as error:
            for problem in error.errors():
                name = ".".join(str(p) for p in problem["loc"]) or "<record>"
                checker.fail(name, problem["msg"])
        verdict = checker.finish(index)
        if annotation is None or verdict == "skip":
            continue
        if verdict == "keep-failed":
            annotation.preference = None
        annotations.append(annotation)
    return AnnotationFile(source, annotations, checker.issues, sorted(ignored))


def load_annotation_file(
    path: Path, policy: BadRecordPolicy = "coerce", warn: bool = True
) -> AnnotationFile:
    """An alpaca_eval ``annotations.json`` or a simfarm annotation JSONL, typed."""
    loaded = parse_annotation_records(str(path), read_records(Path(path)), policy)
    if warn:
        raise_or_warn(loaded.issues, policy, str(path))
    return loaded


def group_by_model(files: list[AnnotationFile]) -> dict[str, list[PairwiseAnnotation]]:
    """All annotations keyed by ``generator_2`` (a file may hold several models)."""
    grouped: dict[str, list[PairwiseAnnotation]] = {}
    for loaded in files:
        for annotation in loaded.annotations:
            grouped.setdefault(annotation.generator_2, []).append(annotation)
    return grouped


def load_rating_scores(
    path: Path, policy: BadRecordPolicy = "coerce"
) -> tuple[dict[str, float], list[RecordIssue]]:
    """A rating annotator's output: records with ``item_id`` and ``score`` (or ``rating``),
    e.g. one JSON object per line. Returns {item_id: score} and the bad records."""
    checker = RecordChecker(str(path), policy)
    scores: dict[str, float] = {}
    for index, record in checker.objects(read_records(Path(path))):
        item_id = checker.text(record, "item_id")
        name = "score" if "score" in record else "rating"
        value = record.get(name)
        if value is None or is_nan(value):
            checker.fail(name, "missing (a failed rating)")
            score = math.nan
        else:
            score = checker.number(record, name, default=math.nan)
        if checker.finish(index) == "keep" and not is_nan(score):
            scores[item_id] = score
    raise_or_warn(checker.issues, policy, str(path))
    return scores, checker.issues
