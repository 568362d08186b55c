"""manifest.json: what a run was made from — config, seeds, package versions, data digests,
persona ids — so a result can be traced and a rerun checked against it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from simfarm.provenance import package_versions as versions_of
from simfarm.training.config import RecipeConfig

MANIFEST_FILE = "manifest.json"
PACKAGES = (
    "simfarm",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "vllm",
)


def package_versions() -> dict[str, str | None]:
    return versions_of(PACKAGES)


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def config_digest(config: RecipeConfig) -> str:
    return hashlib.sha256(config.digest_text().encode()).hexdigest()


def write_manifest(out_dir: Path, config: RecipeConfig, extra: dict[str, Any]) -> Path:
    """Write (atomically) ``out_dir/manifest.json``; ``extra`` holds data digests, persona
    ids and anything else the method records."""
    manifest = {
        "method": config.method,
        "config": config.manifest_config(),
        "config_digest": config_digest(config),
        "seed": config.seed,
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **extra,
    }
    path = Path(out_dir) / MANIFEST_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
