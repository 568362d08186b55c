"""From an experiment's method entry to the recipe config that trains it.

A method entry names a recipe YAML and overrides; the experiment then sets what ties the
methods together, so that they differ only in the method: the base policy (for every method
but SFT: the policy with the SFT baseline's adapter), the seed, the SFT split for SFT, and the
preference records the feedback annotator produced for the methods that learn from them.
Those injected fields are the only recipe keys the experiment owns; everything else is the
recipe's (and the user's overrides').
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from simfarm.errors import ConfigError

if TYPE_CHECKING:
    from simfarm.experiment.config import ExperimentConfig, MethodSpec
    from simfarm.training.config import RecipeConfig


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Apply ``overrides`` in place: dotted keys address nested fields, mappings merge."""
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            merge_overrides(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)


def read_recipe_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read recipe file: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


class Injected:
    """The run's artefacts a recipe is pointed at (None: not produced yet / not needed)."""

    def __init__(
        self,
        sft_checkpoint: Path | None = None,
        preferences: Path | None = None,
        reward_model: Path | None = None,
        feedback_judge: str | None = None,
    ) -> None:
        self.sft_checkpoint = sft_checkpoint
        self.preferences = preferences
        self.reward_model = reward_model
        self.feedback_judge = feedback_judge
        """The feedback annotator (label noise applied) as a persona/pool file path."""


SCORING_METHODS = ("best_of_n", "expert_iteration", "ppo")
"""Methods that score samples during training: they get the experiment's feedback judge (or
its reward model) as their scorer."""


def recipe_data(
    config: ExperimentConfig, spec: MethodSpec, injected: Injected, method: str
) -> dict[str, Any]:
    """The recipe mapping: the YAML, then the experiment's fields, then the user's overrides."""
    assert spec.recipe is not None, "load_experiment_config resolves every recipe path"
    data = read_recipe_yaml(spec.recipe)
    found = data.get("method", method)
    if found != method:
        raise ConfigError(
            f"{spec.recipe}: method: the recipe is for {found!r}, but the experiment uses it "
            f"for {method!r}"
        )
    data["method"] = method
    policy = config.policy.model_dump(mode="json", exclude_none=True)
    if method != "sft" and injected.sft_checkpoint is not None:
        policy["adapter"] = str(injected.sft_checkpoint)
    data["model"] = {**data.get("model", {}), **policy}
    data["seed"] = config.seed
    data_section = data.setdefault("data", {}) if isinstance(data.get("data"), dict) else None
    if data_section is None:
        data_section = data["data"] = {}
    if method == "sft":
        data_section["train"] = config.data.sft.model_dump(mode="json", exclude_none=True)
    if method in ("dpo", "reward_model") and injected.preferences is not None:
        data_section["annotations"] = str(injected.preferences)
        data_section["feedback"] = None
    if method in SCORING_METHODS:
        _inject_scorer(config, data, data_section, injected, method)
    merge_overrides(data, spec.overrides)
    return data


def _inject_scorer(
    config: ExperimentConfig,
    data: dict[str, Any],
    data_section: dict[str, Any],
    injected: Injected,
    method: str,
) -> None:
    """Prompts and scorer of a method that samples while it learns."""
    split = config.data.eval if method == "best_of_n" else config.data.unlabeled
    data_section["prompts"] = split.model_dump(mode="json", exclude_none=True)
    scorer = data.setdefault("scorer", {})
    if injected.reward_model is not None:
        scorer.update({"kind": "reward_model", "reward_model": str(injected.reward_model)})
    else:
        judge = injected.feedback_judge or config.feedback.annotator
        scorer.update({"kind": "annotator", "annotator": judge})
        if method == "best_of_n":
            # the eval split's reference answers must not leak into the choice: the
            # candidates play each other
            data["selection"] = "tournament"
        else:
            # unlabeled prompts have no reference answers: judge against the start policy
            scorer["reference"] = "initial_policy"
    if method == "best_of_n":
        # answers as long as every other method's on the leaderboard
        generation = data.setdefault("generation", {})
        generation["max_new_tokens"] = config.evaluation.generation.max_new_tokens


def build_recipe_config(
    config: ExperimentConfig,
    spec: MethodSpec,
    injected: Injected | None = None,
    *,
    placeholders: bool = False,
) -> RecipeConfig:
    """The validated recipe config of one method entry.

    ``placeholders``: validate before the run exists: the files the run will produce (the
    SFT adapter, the preference records) are stood in for by the recipe file itself, which
    exists, so that only the recipe's own paths and fields are checked.
    """
    from simfarm.training.config import parse_recipe_config

    method = "reward_model" if spec is config.reward_model else spec.method
    if placeholders:
        assert spec.recipe is not None
        stand_in = spec.recipe.resolve()
        injected = Injected(
            sft_checkpoint=stand_in,
            preferences=stand_in,
            reward_model=stand_in if config.reward_model is not None else None,
            feedback_judge=config.feedback.annotator,
        )
    data = recipe_data(config, spec, injected or Injected(), method)
    assert spec.recipe is not None
    return parse_recipe_config(data, str(spec.recipe), spec.recipe.resolve().parent)
