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

import glob
import io
import json
import os
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from simfarm.errors import ConfigError
from simfarm.record_checks import BadRecordPolicy, RecordChecker, RecordIssue, raise_or_warn
from simfarm.textfiles import (
    NotAnArray,
    data_stem,
    data_suffix,
    iter_json_array,
    iter_json_lines,
    open_binary,
    read_text,
)
from simfarm.types import ChatMessage, PairwiseItem


class ModelOutput(BaseModel):
    """One record of an alpaca_eval ``model_outputs.json``; unknown fields are kept aside."""

    model_config = ConfigDict(extra="ignore", strict=True)

    instruction: str
    output: str
    generator: str = "model"
    input: str = ""


def read_records(path: Path) -> list[Any]:
    """Raw records from a JSON/JSONL/Parquet/CSV file (``.gz`` too) or a ``datasets`` folder."""
    return list(iter_records(path))


def iter_records(path: Path) -> Iterator[Any]:
    """Raw records one at a time: JSON Lines and JSON arrays are streamed, so a large file
    costs one copy of its records, not its whole text beside them. Files may be gzipped
    (``outputs.jsonl.gz``); bytes that are not UTF-8 are reported with file and offset."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_dir():
        yield from _read_hf_dataset(path)
        return
    suffix = data_suffix(path)
    if suffix == ".jsonl":
        yield from iter_json_lines(path)
    elif suffix == ".json":
        try:
            yield from iter_json_array(path)
        except NotAnArray:
            yield from _read_json_columns(path)
    elif suffix == ".csv":
        import pandas as pd

        yield from pd.read_csv(io.StringIO(read_text(path))).to_dict(orient="records")
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise ConfigError(
            f"{path}: unsupported format {suffix!r} "
            "(use .json, .jsonl, .parquet, .csv, optionally gzipped: .jsonl.gz)"
        )


def _read_json_columns(path: Path) -> list[dict[str, Any]]:
    """Column-oriented JSON (``{"instruction": [...], ...}``), as pandas writes it."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON: {error}") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        n = len(next(iter(data.values()), []))
        return [{k: v[i] for k, v in data.items()} for i in range(n)]
    raise ConfigError(f"{path}: expected a JSON array of records")


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        if path.name.lower().endswith(".gz"):
            with open_binary(path) as handle:
                frame = pd.read_parquet(io.BytesIO(handle.read()))
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError) as error:  # pyarrow's errors derive from these
        raise ConfigError(f"{path}: cannot read Parquet: {error}") from None
    return frame.to_dict(orient="records")  # type: ignore[return-value]


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
    return list(iter_source(source))


def iter_source(source: str | Path) -> Iterator[Any]:
    """Like :func:`read_source`, one record at a time (local files are streamed)."""
    text = str(source)
    if text.startswith("hf:"):
        return iter(_read_hub(text[3:]))
    return iter_records(Path(text))


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
    records = iter_source(source)
    checker = RecordChecker(label, policy)
    generator = default_generator or data_stem(Path(label.removeprefix("hf:")))
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


def check_pairing(
    pairs: Sequence[PairwiseItem],
    model_source: str,
    n_model: int,
    reference_source: str,
    n_reference: int,
) -> None:
    """Refuse an empty pairing before anything is sent, naming the files and why."""
    if pairs:
        return
    if n_reference == 0:
        raise ConfigError(f"{reference_source}: the reference file holds no outputs")
    if n_model == 0:
        raise ConfigError(f"{model_source}: the model-outputs file holds no outputs")
    raise ConfigError(
        f"{model_source} ({n_model} outputs) and {reference_source} ({n_reference} outputs) "
        "have no instruction (and input) in common, so there is nothing to judge; "
        "check that both files answer the same instruction set"
    )


def load_pairs(
    source: str | Path, policy: BadRecordPolicy = "coerce", warn: bool = True
) -> PairsFile:
    """A pairs file: records with ``instruction``, ``output_1``, ``output_2`` (+ optional
    ``input``, ``generator_1``, ``generator_2``, ``item_id``, and ``conversation``: the turns
    before the outputs, ``[{role, content}, ...]`` ending with the user turn they answer,
    which is then the default ``instruction``); other fields are ignored."""
    label = str(source)
    records = iter_source(source)
    checker = RecordChecker(label, policy)
    pairs: list[PairwiseItem] = []
    for index, record in checker.objects(records):
        conversation = read_conversation(checker, record)
        # The last user turn is the default instruction; a record whose turns are malformed
        # is reported for them alone, not also for a missing instruction.
        if conversation is not None:
            default_instruction: str | None = conversation[-1].content
        else:
            default_instruction = "" if record.get("conversation") is not None else None
        values: dict[str, Any] = {
            "instruction": checker.text(record, "instruction", default=default_instruction),
            "input": checker.text(record, "input", default=""),
            "output_1": checker.text(record, "output_1"),
            "output_2": checker.text(record, "output_2"),
            "generator_1": checker.text(record, "generator_1", default="output_1"),
            "generator_2": checker.text(record, "generator_2", default="output_2"),
        }
        item_id = record.get("item_id")
        if checker.finish(index) == "keep":
            pairs.append(
                PairwiseItem(
                    **values,
                    item_id=None if item_id is None else str(item_id),
                    conversation=conversation,
                )
            )
    if warn:
        raise_or_warn(checker.issues, policy, label)
    return PairsFile(source=label, pairs=pairs, issues=checker.issues)


