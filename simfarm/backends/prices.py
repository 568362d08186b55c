"""Built-in prices (USD per million tokens) for cost accounting of known hosted models.

Prices change; a persona can always set ``backend.options.price`` explicitly, which wins.
Unknown models (a local vLLM server, a test server) cost 0.
"""

from __future__ import annotations

from simfarm.backends.base import PriceTable

# Public list prices, per million tokens (prompt, completion).
_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-4": (30.0, 60.0),
    "gpt-3.5-turbo": (0.5, 1.5),
}


def price_for(model: str) -> PriceTable:
    """The price of ``model``: exact name first, then the longest known prefix
    (so ``gpt-4o-2024-08-06`` is priced as ``gpt-4o``)."""
    if model in _PRICES:
        prompt, completion = _PRICES[model]
        return PriceTable(prompt_per_million=prompt, completion_per_million=completion)
    for name in sorted(_PRICES, key=len, reverse=True):
        if model.startswith(name + "-"):
            prompt, completion = _PRICES[name]
            return PriceTable(prompt_per_million=prompt, completion_per_million=completion)
    return PriceTable()
