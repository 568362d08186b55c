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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simfarm.datafiles import ModelOutput, read_records
from simfarm.errors import ConfigError
from simfarm.evaluation.issues import BadRecordPolicy, IssueAction, RecordIssue, raise_or_warn
from simfarm.types import PairwiseAnnotation

_MISSING = object()
_ALPACA_ALIASES = {"price_per_example": "cost_usd", "time_per_example": "latency_s"}
_ANNOTATION_FIELDS = set(PairwiseAnnotation.model_fields)


@dataclass
class _Problem:
    field: str
    problem: str
    fixable: bool
    """Whether the ``coerce`` policy may keep the record with a repaired value."""
    fallback: IssueAction = "skipped"
    """What ``coerce`` does when the value cannot be repaired: skip, or mark failed."""


@dataclass
class RecordChecker:
    """Collects the problems of one record, then applies the policy to them."""

    source: str
    policy: BadRecordPolicy
    issues: list[RecordIssue] = field(default_factory=list)
    _problems: list[_Problem] = field(default_factory=list)

    def text(self, record: dict[str, Any], name: str, default: str | None = None) -> str:
        """A text field; booleans and numbers are repairable (their text), anything else not."""
        value = record.get(name, _MISSING)
        if value is _MISSING or value is None or _is_nan(value):
            if default is not None:
                return default
            self._problems.append(_Problem(name, "missing", fixable=False))
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            self._problems.append(
                _Problem(name, f"expected text, got {type(value).__name__} {value!r}", True)
            )
            return str(value)
        self._problems.append(
            _Problem(name, f"expected text, got {type(value).__name__}", fixable=False)
        )
        return ""

    def number(self, record: dict[str, Any], name: str, default: float = 0.0) -> float:
        """A non-negative number (cost, latency); missing or null means ``default``."""
        value = record.get(name, _MISSING)
        if value is _MISSING or value is None or _is_nan(value):
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                pass
            else:
                self._problems.append(_Problem(name, f"expected a number, got {value!r}", True))
                return parsed
        self._problems.append(
            _Problem(name, f"expected a number, got {type(value).__name__} {value!r}", False)
        )
        return default

    def preference(self, record: dict[str, Any], name: str = "preference") -> float | None:
        """A preference in [1, 2] (0 = legacy draw = 1.5); null/NaN = a failed annotation.

        A value that is not a preference at all (a boolean, text, 3.0) cannot be repaired:
        ``coerce`` keeps the record as a failed annotation, which alpaca_eval would also
        leave out of every count.
        """
        value = record.get(name, _MISSING)
        if value is _MISSING or value is None or _is_nan(value):
            return None
        parsed: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            parsed = float(value)
        elif isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                parsed = None
            if parsed is not None and not _is_nan(parsed):
                self._problems.append(_Problem(name, f"expected a number, got {value!r}", True))
        if parsed is None or _is_nan(parsed):
            self._problems.append(
                _Problem(
                    name,
                    f"expected a preference, got {type(value).__name__} {value!r}",
                    fixable=False,
                    fallback="treated as failed",
                )
            )
            return None
        if parsed == 0.0:
            return 1.5
        if not 1.0 <= parsed <= 2.0:
            self._problems.append(
                _Problem(
                    name,
                    f"preference {parsed!r} outside [1, 2]",
                    fixable=False,
                    fallback="treated as failed",
                )
            )
            return None
        return parsed

    def fail(self, name: str, problem: str) -> None:
        """A problem found outside the typed readers (e.g. by pydantic)."""
        self._problems.append(_Problem(name, problem, fixable=False))

    def finish(self, index: int) -> str:
        """``keep``, ``keep-failed`` or ``skip`` for this record; logs its issues."""
        problems, self._problems = self._problems, []
        if not problems:
            return "keep"
        action: IssueAction | None
        if self.policy == "error":
            action = "error"
        elif self.policy == "skip":
            action = "skipped"
        elif all(p.fixable or p.fallback == "treated as failed" for p in problems):
            action = None  # decided per problem below
        else:
            action = "skipped"
        verdict = "skip" if action in ("skipped", "error") else "keep"
        for p in problems:
            this: IssueAction = action or ("coerced" if p.fixable else p.fallback)
            if this == "treated as failed":
                verdict = "keep-failed"
            self.issues.append(
                RecordIssue(
                    file=self.source, record=index, field=p.field, problem=p.problem, action=this
                )
            )
        return verdict


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


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
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            checker.fail("<record>", f"expected an object, got {type(record).__name__}")
            checker.finish(index)
            continue
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


@dataclass
class OutputsFile:
    """Model outputs of one file or dataset, with what was wrong in it."""

    source: str
    outputs: list[ModelOutput]
    issues: list[RecordIssue]


def read_source(source: str | Path) -> list[Any]:
    """Raw records of a local file/folder, or of ``hf:<repo>[:<config>][@<split>]``."""
    text = str(source)
    if text.startswith("hf:"):
        return _read_hub(text[3:])
    return read_records(Path(text))


def _read_hub(spec: str) -> list[dict[str, Any]]:
    import datasets

    spec, _, split = spec.partition("@")
    repo, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(repo, config or None, split=split or None)
    except Exception as error:  # network, auth, unknown repo: all reach the user as one error
        raise ConfigError(f"hf:{spec}: cannot load from the hub: {error}") from error
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise ConfigError(f"hf:{spec}: splits {list(loaded)}; name one with @<split>")
        loaded = next(iter(loaded.values()))
    return [dict(row) for row in loaded]


def load_model_outputs(
    source: str | Path,
    policy: BadRecordPolicy = "coerce",
    warn: bool = True,
    default_generator: str | None = None,
) -> OutputsFile:
    """alpaca_eval-style outputs (``instruction``, ``output``, ``generator``, ``input``)."""
    label = str(source)
    records = read_source(source)
    checker = RecordChecker(label, policy)
    generator = default_generator or Path(label.removeprefix("hf:")).stem
    outputs: list[ModelOutput] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            checker.fail("<record>", f"expected an object, got {type(record).__name__}")
            checker.finish(index)
            continue
        values = {
            "instruction": checker.text(record, "instruction"),
            "input": checker.text(record, "input", default=""),
            "output": checker.text(record, "output"),
            "generator": checker.text(record, "generator", default=generator),
        }
        if checker.finish(index) == "keep":
            outputs.append(ModelOutput.model_validate(values))
    if warn:
        raise_or_warn(checker.issues, policy, label)
    return OutputsFile(label, outputs, checker.issues)


def load_rating_scores(
    path: Path, policy: BadRecordPolicy = "coerce"
) -> tuple[dict[str, float], list[RecordIssue]]:
    """A rating annotator's output: records with ``item_id`` and ``score`` (or ``rating``),
    e.g. one JSON object per line. Returns {item_id: score} and the bad records."""
    checker = RecordChecker(str(path), policy)
    scores: dict[str, float] = {}
    for index, record in enumerate(read_records(Path(path))):
        if not isinstance(record, dict):
            checker.fail("<record>", f"expected an object, got {type(record).__name__}")
            checker.finish(index)
            continue
        item_id = checker.text(record, "item_id")
        name = "score" if "score" in record else "rating"
        value = record.get(name)
        if value is None or _is_nan(value):
            checker.fail(name, "missing (a failed rating)")
            score = math.nan
        else:
            score = checker.number(record, name, default=math.nan)
        if checker.finish(index) == "keep" and not _is_nan(score):
            scores[item_id] = score
    raise_or_warn(checker.issues, policy, str(path))
    return scores, checker.issues
