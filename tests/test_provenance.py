"""Result files say what made them: simfarm version, command line, persona digest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from simfarm import __version__
from simfarm.datafiles import write_records
from simfarm.paths import bundled_data_dir
from simfarm.types import PairwiseAnnotation


def _run(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "simfarm.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def _annotations(path: Path) -> Path:
    write_records(
        path,
        [
            PairwiseAnnotation(
                instruction=f"instruction {i}",
                output_1="r" * (10 + i),
                output_2="m" * (20 + 3 * i),
                generator_1="reference",
                generator_2="model",
                annotator="judge",
                preference=1.0 + (i % 3) / 2,
            )
            for i in range(8)
        ],
    )
    return path


def test_leaderboard_json_records_version_command_and_persona_digest(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    shutil.copy(bundled_data_dir("annotators") / "longest.yaml", personas / "judge.yaml")
    source = _annotations(tmp_path / "ann.jsonl")
    args = ["evaluate", "--annotations", str(source), "--no-lc", "--annotators-dir", str(personas)]
    _run(*args, "--out", str(tmp_path / "a"))
    first = json.loads((tmp_path / "a" / "leaderboard.json").read_text())["provenance"]
    assert first["simfarm_version"] == __version__
    assert first["command_line"][1:3] == ["evaluate", "--annotations"]
    assert set(first["personas"]) == {"judge"}
    # The same name with an edited definition gets another digest.
    with (personas / "judge.yaml").open("a") as f:
        f.write("description: edited\n")
    _run(*args, "--out", str(tmp_path / "b"))
    second = json.loads((tmp_path / "b" / "leaderboard.json").read_text())["provenance"]
    assert second["personas"]["judge"] != first["personas"]["judge"]


def test_report_json_records_version_command_and_persona_digest(
    shared_data: Path, tmp_path: Path
) -> None:
    _run(
        "validate", "--annotator", "longest", "--set", "llmbar", "--single-order", "--limit",
        "10", "--data-dir", str(shared_data), "--out", str(tmp_path),
    )  # fmt: skip
    provenance = json.loads((tmp_path / "report.json").read_text())["provenance"]
    assert provenance["simfarm_version"] == __version__
    assert "validate" in provenance["command_line"]
    assert len(provenance["personas"]["longest"]) == 64
