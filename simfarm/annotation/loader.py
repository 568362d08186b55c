"""Find, read and validate persona and pool files.

Lookup: a name that is a path to an existing YAML file is read directly; otherwise
``<name>.yaml`` is searched in the annotator folders (user folders first, then
``$SIMFARM_ANNOTATORS_DIR``, then the bundled ``annotators/``). Errors name the file and the
field, e.g. ``annotators/x.yaml: decoding.temperature: Input should be a valid number``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from simfarm.annotation.persona import AnnotatorPool, AnnotatorSpec, PersonaSpec, PoolMember
from simfarm.annotation.scenario import format_yaml_error
from simfarm.annotation.template import PromptTemplate
from simfarm.errors import ConfigError
from simfarm.paths import data_search_path
from simfarm.textfiles import read_text

_SPEC_ADAPTER: TypeAdapter[PersonaSpec | AnnotatorPool] = TypeAdapter(AnnotatorSpec)


@dataclass(frozen=True)
class LoadedPersona:
    spec: PersonaSpec
    template: PromptTemplate | None
    path: Path | None


@dataclass(frozen=True)
class LoadedPool:
    spec: AnnotatorPool
    members: list[tuple[LoadedPersona, float]]
    path: Path | None


def find_annotator_file(name: str, dirs: list[Path] | None = None) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    searched = data_search_path("annotators", dirs)
    for folder in searched:
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    known = sorted(p.stem for p in iter_annotator_files(dirs))
    raise ConfigError(
        f"no persona or pool named {name!r} in {[str(f) for f in searched]}; "
        f"known: {', '.join(known) or 'none'}"
    )


def iter_annotator_files(dirs: list[Path] | None = None) -> list[Path]:
    """Every persona/pool file visible on the search path (earlier folders shadow later)."""
    seen: dict[str, Path] = {}
    for folder in data_search_path("annotators", dirs):
        if folder.is_dir():
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                seen.setdefault(path.stem, path)
    return list(seen.values())


def read_spec(path: Path) -> PersonaSpec | AnnotatorPool:
    """Parse and validate one file; every problem is reported with file, line and field."""
    text = read_text(path)
    try:
        raw: Any = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.setdefault("kind", "pairwise")
    raw.setdefault("id", path.stem)
    try:
        return _SPEC_ADAPTER.validate_python(raw)
    except ValidationError as error:
        raise ConfigError(
            format_yaml_error(path, text, error, "invalid annotator definition", union=True)
        ) from None


def load_persona_file(path: Path, spec: PersonaSpec | None = None) -> LoadedPersona:
    spec = spec or _expect_persona(path, read_spec(path))
    spec = _with_head_path(path, spec)
    template = None
    prompt_template = getattr(spec, "prompt_template", None)
    if prompt_template is not None:
        template = PromptTemplate.from_file(find_template(path, prompt_template))
    return LoadedPersona(spec=spec, template=template, path=path)


def _with_head_path(persona_path: Path, spec: PersonaSpec) -> PersonaSpec:
    """A distilled persona's ``head:`` that is a path (``.npz``) is relative to the persona
    file: resolved here, and the head loaded now, so a missing file or a head trained on other
    features fails naming the persona file and the field."""
    head = getattr(spec, "head", None)
    if head is None:
        return spec
    from simfarm.annotation.distilled import load_head

    if Path(head).suffix == ".npz":
        resolved = Path(head) if Path(head).is_absolute() else persona_path.parent / head
        if not resolved.is_file():
            raise ConfigError(f"{persona_path}: head: no head file at {resolved}")
        head = str(resolved.resolve())
        spec = spec.model_copy(update={"head": head})
    try:
        load_head(head)
    except ConfigError as error:
        raise ConfigError(f"{persona_path}: head: {error}") from None
    return spec


def find_template(persona_path: Path, name: str) -> Path:
    """A template next to the persona file first, then in the annotator folders, so a
    user's persona can reuse a bundled template by its relative name
    (``prompts/alpaca_farm_pairwise.txt``)."""
    candidates = [persona_path.parent / name]
    if not Path(name).is_absolute():
        candidates += [folder / name for folder in data_search_path("annotators")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"{persona_path}: prompt_template: {name!r} not found in "
        f"{[str(c.parent) for c in candidates]}"
    )


def _expect_persona(path: Path, spec: PersonaSpec | AnnotatorPool) -> PersonaSpec:
    if isinstance(spec, AnnotatorPool):
        raise ConfigError(f"{path}: expected a persona, found a pool")
    return spec


def load_annotator(name: str, dirs: list[Path] | None = None) -> LoadedPersona | LoadedPool:
    """A persona or a pool (with its members loaded), by id or file path."""
    path = find_annotator_file(name, dirs)
    spec = read_spec(path)
    if not isinstance(spec, AnnotatorPool):
        return load_persona_file(path, spec)
    members: list[tuple[LoadedPersona, float]] = []
    for index, member in enumerate(spec.members):
        try:
            loaded = load_annotator(member.persona, [path.parent, *(dirs or [])])
        except ConfigError as error:
            raise ConfigError(f"{path}: members.{index}.persona: {error}") from None
        if not isinstance(loaded, LoadedPersona):
            raise ConfigError(f"{path}: members.{index}.persona: pools cannot be nested")
        members.append((_with_member_knobs(path, index, loaded, member), member.weight))
    return LoadedPool(spec=spec, members=members, path=path)


def _with_member_knobs(
    path: Path, index: int, persona: LoadedPersona, member: PoolMember
) -> LoadedPersona:
    """The member's persona with the pool's per-member knobs (temperature, noise, biases)."""
    update: dict[str, Any] = {}
    for name, value in member.knobs().items():
        if name not in type(persona.spec).model_fields:
            raise ConfigError(
                f"{path}: members.{index}.{name}: a {persona.spec.kind} persona has no {name}"
            )
        update[name] = value
    if member.temperature is not None:
        decoding = getattr(persona.spec, "decoding", None)
        if decoding is None:
            raise ConfigError(
                f"{path}: members.{index}.temperature: persona {persona.spec.id!r} "
                "samples nothing (it has no decoding)"
            )
        update["decoding"] = decoding.model_copy(update={"temperature": member.temperature})
    if not update:
        return persona
    spec = type(persona.spec).model_validate({**persona.spec.model_dump(), **update})
    return replace(persona, spec=spec)


def annotator_json_schema() -> dict[str, Any]:
    """JSON schema of persona and pool files, for editors."""
    schema = _SPEC_ADAPTER.json_schema()
    schema["title"] = "simfarm annotator (persona or pool)"
    return schema


def measured_agreement_note(annotator: LoadedPersona | LoadedPool) -> str | None:
    """One line stating a loaded persona's (or each pool member's) measured human agreement,
    for printing beside any leaderboard it produced; None when nothing was measured.

    Takes the annotator the caller loaded (from its own search path), never an id to look up:
    the same id elsewhere on the default path may be another persona."""
    personas = (
        [annotator] if isinstance(annotator, LoadedPersona) else [m for m, _ in annotator.members]
    )
    notes = []
    for persona in personas:
        measured = getattr(persona.spec, "measured_agreement", None)
        if measured is None:
            continue
        baseline = (
            f"; `longest` on the same pairs: {measured.longest_agreement:.3f}"
            if measured.longest_agreement is not None
            else ""
        )
        notes.append(
            f"judge `{persona.spec.id}`: human agreement {measured.agreement:.3f} on "
            f"{measured.human_set} (n={measured.n}){baseline}"
        )
    return " | ".join(notes) or None
