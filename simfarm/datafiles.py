"""Reading inputs and writing annotation files.

Inputs: JSON arrays (alpaca_eval ``model_outputs.json``), JSON Lines, Parquet, CSV, a
folder saved by HF ``datasets`` (``save_to_disk``), or ``hf:<repo>[:<config>][@<split>]``
for a dataset on the Hugging Face hub. Every record is checked field by field; a bad one is
reported with file, record index and field, and the :data:`BadRecordPolicy` decides whether
it is coerced, skipped, or stops the load (see :mod:`simfarm.record_checks`). Nothing is
dropped silently.

Outputs: ``.jsonl`` (one JSON object per line), ``.json`` (an array, alpaca_eval style) or
``.parquet``, written to a temporary file and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from simfarm.errors import ConfigError
from simfarm.record_checks import BadRecordPolicy, RecordChecker, RecordIssue, raise_or_warn
from simfarm.types import PairwiseItem


class ModelOutput(BaseModel):
    """One record of an alpaca_eval ``model_outputs.json``; unknown fields are kept aside."""

    model_config = ConfigDict(extra="ignore", strict=True)

    instruction: str
    output: str
    generator: str = "model"
    input: str = ""


def read_records(path: Path) -> list[dict[str, Any]]:
    """Raw records from a JSON/JSONL/Parquet/CSV file or a ``datasets`` folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_hf_dataset(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ConfigError(f"{path}: line {line_no}: invalid JSON: {error}") from None
        return records
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: invalid JSON: {error}") from None
        if isinstance(data, dict):
            # Column-oriented JSON ({"instruction": [...], ...}), as pandas writes it.
            if all(isinstance(v, list) for v in data.values()):
                n = len(next(iter(data.values()), []))
                return [{k: v[i] for k, v in data.items()} for i in range(n)]
            raise ConfigError(f"{path}: expected a JSON array of records")
        if not isinstance(data, list):
            raise ConfigError(f"{path}: expected a JSON array of records")
        return data
    if suffix in (".parquet", ".csv"):
        import pandas as pd

        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        return frame.to_dict(orient="records")  # type: ignore[return-value]
    raise ConfigError(f"{path}: unsupported format {suffix!r} (use .json, .jsonl, .parquet, .csv)")


def _read_hf_dataset(path: Path) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{path}: not a dataset saved with `save_to_disk`: {error}") from None
    return _rows_of_one_split(loaded, str(path), "save one split")


def _rows_of_one_split(loaded: Any, label: str, hint: str) -> list[dict[str, Any]]:
    """The rows of a ``Dataset``, or of a ``DatasetDict`` that holds exactly one split."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise ConfigError(f"{label}: a DatasetDict with splits {list(loaded)}; {hint}")
        loaded = next(iter(loaded.values()))
    return [dict(row) for row in loaded]


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
    return _rows_of_one_split(loaded, f"hf:{spec}", "name one with @<split>")


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
    for index, record in checker.objects(records):
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


def pair_outputs(
    model_outputs: Sequence[ModelOutput], reference_outputs: Sequence[ModelOutput]
) -> tuple[list[PairwiseItem], list[str]]:
    """Pair two output files by instruction (``output_1`` = reference, alpaca_eval order).

    Repeated instructions are paired by occurrence. Returns the pairs (in the model file's
    order) and the instructions of the model file that have no reference.
    """
    references: dict[tuple[str, str], list[ModelOutput]] = defaultdict(list)
    for ref in reference_outputs:
        references[(ref.instruction, ref.input)].append(ref)
    used: dict[tuple[str, str], int] = defaultdict(int)
    pairs: list[PairwiseItem] = []
    unpaired: list[str] = []
    for out in model_outputs:
        key = (out.instruction, out.input)
        candidates = references.get(key, [])
        if used[key] >= len(candidates):
            unpaired.append(out.instruction)
            continue
        ref = candidates[used[key]]
        used[key] += 1
        pairs.append(
            PairwiseItem(
                instruction=out.instruction,
                input=out.input,
                output_1=ref.output,
                generator_1=ref.generator,
                output_2=out.output,
                generator_2=out.generator,
            )
        )
    return pairs, unpaired


def load_pairs(
    source: str | Path, policy: BadRecordPolicy = "coerce", warn: bool = True
) -> PairsFile:
    """A pairs file: records with ``instruction``, ``output_1``, ``output_2`` (+ optional
    ``input``, ``generator_1``, ``generator_2``, ``item_id``); other fields are ignored."""
    label = str(source)
    records = read_source(source)
    checker = RecordChecker(label, policy)
    pairs: list[PairwiseItem] = []
    for index, record in checker.objects(records):
        values = {
            "instruction": checker.text(record, "instruction"),
            "input": checker.text(record, "input", default=""),
            "output_1": checker.text(record, "output_1"),
            "output_2": checker.text(record, "output_2"),
            "generator_1": checker.text(record, "generator_1", default="output_1"),
            "generator_2": checker.text(record, "generator_2", default="output_2"),
        }
        item_id = record.get("item_id")
        if checker.finish(index) == "keep":
            pairs.append(PairwiseItem(**values, item_id=None if item_id is None else str(item_id)))
    if warn:
        raise_or_warn(checker.issues, policy, label)
    return PairsFile(source=label, pairs=pairs, issues=checker.issues)


@dataclass
class PairsFile:
    """Pairs of one file or dataset, with what was wrong in it."""

    source: str
    pairs: list[PairwiseItem]
    issues: list[RecordIssue]


def write_records(path: Path, records: Iterable[BaseModel]) -> None:
    """Write ``.jsonl`` / ``.json`` / ``.parquet`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.model_dump(mode="json") for r in records]
    suffix = path.suffix.lower()
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        if suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif suffix == ".json":
            tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        elif suffix == ".parquet":
            import pandas as pd

            frame = pd.DataFrame(rows)
            if "failure" in frame:
                frame["failure"] = frame["failure"].map(
                    lambda f: json.dumps(f) if f is not None else None
                )
            frame.to_parquet(tmp, index=False)
        else:
            raise ConfigError(
                f"{path}: unsupported output format {suffix!r} (.jsonl/.json/.parquet)"
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
