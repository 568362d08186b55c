"""Evaluation: win-rate leaderboards (alpaca_eval-exact, with the length-controlled GLM),
annotator validation against human-labelled sets, and ranking fidelity.

Modules: ``winrate`` (head-to-head metrics), ``difficulty`` + ``length_controlled`` (the LC
GLM), ``leaderboard`` + ``plots`` (outputs), ``io`` (reading annotations and outputs),
``human_sets`` (human-labelled set configs and loaders), ``validation`` (agreement metrics),
``correlation`` (rank correlations), ``run_evaluation`` / ``run_validation`` (the commands'
work without the command line), ``reports`` (markdown).
"""

from simfarm.evaluation.correlation import CorrelationResult, load_scores, rank_correlation
from simfarm.evaluation.difficulty import (
    InstructionDifficulty,
    estimate_difficulty,
    load_difficulty,
    save_difficulty,
)
from simfarm.evaluation.human_sets import (
    HumanPairwiseItem,
    HumanRatingItem,
    HumanSet,
    find_human_set,
    list_human_sets,
    load_human_set,
    read_set_config,
    resolve_data_root,
)
from simfarm.evaluation.io import (
    AnnotationFile,
    load_annotation_file,
    load_rating_scores,
)
from simfarm.evaluation.leaderboard import (
    Leaderboard,
    LeaderboardRow,
    build_leaderboard,
    leaderboard_frame,
    write_leaderboard,
)
from simfarm.evaluation.length_controlled import LengthControlledResult, length_controlled_winrate
from simfarm.evaluation.plots import plot_leaderboard, plot_scatter
from simfarm.evaluation.run_evaluation import (
    EvaluationInputs,
    from_annotation_files,
    from_model_outputs,
    write_evaluation,
)
from simfarm.evaluation.run_validation import (
    align_annotations,
    build_report,
    pairs_of,
    run_annotator,
    write_report,
)
from simfarm.evaluation.validation import AgreementMetrics, ValidationReport, agreement_metrics
from simfarm.evaluation.winrate import WinRateMetrics, compute_winrate
from simfarm.record_checks import BadRecordPolicy, RecordIssue

__all__ = [
    "AgreementMetrics",
    "AnnotationFile",
    "BadRecordPolicy",
    "CorrelationResult",
    "EvaluationInputs",
    "HumanPairwiseItem",
    "HumanRatingItem",
    "HumanSet",
    "InstructionDifficulty",
    "Leaderboard",
    "LeaderboardRow",
    "LengthControlledResult",
    "RecordIssue",
    "ValidationReport",
    "WinRateMetrics",
    "agreement_metrics",
    "align_annotations",
    "build_leaderboard",
    "build_report",
    "compute_winrate",
    "estimate_difficulty",
    "find_human_set",
    "from_annotation_files",
    "from_model_outputs",
    "leaderboard_frame",
    "length_controlled_winrate",
    "list_human_sets",
    "load_annotation_file",
    "load_difficulty",
    "load_human_set",
    "load_rating_scores",
    "load_scores",
    "pairs_of",
    "plot_leaderboard",
    "plot_scatter",
    "rank_correlation",
    "read_set_config",
    "resolve_data_root",
    "run_annotator",
    "save_difficulty",
    "write_evaluation",
    "write_leaderboard",
    "write_report",
]