_TURN_ROLES = ("system", "user", "assistant")


def read_conversation(
    checker: RecordChecker, record: dict[str, Any], name: str = "conversation"
) -> list[ChatMessage] | None:
    """The record's turns (None when it has none); each malformed turn is a problem named
    by its field (``conversation[2].role``), so the checker's policy decides what happens."""
    raw = record.get(name)
    if raw is None:
        return None
    if hasattr(raw, "tolist"):  # Parquet list columns come back as numpy arrays
        raw = raw.tolist()
    if not isinstance(raw, list) or not raw:
        checker.fail(name, f"expected a non-empty list of turns {{role, content}}, got {raw!r:.60}")
        return None
    turns: list[ChatMessage] = []
    for position, turn in enumerate(raw):
        where = f"{name}[{position}]"
        if not isinstance(turn, dict):
            checker.fail(where, f"expected an object {{role, content}}, got {type(turn).__name__}")
            continue
        extra = sorted(set(turn) - {"role", "content"})
        if extra:
            checker.fail(where, f"unknown field(s) {extra}; a turn has only role and content")
        role, content = turn.get("role"), turn.get("content")
        if role not in _TURN_ROLES:
            checker.fail(f"{where}.role", f"expected one of {list(_TURN_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            checker.fail(f"{where}.content", f"expected text, got {type(content).__name__}")
        if role in _TURN_ROLES and isinstance(content, str) and not extra:
            turns.append(ChatMessage(role=role, content=content))
    if len(turns) != len(raw):
        return None
    if turns[-1].role != "user":
        checker.fail(
            f"{name}[{len(turns) - 1}].role",
            f"the last turn must be the user turn the outputs answer, got {turns[-1].role!r}",
        )
        return None
    return turns


@dataclass
class PairsFile:
    """Pairs of one file or dataset, with what was wrong in it."""

    source: str
    pairs: list[PairwiseItem]
    issues: list[RecordIssue]


RECORD_FORMATS = (".jsonl", ".json", ".parquet")
"""The output formats :func:`write_records` writes (by file suffix)."""


def check_output_format(path: Path) -> str:
    """The (lowercased) suffix of ``path`` if :func:`write_records` can write it, else a
    :class:`ConfigError`: commands call this before any work, so a typo in the output name
    costs nothing (not a whole paid-for run that then cannot be saved)."""
    suffix = Path(path).suffix.lower()
    if suffix not in RECORD_FORMATS:
        raise ConfigError(f"{path}: unsupported output format {suffix!r} (.jsonl/.json/.parquet)")
    return suffix


def write_records(path: Path, records: Iterable[BaseModel]) -> None:
    """Write ``.jsonl`` / ``.json`` / ``.parquet`` atomically (temp file + rename).

    The temporary file is named after the output and the writing process
    (``.<name>.<pid>.<random>.tmp``), so a writer killed mid-write (``kill -9``) leaves a
    file the next write of the same output recognises and removes once that process is gone.
    """
    path = Path(path)
    suffix = check_output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = _new_temp_file(path)
    try:
        rows = (r.model_dump(mode="json") for r in records)
        if suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif suffix == ".json":
            with tmp.open("w", encoding="utf-8") as out:
                out.write("[")
                for index, row in enumerate(rows):
                    out.write(",\n " if index else "\n ")
                    out.write(json.dumps(row, ensure_ascii=False, indent=1).replace("\n", "\n "))
                out.write("\n]" if out.tell() > 1 else "]")
        else:
            import pandas as pd

            frame = pd.DataFrame(list(rows))
            if "failure" in frame:
                frame["failure"] = frame["failure"].map(
                    lambda f: json.dumps(f) if f is not None else None
                )
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _new_temp_file(path: Path) -> Path:
    """An empty ``.<name>.<pid>.<random>.tmp`` beside ``path``, created with mode 0666
    filtered by the umask: results are ordinary files (0644 under the usual umask), like
    every other output simfarm writes. ``mkstemp`` would make them 0600; nothing in them
    is secret (secrets are redacted before any record is built), and a results folder
    shared with a group should read the same for every file in it."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"{path.parent}: cannot create a temporary file for {path.name}")


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that no longer run.

    Only files named by :func:`write_records` (``.<name>.<pid>.<random>.tmp``) whose process
    is gone are removed; a live writer's file, or anything else, is left alone."""
    removed: list[Path] = []
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except FileNotFoundError:
            continue  # another run cleaned it first
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
