"""simfarm: simulated annotators and feedback-learning method comparisons, in simulation.

Public names are re-exported here; everything else is an implementation detail. Importing
simfarm imports no model library (torch, vLLM, an SDK): backends load on first use.
"""

from simfarm.annotation import (
    AnnotationResult,
    AnnotationSummary,
    AnnotatorPool,
    PairwisePersona,
    annotate,
    annotate_async,
    annotate_pairs,
    load_annotator,
)
from simfarm.backends import Backend, BackendSpec, create_backend
from simfarm.cache import CompletionCache
from simfarm.errors import ConfigError, MissingExtraError, SimfarmError
from simfarm.execution import BackendSession
from simfarm.types import (
    ChatMessage,
    Completion,
    CompletionRequest,
    DecodingParams,
    Failure,
    PairwiseAnnotation,
    PairwiseItem,
)

__version__ = "0.1.0"

__all__ = [
    "AnnotationResult",
    "AnnotationSummary",
    "AnnotatorPool",
    "Backend",
    "BackendSession",
    "BackendSpec",
    "ChatMessage",
    "Completion",
    "CompletionCache",
    "CompletionRequest",
    "ConfigError",
    "DecodingParams",
    "Failure",
    "MissingExtraError",
    "PairwiseAnnotation",
    "PairwiseItem",
    "PairwisePersona",
    "SimfarmError",
    "__version__",
    "annotate",
    "annotate_async",
    "annotate_pairs",
    "create_backend",
    "load_annotator",
]
