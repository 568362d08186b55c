"""LLM backends: one module each, looked up by name through :mod:`simfarm.backends.registry`."""

from simfarm.backends.base import Backend, BackendSpec, PriceTable
from simfarm.backends.registry import BACKENDS, backend_class, create_backend

__all__ = ["BACKENDS", "Backend", "BackendSpec", "PriceTable", "backend_class", "create_backend"]
