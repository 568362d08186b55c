"""The only module that imports TRL: SFT, reward model and DPO through TRL's trainers."""

from __future__ import annotations

from simfarm.training.config import RecipeConfig
from simfarm.training.run import RecipeOutcome, RunContext


def run_sft(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    raise NotImplementedError("training skeleton: SFT lands next")


def run_reward_model(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    raise NotImplementedError("training skeleton: reward model lands next")


def run_dpo(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    raise NotImplementedError("training skeleton: DPO lands next")
