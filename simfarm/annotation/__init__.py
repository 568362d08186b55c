"""Simulated annotators: personas and pools declared as data, and the runs that apply them."""

from simfarm.annotation.judge import (
    Judge,
    JudgePool,
    PlannedRequest,
    Reading,
    RunStats,
    parse_retry,
)
from simfarm.annotation.loader import (
    LoadedPersona,
    LoadedPool,
    annotator_json_schema,
    iter_annotator_files,
    load_annotator,
    read_spec,
)
from simfarm.annotation.pairwise import PairwiseJudge, Verdict
from simfarm.annotation.persona import AnnotatorPool, PairwisePersona, PoolMember
from simfarm.annotation.run import (
    AnnotationResult,
    AnnotationSummary,
    BackendOverrides,
    annotate,
    annotate_async,
    annotate_pairs,
    judge_for_persona,
    judges_for,
    with_both_orders,
)

__all__ = [
    "AnnotationResult",
    "AnnotationSummary",
    "AnnotatorPool",
    "BackendOverrides",
    "Judge",
    "JudgePool",
    "LoadedPersona",
    "LoadedPool",
    "PairwiseJudge",
    "PairwisePersona",
    "PlannedRequest",
    "PoolMember",
    "Reading",
    "RunStats",
    "Verdict",
    "annotate",
    "annotate_async",
    "annotate_pairs",
    "annotator_json_schema",
    "iter_annotator_files",
    "judge_for_persona",
    "judges_for",
    "load_annotator",
    "parse_retry",
    "read_spec",
    "with_both_orders",
]
