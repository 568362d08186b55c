"""``validate`` on Ctrl-C says what ``annotate`` says, and a finished run says what came
from the cache (issue 13)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simfarm.testing.openai_server import start_server
from tests.server_personas import make_persona


def _validate(shared_data: Path, tmp_path: Path, name: str) -> subprocess.Popen:
    args = ["validate", "--annotator", name, "--annotators-dir", str(tmp_path), "--set",
            "pandalm", "--limit", "300", "--data-dir", str(shared_data), "--quiet"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "simfarm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        # Background jobs start with SIGINT ignored; give the CLI a terminal's Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.slow
def test_validate_ctrl_c_says_how_to_resume_then_reports_cache_hits(
    shared_data: Path, tmp_path: Path
) -> None:
    with start_server(latency_s=0.05) as server:
        name = make_persona(tmp_path, server, options={"max_concurrency": 4})
        process = _validate(shared_data, tmp_path, name)
        deadline = time.monotonic() + 120
        while server.stats()["completed"] < 40:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "resume" in stderr and "Traceback" not in stderr
        rerun = _validate(shared_data, tmp_path, name)
        stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "judged 300 pairs" in stdout
    cached = int(stdout.split(" answered now, ")[1].split(" from the cache")[0])
    assert cached > 0
