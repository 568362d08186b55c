"""Hindsight scenarios and hindsight personas, declared as data (YAML).

A *scenario* (``annotators/scenarios/<id>.yaml``) is a small world in which an assistant's
response has consequences the annotator cannot see when it reads the response:

- ``hidden_fields``: what each instance knows that the judge does not at first (a shop's
  real catalog, the user's real need); every instance's ``hidden`` mapping must have them;
- ``outcome``: how the world answers a response, either a Python function by import path
  (where the truth is computable: it also returns the response's true utility) or a prompt
  for an LLM world model, which sees the hidden context;
- the judge prompts: ``foresight_template`` (the conversation and two responses) and
  ``hindsight_template`` (the same plus what happened after each).

Instances (JSONL beside the scenario) each hold the visible ``context``, the ``hidden``
mapping and two or more candidate ``responses``; every pair of responses is one item.

A *hindsight persona* (``kind: hindsight``) is an annotator applying a scenario: a backend,
decoding and parser for its verdicts, and optionally its own judge templates (e.g. a raw
A/B prompt for a base model) and its own world-model backend. RLHS (Liang et al., 2025):
feedback given in hindsight, after the simulated outcome, tracks the true utility better than
feedback given in foresight.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simfarm.annotation.parsers import ParserSpec, RegexParser
from simfarm.annotation.yaml_lines import line_of
from simfarm.backends.base import BackendSpec
from simfarm.errors import ConfigError
from simfarm.paths import data_search_path
from simfarm.textfiles import read_text
from simfarm.types import DecodingParams, stable_digest

if TYPE_CHECKING:
    from simfarm.annotation.scenario_instances import InstancesFile
    from simfarm.record_checks import BadRecordPolicy


class SimulatedOutcome(BaseModel):
    """What happened after a response: text shown to the hindsight judge, and the true
    utility when the scenario can compute it."""

    model_config = ConfigDict(extra="forbid")

    text: str
    utility: float | None = None


OutcomeFunction = Callable[[str, Mapping[str, Any], str], SimulatedOutcome]
"""``(context, hidden, response) -> SimulatedOutcome``."""


class OutcomeSpec(BaseModel):
    """How the world answers a response: a function or an LLM world model (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    function: str | None = None
    """``package.module:function`` taking ``(context, hidden, response)`` and returning a
    :class:`SimulatedOutcome` (text and true utility). Deterministic: no request is made."""
    prompt_template: str | None = None
    """A prompt for an LLM world model, relative to the scenario file; placeholders
    ``{context}``, ``{hidden}`` (the instance's hidden mapping as JSON) and ``{response}``.
    Its answer is the outcome text (no utility is known)."""
    prompt_format: Literal["chat", "raw"] = "chat"
    backend: BackendSpec | None = None
    """The world model (None: the persona's ``outcome_backend``, else its own backend)."""
    decoding: DecodingParams = Field(default_factory=lambda: DecodingParams(max_tokens=160))
    true_utility: str | None = None
    """With a world model: ``package.module:function`` taking ``(context, hidden,
    response)`` and returning the true utility (a float), where it is computable, so a
    report can still score the judge's feedback against the truth."""

    @model_validator(mode="after")
    def _function_or_prompt(self) -> OutcomeSpec:
        if (self.function is None) == (self.prompt_template is None):
            raise ValueError("give exactly one of `function` and `prompt_template`")
        if self.function is not None and self.true_utility is not None:
            raise ValueError("`true_utility` is for world models; a `function` gives it")
        return self

    @field_validator("function", "true_utility")
    @classmethod
    def _importable(cls, function: str | None) -> str | None:
        if function is not None:
            resolve_function(function)
        return function


def resolve_function(path: str) -> OutcomeFunction:
    """The function at ``package.module:name``; a ValueError says what is wrong."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"expected 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r}: {error}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {name!r}")
    return function  # type: ignore[no-any-return]


class ScenarioSpec(BaseModel):
    """One hindsight scenario (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    """Defaults to the file name without ``.yaml``."""
    description: str = ""
    hidden_fields: list[str] = Field(min_length=1)
    """Keys every instance's ``hidden`` mapping must hold: what the judge cannot see in
    foresight and the outcome simulator can."""
    outcome: OutcomeSpec
    foresight_template: str
    """Judge prompt before any outcome, relative to this file; placeholders ``{context}``,
    ``{output_1}``, ``{output_2}``, ``{persona}``."""
    hindsight_template: str
    """Judge prompt after the outcomes: also ``{outcome_1}`` and ``{outcome_2}``."""
    instances: str
    """JSONL file of instances, relative to this file."""


class CandidateResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str


class ScenarioInstance(BaseModel):
    """One situation: what the judge sees, what it does not, and the candidate responses."""

    model_config = ConfigDict(extra="forbid")

    id: str
    context: str
    """The visible conversation (e.g. the user's request)."""
    hidden: dict[str, Any]
    responses: list[CandidateResponse] = Field(min_length=2)


class HindsightItem(BaseModel):
    """One pair of responses to one instance: the unit a hindsight judge judges."""

    model_config = ConfigDict(extra="forbid")

    scenario: str
    instance_id: str
    context: str
    hidden: dict[str, Any]
    response_1: CandidateResponse
    response_2: CandidateResponse

    def content_digest(self) -> str:
        return stable_digest(self.model_dump(mode="json"))


class HindsightPersona(BaseModel):
    """A simulated annotator giving foresight and hindsight feedback in one scenario."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["hindsight"] = "hindsight"
    id: str = ""
    """Persona id; defaults to the file name without ``.yaml``."""
    description: str = ""
    scenario: str
    """Scenario id (``annotators/scenarios/<id>.yaml``) or a path to a scenario file."""
    backend: BackendSpec
    """The judge's model (foresight and hindsight verdicts)."""
    prompt_format: Literal["chat", "raw"] = "chat"
    persona_text: str = ""
    """Who the annotator is; inserted where a judge template says ``{persona}``."""
    decoding: DecodingParams = Field(default_factory=lambda: DecodingParams(max_tokens=16))
    parser: ParserSpec = Field(default_factory=RegexParser)
    """Reads each verdict (as for pairwise personas)."""
    foresight_template: str | None = None
    """Replaces the scenario's foresight prompt (relative to this file), e.g. a raw A/B
    prompt for a base model."""
    hindsight_template: str | None = None
    """Replaces the scenario's hindsight prompt."""
    outcome_backend: BackendSpec | None = None
    """World model for a scenario whose outcome is a prompt and names no backend (None:
    this persona's ``backend``)."""
    randomize_order: bool = True
    """Show the two responses in a seeded random order per item (undone after parsing)."""
    max_parse_attempts: int = Field(3, ge=1)

    @field_validator("backend", "outcome_backend")
    @classmethod
    def _known_backend_and_options(cls, backend: BackendSpec | None) -> BackendSpec | None:
        if backend is not None:
            from simfarm.backends.registry import check_backend_options

            check_backend_options(backend.name, backend.options)
        return backend


@dataclass(frozen=True)
class LoadedScenario:
    spec: ScenarioSpec
    path: Path

    def relative(self, name: str) -> Path:
        return self.path.parent / name

    def outcome_function(self) -> OutcomeFunction | None:
        function = self.spec.outcome.function
        return resolve_function(function) if function else None

    def utility_function(self) -> Callable[[str, Mapping[str, Any], str], float] | None:
        function = self.spec.outcome.true_utility
        return resolve_function(function) if function else None  # type: ignore[return-value]

    def load_instances(self, path: Path | None = None) -> list[ScenarioInstance]:
        """The scenario's instances (or those in ``path``), each checked; any bad instance
        stops the load, naming file, line, record and field (``simfarm personas validate``).
        """
        from simfarm.record_checks import raise_if_error

        loaded = self.read_instances(path, "error")
        raise_if_error(loaded.issues, "error", loaded.source)
        return loaded.instances

    def read_instances(
        self, path: Path | None = None, policy: BadRecordPolicy = "error"
    ) -> InstancesFile:
        """The scenario's instances (or those in ``path``) under a bad-record ``policy``,
        with every issue (see :mod:`simfarm.annotation.scenario_instances`); the caller
        stops under ``error`` and lists the issues otherwise."""
        from simfarm.annotation.scenario_instances import read_instances

        path = path or self.relative(self.spec.instances)
        return read_instances(path, self.spec.hidden_fields, policy)


def pairs_of(scenario: str, instances: list[ScenarioInstance]) -> list[HindsightItem]:
    """Every pair of responses (in file order) of every instance."""
    items = []
    for instance in instances:
        responses = instance.responses
        for i, first in enumerate(responses):
            for second in responses[i + 1 :]:
                items.append(
                    HindsightItem(
                        scenario=scenario,
                        instance_id=instance.id,
                        context=instance.context,
                        hidden=instance.hidden,
                        response_1=first,
                        response_2=second,
                    )
                )
    return items


def find_scenario_file(name: str, dirs: list[Path] | None = None) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    searched = [folder / "scenarios" for folder in data_search_path("annotators", dirs)]
    for folder in searched:
        for suffix in (".yaml", ".yml"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    known = sorted(p.stem for p in iter_scenario_files(dirs))
    raise ConfigError(
        f"no scenario named {name!r} in {[str(f) for f in searched]}; "
        f"known: {', '.join(known) or 'none'}"
    )


def iter_scenario_files(dirs: list[Path] | None = None) -> list[Path]:
    """Every scenario file on the search path (earlier folders shadow later)."""
    seen: dict[str, Path] = {}
    for folder in data_search_path("annotators", dirs):
        folder = folder / "scenarios"
        if folder.is_dir():
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                seen.setdefault(path.stem, path)
    return list(seen.values())


def load_scenario(name: str, dirs: list[Path] | None = None) -> LoadedScenario:
    """A scenario by id or path, validated; every problem names file, line and field, and
    the templates and instances file must exist."""
    path = find_scenario_file(name, dirs)
    text = read_text(path)
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: cannot read YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw.setdefault("id", path.stem)
    try:
        spec = ScenarioSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_yaml_error(path, text, error, "invalid scenario")) from None
    loaded = LoadedScenario(spec, path)
    for field in ("foresight_template", "hindsight_template", "instances"):
        _must_exist(loaded, text, (field,), getattr(spec, field))
    if spec.outcome.prompt_template is not None:
        _must_exist(loaded, text, ("outcome", "prompt_template"), spec.outcome.prompt_template)
    return loaded


def _must_exist(loaded: LoadedScenario, text: str, loc: tuple[str, ...], name: str) -> None:
    if not loaded.relative(name).is_file():
        line = line_of(text, loc)
        raise ConfigError(
            f"{loaded.path}:{line}: {'.'.join(loc)}: {name!r} not found beside the scenario"
        )


def format_yaml_error(
    path: Path, text: str, error: ValidationError, what: str, union: bool = False
) -> str:
    """``file: what`` then one ``file:line: field: message`` per problem. ``union``: the
    model was a tagged union, whose chosen member pydantic puts first in each location."""
    lines = [f"{path}: {what}"]
    for item in error.errors():
        loc = list(item["loc"][1:] if union and len(item["loc"]) > 1 else item["loc"])
        field = ".".join(str(part) for part in loc) or "<root>"
        line = line_of(text, loc)
        where = f"{path}:{line}" if line is not None else str(path)
        lines.append(f"  {where}: {field}: {item['msg']}")
    return "\n".join(lines)
