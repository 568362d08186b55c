"""Personas pointed at a test server: copies of bundled personas in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from simfarm.paths import bundled_data_dir
from simfarm.testing.openai_server import RunningServer


def make_persona(folder: Path, server: RunningServer, name: str = "judge", **fields) -> str:
    """A copy of a bundled persona pointed at ``server`` (plus field overrides)."""
    base = fields.pop("base", "alpaca_farm_greedy")
    spec = yaml.safe_load((bundled_data_dir("annotators") / f"{base}.yaml").read_text())
    spec["backend"]["options"] = {
        "base_url": server.base_url,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.1,
        "timeout_s": 2.0,
        **fields.pop("options", {}),
    }
    spec.update(fields)
    prompts = folder / "prompts"
    if not prompts.exists():
        shutil.copytree(bundled_data_dir("annotators") / "prompts", prompts)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return name
