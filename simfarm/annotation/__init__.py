"""Simulated annotators: personas and pools declared as data, and the runs that apply them."""

from simfarm.annotation.loader import (
    LoadedPersona,
    LoadedPool,
    annotator_json_schema,
    iter_annotator_files,
    load_annotator,
    read_spec,
)
from simfarm.annotation.persona import AnnotatorPool, PairwisePersona, PoolMember
from simfarm.annotation.run import (
    AnnotationResult,
    AnnotationSummary,
    BackendOverrides,
    annotate,
    annotate_async,
    annotate_pairs,
    with_both_orders,
)

__all__ = [
    "AnnotationResult",
    "AnnotationSummary",
    "AnnotatorPool",
    "BackendOverrides",
    "LoadedPersona",
    "LoadedPool",
    "PairwisePersona",
    "PoolMember",
    "annotate",
    "annotate_async",
    "annotate_pairs",
    "annotator_json_schema",
    "iter_annotator_files",
    "load_annotator",
    "read_spec",
    "with_both_orders",
]
