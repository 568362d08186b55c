"""The package installs with its data folders, and optional extras fail clearly."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from simfarm.backends.registry import backend_class
from simfarm.errors import ConfigError
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_wheel_carries_the_data_folders(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("simfarm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "simfarm/_data/annotators/longest.yaml",
        "simfarm/_data/annotators/prompts/alpaca_farm_pairwise.txt",
        "simfarm/_data/annotators/annotator.schema.json",
    ):
        assert required in names
    assert not any(n.endswith(".sqlite") for n in names)
    # The licence as an SPDX expression (PEP 639), not the deprecated TOML table.
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()
    # Installed without the checkout around it, the bundled personas still load.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    script = (
        "import simfarm.paths as p; from simfarm.annotation import load_annotator;"
        "print(p.bundled_data_dir('annotators')); print(load_annotator('longest').spec.rule)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "longest"


def test_every_extra_named_in_the_registry_exists_in_pyproject() -> None:
    import tomllib

    from simfarm.backends.registry import BACKENDS

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for entry in BACKENDS.values():
        assert entry.extra is None or entry.extra in extras


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="openai"):
        backend_class("nope")


def test_importing_simfarm_loads_no_model_library() -> None:
    heavy = "{'torch', 'transformers', 'vllm', 'openai'}"
    script = f"import sys, simfarm; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
