"""End-to-end method comparisons under simulated feedback (``simfarm run``).

Modules: ``config`` (the validated experiment file), ``recipes`` (method entry -> recipe
config), ``stages`` (cached, resumable stages), ``generation`` (sampling the policies),
``judges`` (feedback and evaluation annotators, the best offline judge), ``evaluate`` (the
leaderboard, through simfarm.evaluation), ``plots`` + ``report`` (figures and the HTML page),
``manifest`` (everything a run used), ``run`` (the stages in order). The library never
prints: progress goes through :class:`ExperimentProgress`.
"""

from simfarm.experiment.config import (
    ExperimentConfig,
    MethodSpec,
    experiment_json_schema,
    load_experiment_config,
)
from simfarm.experiment.judges import JudgeChoice, best_offline_judge
from simfarm.experiment.run import ExperimentResult, run_experiment
from simfarm.experiment.stages import (
    ExperimentProgress,
    StageCost,
    StageRecord,
    read_stage_log,
)

__all__ = [
    "ExperimentConfig",
    "ExperimentProgress",
    "ExperimentResult",
    "JudgeChoice",
    "MethodSpec",
    "StageCost",
    "StageRecord",
    "best_offline_judge",
    "experiment_json_schema",
    "load_experiment_config",
    "read_stage_log",
    "run_experiment",
]
