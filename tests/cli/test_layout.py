"""The CLI is a layer on the library: the library never imports it, progress reaches the
library as a callback, and the commands stay reachable the ways users and scripts call them."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import simfarm
from simfarm.annotation import annotate_pairs
from simfarm.cli import app
from simfarm.types import PairwiseItem


def test_library_imports_neither_the_cli_nor_rich_progress() -> None:
    script = (
        "import sys, simfarm, simfarm.annotation.run, simfarm.evaluation.run_evaluation, "
        "simfarm.evaluation.run_validation, simfarm.evaluation.leaderboard;"
        "print(sorted(m for m in sys.modules if m.startswith(('simfarm.cli', 'rich.progress'))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_option_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"simfarm {simfarm.__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "simfarm", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"simfarm {simfarm.__version__}"


def test_annotate_pairs_reports_progress_through_its_callback() -> None:
    items = [PairwiseItem(instruction=f"q{i}", output_1="a" * i, output_2="bb") for i in range(5)]
    calls: list[tuple[int, int, float]] = []
    annotations = annotate_pairs(
        items, "longest", use_cache=False, progress=lambda *c: calls.append(c)
    )
    assert len(annotations) == 5
    assert calls[0] == (0, 5, 0.0)
    assert [c[0] for c in calls] == list(range(6))
    assert all(c[1] == 5 for c in calls)
