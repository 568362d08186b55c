"""Feedback-learning recipes (SFT, reward model, DPO, best-of-n, expert iteration, PPO).

Importing this package imports no torch; each recipe's heavy imports happen when it runs.
"""

from simfarm.training.config import RecipeConfig, load_recipe_config
from simfarm.training.run import ProgressCallback, RecipeResult, run_recipe

__all__ = ["ProgressCallback", "RecipeConfig", "RecipeResult", "load_recipe_config", "run_recipe"]
