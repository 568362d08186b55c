"""The experiment config: one YAML file declares a whole method comparison.

It names the base policy, the instruction splits, the annotator that gives training feedback
(noisy, like AlpacaFarm's simulated crowd), the annotator that evaluates (no noise), the
methods to compare (each a recipe YAML plus overrides), the reference outputs, the executor and
the seed. Every model is ``extra="forbid"`` with each field documented once, by the docstring
under it; ``recipes/experiments/experiment.schema.json`` is generated from them.

:func:`load_experiment_config` validates everything up front, before any model is loaded:
the YAML, every field, every referenced file, every annotator and every method's recipe
(with the experiment's overrides applied). Errors name the file and the key. No torch import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simfarm.errors import ConfigError
from simfarm.paths import bundled_data_dir
from simfarm.training.config import GenerationSpec, InstructionSource, ModelSpec

MethodName = Literal["sft", "best_of_n", "expert_iteration", "dpo", "ppo"]
"""The methods an experiment compares (AlpacaFarm's set). ``sft`` is the SFT baseline itself."""

SPLITS = ("sft", "preference", "unlabeled", "eval")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _bundled_split(name: str) -> InstructionSource:
    return InstructionSource(path=str(bundled_data_dir("recipes") / "data" / f"{name}.jsonl"))


class DataSplits(_Strict):
    """The instruction splits, AlpacaFarm-style (default: the bundled ``recipes/data/``)."""

    sft: InstructionSource = Field(default_factory=lambda: _bundled_split("sft"))
    """Instruction/response pairs the SFT baseline is trained on."""
    preference: InstructionSource = Field(default_factory=lambda: _bundled_split("preference"))
    """Prompts on which the SFT policy's sample pairs are judged by the feedback annotator."""
    unlabeled: InstructionSource = Field(default_factory=lambda: _bundled_split("unlabeled"))
    """Prompts without labels, for the methods that sample during training (PPO, expert
    iteration)."""
    eval: InstructionSource = Field(default_factory=lambda: _bundled_split("eval"))
    """Prompts every method answers for the leaderboard."""


class FeedbackSpec(_Strict):
    """The simulated annotator that gives training feedback, and the pairs it judges."""

    annotator: str = "longest"
    """Persona or pool id, or a path to its YAML file."""
    label_noise: float | None = Field(default=None, ge=0.0, le=0.5)
    """AlpacaFarm's label-flip noise, overriding the persona's ``label_noise`` (every pool
    member's, for a pool); null keeps the file's value."""
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(temperature=1.0, max_new_tokens=32)
    )
    """How the SFT policy samples the two responses per prompt that are judged."""


class ReferenceSpec(_Strict):
    """What every method is judged against (AlpacaFarm: a fixed reference's outputs)."""

    method: str | None = "sft"
    """Name of a method in this experiment whose eval outputs are the reference (default: the
    SFT baseline)."""
    outputs: Path | None = None
    """An alpaca_eval-style outputs file (instruction, output[, generator]) to use instead;
    relative to the experiment file."""

    @model_validator(mode="after")
    def _one(self) -> ReferenceSpec:
        if self.outputs is not None:
            self.method = None
        if self.method is None and self.outputs is None:
            raise ValueError("give `method` or `outputs`")
        return self


class EvaluationSpec(_Strict):
    """How the leaderboard is made."""

    annotator: str = "longest"
    """Persona or pool id (or YAML path) that judges each method against the reference;
    evaluation uses it without label noise."""
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec)
    """What the methods are compared against."""
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(temperature=0.0, max_new_tokens=64)
    )
    """How every method answers the eval prompts (greedy by default)."""
    length_controlled: bool = True
    """Also compute alpaca_eval's length-controlled win rate."""


class MethodSpec(_Strict):
    """One entry of the comparison: a method, its recipe and what the experiment changes."""

    method: MethodName
    """sft (the baseline), best_of_n, expert_iteration, dpo or ppo."""
    name: str = ""
    """Name on the leaderboard and folder under ``DIR/methods/`` (default: the method)."""
    recipe: Path | None = None
    """The recipe YAML (default: the bundled ``recipes/<method>.yaml``; for ``sft`` without
    overrides: the experiment's ``sft`` entry, i.e. the SFT baseline); relative to the
    experiment file."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Recipe fields to change, as a nested mapping or dotted keys
    (``{training.max_steps: 4}``)."""

    @model_validator(mode="after")
    def _default_name(self) -> MethodSpec:
        self.name = self.name or self.method
        if not self.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"name {self.name!r}: use letters, digits, '-', '_' or '.'")
        return self


