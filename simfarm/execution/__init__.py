"""Executing requests: the executor protocol, the in-process executor, backend sessions and
per-endpoint limits."""

from simfarm.execution.executor import (
    Executor,
    ExecutorCounters,
    ExecutorFactory,
    Job,
    ResultHandler,
)
from simfarm.execution.limits import EndpointLimiter
from simfarm.execution.local import InProcessExecutor
from simfarm.execution.session import BackendSession

__all__ = [
    "BackendSession",
    "EndpointLimiter",
    "Executor",
    "ExecutorCounters",
    "ExecutorFactory",
    "InProcessExecutor",
    "Job",
    "ResultHandler",
]
