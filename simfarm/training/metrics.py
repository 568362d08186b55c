"""metrics.jsonl: one JSON object per logged step, safe to resume.

A run killed after its last checkpoint may have logged steps past it; when the run resumes
from that checkpoint those steps are run again, so their lines are dropped first
(:meth:`MetricsLogger.truncate_after`) and the file never holds a step twice.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Appends metric lines to ``out_dir/metrics.jsonl`` (flushed and fsynced per line, so
    a crash loses at most the line being written)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, metrics: dict[str, Any], **extra: Any) -> None:
        record = {"step": int(step), **extra, **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line, from a kill mid-write, is ignored)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def truncate_after(self, step: int, stage: str | None = None) -> None:
        """Drop lines logged after ``step`` (of ``stage`` when given; other stages' lines
        are kept) and any torn line, atomically."""
        kept = [
            r
            for r in self.read()
            if (stage is not None and r.get("stage") != stage) or int(r.get("step", 0)) <= step
        ]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