class ExperimentConfig(_Strict):
    """A method comparison under simulated feedback (``simfarm run <file> --out DIR``)."""

    name: str = "experiment"
    """Title of the report."""
    description: str = ""
    """What the experiment is for, shown in the report."""
    seed: int = 0
    """Seeds every recipe (unless its overrides set ``seed``), sampling and pair order."""
    policy: ModelSpec = Field(default_factory=ModelSpec)
    """The base policy every method starts from (through the SFT baseline)."""
    data: DataSplits = Field(default_factory=DataSplits)
    """The instruction splits."""
    sft: MethodSpec = Field(default_factory=lambda: MethodSpec(method="sft"))
    """The SFT stage that every other method starts from."""
    reward_model: MethodSpec | None = None
    """A reward-model recipe (method ``reward_model`` is implied) trained on the feedback,
    for the methods that score with it; null when no method needs one."""
    feedback: FeedbackSpec = Field(default_factory=FeedbackSpec)
    """The annotator that gives training feedback."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """The annotator that evaluates, and the reference."""
    methods: list[MethodSpec] = Field(min_length=1)
    """The methods to compare (any subset, any order; names must be unique)."""
    executor: Literal["local", "ray"] = "local"
    """Where the judges' requests are sent from: ``local`` (this process) or ``ray`` (Ray
    actors: the cluster at ``RAY_ADDRESS``, else a local loopback-only runtime, started only
    when a judge sends a request). Same records and cache either way; training and
    generation run in this process."""

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentConfig:
        names = [m.name for m in self.methods]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"methods: duplicate names {duplicates}; give each a `name`")
        reference = self.evaluation.reference.method
        if reference is not None and reference not in [*names, "sft"]:
            raise ValueError(
                f"evaluation.reference.method: {reference!r} is neither 'sft' (the SFT stage) "
                f"nor one of the methods {names}"
            )
        return self


def _format(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "<root>"
        value = item.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        lines.append(f"{source}: {loc}: {item['msg']}{shown}")
    return "\n".join(lines)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def load_experiment_config(path: Path) -> ExperimentConfig:
    """Read and validate an experiment file and everything it references.

    Relative paths in it (recipes, data, reference outputs) are resolved against its folder.
    Raises :class:`ConfigError` naming the file and the key.
    """
    path = Path(path)
    source = str(path)
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{source}: cannot read experiment file: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format(source, error)) from None
    base = path.resolve().parent
    for key, split in ((f"data.{name}", getattr(config.data, name)) for name in SPLITS):
        _resolve_split(split, base, source, key)
    if config.evaluation.reference.outputs is not None:
        resolved = _resolve(base, config.evaluation.reference.outputs)
        if not resolved.is_file():
            raise ConfigError(f"{source}: evaluation.reference.outputs: file not found: {resolved}")
        config.evaluation.reference.outputs = resolved
    for key, spec in _method_specs(config):
        if key != "sft" and spec.method == "sft" and spec.recipe is None and not spec.overrides:
            # the SFT baseline itself (resolved just above): same recipe, same overrides
            spec.recipe = config.sft.recipe
            spec.overrides = dict(config.sft.overrides)
            continue
        if spec.recipe is not None:
            spec.recipe = _resolve(base, spec.recipe)
        recipe = spec.recipe or default_recipe(spec.method if key != "reward_model" else key)
        if not recipe.is_file():
            raise ConfigError(f"{source}: {key}.recipe: recipe file not found: {recipe}")
        spec.recipe = recipe
    _check_annotators(config, source)
    _check_recipes(config, source)
    return config


def _resolve_split(split: InstructionSource, base: Path, source: str, key: str) -> None:
    raw = Path(split.path)
    local = raw.is_absolute() or split.path.startswith(".") or raw.suffix or (base / raw).exists()
    if not local:
        return  # a hub dataset id, read with network at run time
    resolved = _resolve(base, raw)
    if not resolved.exists():
        raise ConfigError(f"{source}: {key}.path: data file not found: {resolved}")
    split.path = str(resolved)


def _method_specs(config: ExperimentConfig) -> list[tuple[str, MethodSpec]]:
    specs = [("sft", config.sft)]
    if config.reward_model is not None:
        specs.append(("reward_model", config.reward_model))
    specs += [(f"methods.{i}", spec) for i, spec in enumerate(config.methods)]
    return specs


def default_recipe(method: str) -> Path:
    """The bundled recipe YAML of a method."""
    return bundled_data_dir("recipes") / f"{method}.yaml"


def _check_annotators(config: ExperimentConfig, source: str) -> None:
    from simfarm.annotation.loader import load_annotator

    for key, name in (
        ("feedback.annotator", config.feedback.annotator),
        ("evaluation.annotator", config.evaluation.annotator),
    ):
        try:
            load_annotator(name)
        except ConfigError as error:
            raise ConfigError(f"{source}: {key}: {error}") from None


def _check_recipes(config: ExperimentConfig, source: str) -> None:
    """Each method's recipe, with the experiment's overrides and injected fields, validates."""
    from simfarm.experiment.recipes import build_recipe_config

    for key, spec in _method_specs(config):
        try:
            build_recipe_config(config, spec, placeholders=True)
        except ConfigError as error:
            raise ConfigError(f"{source}: {key}: {error}") from None


def experiment_json_schema() -> dict[str, Any]:
    """JSON schema of experiment files, for editors."""
    schema = ExperimentConfig.model_json_schema()
    schema["title"] = "simfarm experiment"
    return schema
