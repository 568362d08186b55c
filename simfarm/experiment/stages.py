"""Cached, resumable stages: the unit an experiment run is made of.

A stage is done when its done-marker ``DIR/stages/<name>.done.json`` exists, records the
digest of the stage's inputs, and every output it listed still exists. A done stage is
skipped; anything else is (re)run. A stage's input digest includes the digests of the stages
it reads from, so changing an upstream config redoes everything downstream and nothing else.

Outputs are written before the marker (and files are written through a temporary file and a
rename), so a crash at any point leaves either a finished stage or one that is redone. Every
start, skip and finish is appended to ``DIR/stages.jsonl``: the history a test (or a person)
reads to see what a rerun actually did.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from simfarm.types import stable_digest


class StageCost(BaseModel):
    """What a stage spent: model requests and tokens, dollars, and time."""

    model_config = ConfigDict(extra="forbid")

    requests: int = 0
    """Annotator (judge) requests sent; generation calls of the policy are not requests."""
    tokens: int = 0
    """Tokens the stage generated (policy samples) or, where the backend reports them,
    judge tokens."""
    cost_usd: float = 0.0
    cache_hits: int = 0


class StageRecord(BaseModel):
    """The done-marker of one stage (also what the report's cost table is built from)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    input_digest: str
    outputs: list[str]
    """Paths relative to the run folder."""
    wall_time_s: float
    """Wall time of the run that produced the outputs (kept when a rerun skips the stage)."""
    finished_at: str
    cost: StageCost = Field(default_factory=StageCost)
    details: dict[str, Any] = Field(default_factory=dict)
    """Stage-specific facts for the report (final metrics, counts, ...)."""
    skipped: bool = False
    """True in the result of a run that found the stage done (never written to the marker)."""


class StageContext:
    """What a stage's body gets: a progress callback and places to put its results."""

    def __init__(self, name: str, progress: Callable[[str, int, int], None]) -> None:
        self.name = name
        self.cost = StageCost()
        self.details: dict[str, Any] = {}
        self._progress = progress

    def progress(self, description: str, done: int, total: int) -> None:
        self._progress(description, done, total)


class ExperimentProgress(Protocol):
    """How a run reports progress (the library never prints; the CLI draws bars)."""

    def stage_started(self, name: str) -> None: ...

    def stage_progress(self, name: str, description: str, done: int, total: int) -> None: ...

    def stage_finished(self, record: StageRecord) -> None: ...


class NoProgress:
    """Progress that goes nowhere (library use, tests)."""

    def stage_started(self, name: str) -> None:
        return None

    def stage_progress(self, name: str, description: str, done: int, total: int) -> None:
        return None

    def stage_finished(self, record: StageRecord) -> None:
        return None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StageRunner:
    """Runs stages in a run folder, skipping those whose marker says they are done."""

    def __init__(self, out_dir: Path, progress: ExperimentProgress | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.progress = progress or NoProgress()
        self.records: dict[str, StageRecord] = {}
        (self.out_dir / "stages").mkdir(parents=True, exist_ok=True)

    def marker_path(self, name: str) -> Path:
        return self.out_dir / "stages" / f"{_safe_name(name)}.done.json"

    def digest(self, name: str, inputs: Any, after: Sequence[str] = ()) -> str:
        """The stage's input digest: its own inputs and the digests of the stages it reads."""
        upstream = {stage: self.records[stage].input_digest for stage in after}
        return stable_digest({"stage": name, "inputs": inputs, "after": upstream})

    def _done(self, name: str, digest: str) -> StageRecord | None:
        path = self.marker_path(name)
        if not path.is_file():
            return None
        try:
            record = StageRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError:
            return None  # a marker we cannot read is no proof of anything: redo the stage
        if record.input_digest != digest:
            return None
        if not all((self.out_dir / output).exists() for output in record.outputs):
            return None
        return record

    def log(self, name: str, event: str, **fields: Any) -> None:
        entry = {"stage": name, "event": event, "at": datetime.now(UTC).isoformat(), **fields}
        with (self.out_dir / "stages.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def run(
        self,
        name: str,
        inputs: Any,
        outputs: Sequence[Path],
        body: Callable[[StageContext], None],
        *,
        after: Sequence[str] = (),
    ) -> StageRecord:
        """Run ``body`` unless the stage is done for these inputs; record and return it.

        ``outputs``: the files or folders the body must produce (inside the run folder).
        """
        digest = self.digest(name, inputs, after)
        done = self._done(name, digest)
        if done is not None:
            record = done.model_copy(update={"skipped": True})
            self.records[name] = record
            self.log(name, "skip", input_digest=digest)
            self.progress.stage_finished(record)
            return record
        self.marker_path(name).unlink(missing_ok=True)
        self.log(name, "start", input_digest=digest)
        self.progress.stage_started(name)
        context = StageContext(
            name, lambda desc, done, total: self.progress.stage_progress(name, desc, done, total)
        )
        started = time.perf_counter()
        body(context)
        wall = time.perf_counter() - started
        relative = [str(Path(p).resolve().relative_to(self.out_dir.resolve())) for p in outputs]
        missing = [p for p in relative if not (self.out_dir / p).exists()]
        if missing:
            raise RuntimeError(f"stage {name!r} finished without writing {missing}")
        record = StageRecord(
            name=name,
            input_digest=digest,
            outputs=relative,
            wall_time_s=wall,
            finished_at=datetime.now(UTC).isoformat(),
            cost=context.cost,
            details=context.details,
        )
        atomic_write_text(self.marker_path(name), record.model_dump_json(indent=2) + "\n")
        self.records[name] = record
        self.log(name, "done", input_digest=digest, wall_time_s=round(wall, 3))
        self.progress.stage_finished(record)
        return record


def read_stage_log(out_dir: Path) -> list[dict[str, Any]]:
    """Every event of ``DIR/stages.jsonl``, oldest first (empty when no run started)."""
    path = Path(out_dir) / "stages.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: ...; elapsed()`` - seconds since the block began."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started
