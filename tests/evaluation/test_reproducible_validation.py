"""The embedded judge gives the same report however its run went (issue 13): a fresh run, a
run stopped and interrupted and then resumed, and a rerun purely from the cache.

Real model (Gemma 3 270M from the weights package), real CLI processes, a real Ctrl-C. What
may differ, and why:

- the resumed run's ``time_per_1000`` (s / 1000): the wall time its requests took, measured
  again for the requests answered in the resumed run;
- nothing else: the cached rerun's report equals the fresh run's byte for byte (its latencies
  are the cached ones), and both caches hold the same answers bit for bit apart from
  ``latency_s``.

The resumed run gets other batch compositions than the fresh one by construction: a first
run stops after 4 pairs with the same judge in batches of 3 (``batch_size`` is operational:
same cache keys), a second is interrupted with SIGINT once it has cached more, the third
finishes. With the padded batching (``batch_invariant: false``) bfloat16 logprobs then differ
in their last bits, which the cache comparison catches even where 8 verdicts happen not to
flip (checked: the test then fails).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from simfarm.paths import bundled_data_dir

pytestmark = pytest.mark.slow

PAIRS = 8


def _judge(folder: Path, batch_size: int = 4) -> Path:
    """embedded_gemma as ``judge``, ``batch_size`` requests per call."""
    folder.mkdir()
    spec = yaml.safe_load((bundled_data_dir("annotators") / "embedded_gemma.yaml").read_text())
    spec["backend"]["options"] = {"batch_size": batch_size}
    shutil.copytree(bundled_data_dir("annotators") / "prompts", folder / "prompts")
    (folder / "judge.yaml").write_text(yaml.safe_dump(spec))
    return folder


def _validate(
    shared_data: Path, personas: Path, out: Path, cache: Path, limit: int = PAIRS
) -> subprocess.Popen[str]:
    args = ["validate", "--annotator", "judge", "--annotators-dir", str(personas), "--set",
            "pandalm", "--limit", str(limit), "--data-dir", str(shared_data), "--out", str(out),
            "--quiet"]  # fmt: skip
    env = {**os.environ, "SIMFARM_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "simfarm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Background jobs start with SIGINT ignored; give the CLI a terminal's Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _finish(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return stdout


def _cached_answers(cache: Path) -> dict[str, dict[str, Any]]:
    """Every cached answer by key, without its measured latency."""
    with sqlite3.connect(cache / "completions.sqlite") as db:
        rows = db.execute("SELECT key, value FROM completions").fetchall()
    answers = {key: json.loads(value) for key, value in rows}
    for answer in answers.values():
        answer.pop("latency_s")
    return answers


def _rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "completions.sqlite") as db:
            return int(db.execute("SELECT count(*) FROM completions").fetchone()[0])
    except sqlite3.Error:
        return 0


def _without_timing(report: bytes) -> dict[str, Any]:
    data = json.loads(report)
    for metrics in [data["overall"], *data["subsets"].values(), *data["groups"].values()]:
        metrics.pop("time_per_1000")
    return data


def test_fresh_resumed_and_cached_runs_give_the_same_report(
    shared_data: Path, tmp_path: Path
) -> None:
    personas, out = _judge(tmp_path / "personas"), tmp_path / "out"
    fresh_cache, resumed_cache = tmp_path / "fresh", tmp_path / "resumed"

    stdout = _finish(_validate(shared_data, personas, out, fresh_cache))
    assert f"judged {PAIRS} pairs" in stdout and "0 failed" in stdout
    fresh = (out / "report.json").read_bytes()

    # Resumed: stopped after 4 pairs (in batches of 3), interrupted for real, then finished.
    by_three = _judge(tmp_path / "by-three", batch_size=3)
    _finish(_validate(shared_data, by_three, tmp_path / "partial", resumed_cache, limit=4))
    stopped_at = _rows(resumed_cache)
    interrupted = _validate(shared_data, personas, out, resumed_cache)
    deadline = time.monotonic() + 300
    while _rows(resumed_cache) == stopped_at:
        assert interrupted.poll() is None, interrupted.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=300)
    assert interrupted.returncode == 130, stderr
    answered_before = _rows(resumed_cache)
    assert stopped_at < answered_before, "the interrupted run cached nothing"
    stdout = _finish(_validate(shared_data, personas, out, resumed_cache))
    assert " answered now, " in stdout and " 0 answered now" not in stdout, stdout
    resumed = (out / "report.json").read_bytes()

    stdout = _finish(_validate(shared_data, personas, out, fresh_cache))
    assert " 0 answered now, " in stdout, stdout
    cached = (out / "report.json").read_bytes()

    assert cached == fresh
    assert _without_timing(resumed) == _without_timing(fresh)
    assert _cached_answers(resumed_cache) == _cached_answers(fresh_cache)
    provenance = json.loads(fresh)["provenance"]
    assert provenance["models"]["judge"]["backend"] == "embedded"
