"""Where the shared AlpacaEval data is, computed at import time so tests can be parametrised
over it (the ``shared_data`` fixture only exists once a test runs)."""

from __future__ import annotations

import csv
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ALPACA = SHARED_DATA / "alpaca_eval"
ANNOTATIONS = ALPACA / "annotations"
PUBLISHED = ALPACA / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"
ARENA = ALPACA / "arena_benchmarks.csv"


def published_rows() -> dict[str, dict[str, str]]:
    """The published leaderboard, by model name (empty when the data is absent)."""
    if not PUBLISHED.is_file():
        return {}
    with PUBLISHED.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        name = reader.fieldnames[0] if reader.fieldnames else ""
        return {row[name]: row for row in reader}


def annotation_files() -> dict[str, Path]:
    """Shared ``annotations/<model>.json`` files, by model name."""
    if not ANNOTATIONS.is_dir():
        return {}
    return {path.stem: path for path in sorted(ANNOTATIONS.glob("*.json"))}


def replayable_models() -> list[str]:
    """Models that have both annotations and a row in the published leaderboard."""
    rows = published_rows()
    return [model for model in annotation_files() if model in rows]
