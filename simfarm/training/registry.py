"""The method registry: recipe ``method`` name -> its config class and runner function.

Entries are import paths, resolved only when needed, so validating a config imports no torch
or TRL and a method whose extra is missing does not break the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from simfarm.training.config import RecipeConfig
    from simfarm.training.run import RecipeOutcome, RunContext


class RecipeEntry(NamedTuple):
    """Where one method lives: ``"module:attribute"`` paths."""

    config: str
    """The RecipeConfig subclass (its module must not import torch at the top)."""
    runner: str
    """``runner(config, context: RunContext) -> RecipeOutcome``."""
    summary: str
    """One line for listings."""


RECIPES: dict[str, RecipeEntry] = {
    "sft": RecipeEntry(
        "simfarm.training.config:SFTConfig",
        "simfarm.training.trl_adapter:run_sft",
        "supervised fine-tuning on reference responses",
    ),
    "reward_model": RecipeEntry(
        "simfarm.training.config:RewardConfig",
        "simfarm.training.trl_adapter:run_reward_model",
        "Bradley-Terry reward model on pairwise preferences",
    ),
    "dpo": RecipeEntry(
        "simfarm.training.config:DPOConfig",
        "simfarm.training.trl_adapter:run_dpo",
        "direct preference optimisation (and IPO, robust, ... via loss_type)",
    ),
    "best_of_n": RecipeEntry(
        "simfarm.training.best_of_n:BestOfNConfig",
        "simfarm.training.best_of_n:run_best_of_n",
        "sample n, score, keep the best (inference-time)",
    ),
    "expert_iteration": RecipeEntry(
        "simfarm.training.expert_iteration:ExpertIterationConfig",
        "simfarm.training.expert_iteration:run_expert_iteration",
        "best-of-n on unlabeled prompts, then SFT on the winners, k rounds",
    ),
    "ppo": RecipeEntry(
        "simfarm.training.ppo:PPOConfig",
        "simfarm.training.ppo:run_ppo",
        "PPO with a value head, KL penalty to the reference, GAE",
    ),
    "distilled_judge": RecipeEntry(
        "simfarm.training.distilled_judge:DistilledJudgeConfig",
        "simfarm.training.distilled_judge:run_distilled_judge",
        "distil a judge's verdicts into a head for the `distilled` persona rule",
    ),
}


def _resolve(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def config_class(method: str) -> type[RecipeConfig]:
    """The config class of ``method`` (KeyError for an unknown method)."""
    from simfarm.errors import ConfigError

    try:
        return _resolve(RECIPES[method].config)  # type: ignore[no-any-return]
    except (ModuleNotFoundError, AttributeError) as error:
        raise ConfigError(f"method {method!r} is registered but not available: {error}") from None


def runner(method: str) -> Callable[[RecipeConfig, RunContext], RecipeOutcome]:
    """The function that runs ``method``."""
    return _resolve(RECIPES[method].runner)  # type: ignore[no-any-return]
