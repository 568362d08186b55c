"""Where simfarm finds its bundled data and keeps its cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import simfarm
from simfarm.cache import CompletionCache
from simfarm.paths import DATA_FOLDERS, bundled_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
from simfarm.evaluation.human_sets import find_human_set
from simfarm.paths import bundled_data_dir
print(bundled_data_dir("evals"))
print(find_human_set("pandalm").name)
"""


def _installed_layout(site: Path) -> None:
    """What a wheel install looks like: the package with its data copied into _data."""
    package = site / "simfarm"
    shutil.copytree(
        Path(simfarm.__file__).parent,
        package,
        ignore=shutil.ignore_patterns("__pycache__", "_data"),
    )
    for name in DATA_FOLDERS:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, package / "_data" / name)


def test_other_top_level_packages_named_like_data_folders_do_not_take_over(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site-packages"
    _installed_layout(site)
    # Another distribution's top-level `evals` and `annotators` packages, beside simfarm
    # in site-packages and earlier on sys.path.
    for name in ("evals", "annotators"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("SIMFARM_EVALS_DIR", None)
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    evals_dir, set_name = probe.stdout.split()
    assert Path(evals_dir) == site / "simfarm" / "_data" / "evals"
    assert set_name == "pandalm"


def test_a_source_checkout_reads_the_top_level_folders() -> None:
    assert bundled_data_dir("annotators") == REPO_ROOT / "annotators"


def test_default_cache_location_is_the_platform_user_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The autouse fixture points SIMFARM_CACHE_DIR at a temporary folder: undo it here so
    # the real default is what gets tested, with HOME and XDG pointed at tmp.
    monkeypatch.delenv("SIMFARM_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    with CompletionCache() as cache:
        assert cache.path == tmp_path / "xdg-cache" / "simfarm" / "completions.sqlite"
        assert cache.path.is_file()
    monkeypatch.delenv("XDG_CACHE_HOME")
    with CompletionCache() as cache:
        assert cache.path == tmp_path / "home" / ".cache" / "simfarm" / "completions.sqlite"
    assert Path(simfarm.__file__).parent not in cache.path.parents
