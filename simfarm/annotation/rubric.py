"""Rubric files (``annotators/rubrics/*.yaml``): read, validate, and report every problem
with its file, line and field, e.g. ``rubrics/x.yaml:7: scores.3: Input should be a valid
string``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simfarm.annotation.feedback_specs import Rubric
from simfarm.errors import ConfigError
from simfarm.paths import data_search_path
from simfarm.textfiles import read_text

__all__ = ["find_rubric", "iter_rubric_files", "load_rubric"]

RUBRICS_FOLDER = "rubrics"


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the YAML node at ``loc`` (the deepest that exists)."""
    if root is None:
        return 1
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_rubric(path: Path) -> Rubric:
    """Parse and validate one rubric file; errors name the file, line and field."""
    try:
        text = read_text(path)
        root = yaml.compose(text)
        raw: Any = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level")
    raw.setdefault("id", path.stem)
    try:
        return Rubric.model_validate(raw)
    except ValidationError as error:
        lines = [f"{path}: invalid rubric"]
        for item in error.errors():
            loc = tuple(item["loc"])
            field = ".".join(str(p) for p in loc) or "<root>"
            lines.append(f"  {path}:{_line_of(root, loc)}: {field}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from None


def find_rubric(name: str, beside: Path | None) -> Path:
    """A rubric file by path: next to the persona file first, then in the annotator folders."""
    candidates = [beside.parent / name] if beside is not None else [Path(name)]
    if not Path(name).is_absolute():
        candidates += [folder / name for folder in data_search_path("annotators")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = beside or "the annotator folders"
    raise ConfigError(f"{where}: rubric: {name!r} not found in {[str(c) for c in candidates]}")


def iter_rubric_files(dirs: list[Path] | None = None) -> list[Path]:
    """Every rubric file under ``rubrics/`` of the annotator folders (earlier shadow later)."""
    seen: dict[str, Path] = {}
    for folder in data_search_path("annotators", dirs):
        rubrics = folder / RUBRICS_FOLDER
        if rubrics.is_dir():
            for path in sorted([*rubrics.glob("*.yaml"), *rubrics.glob("*.yml")]):
                seen.setdefault(path.stem, path)
    return list(seen.values())
