"""``--model`` / ``--base-url`` for the commands that judge (``evaluate``, ``validate``),
as ``annotate`` has them: the persona file stays as it is, its backend is pointed elsewhere
for this run (the overrides are part of the backend identity, hence of the cache keys)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from simfarm.types import PairwiseAnnotation, PairwiseItem

ModelOverride = Annotated[
    str | None, typer.Option("--model", help="Override the persona's model (LLM judges).")
]
BaseUrlOverride = Annotated[
    str | None,
    typer.Option("--base-url", help="Override the persona's server URL (openai backends)."),
]


def annotate_with_overrides(
    model: str | None, base_url: str | None, **engine_options: Any
) -> Callable[..., list[PairwiseAnnotation]] | None:
    """An ``annotate`` callable (the signature of
    :func:`simfarm.annotation.annotate_pairs`) that applies the overrides; None without any,
    so the default path stays the library's own. ``engine_options`` that are not None (e.g.
    an ``executor_factory`` where the engine takes one) are passed on to
    :func:`simfarm.annotation.annotate`."""
    engine_options = {k: v for k, v in engine_options.items() if v is not None}
    if model is None and base_url is None and not engine_options:
        return None

    def annotate(
        items: list[PairwiseItem],
        persona: str,
        *,
        annotators_dirs: list[Path] | None = None,
        use_cache: bool = True,
        both_orders: bool = False,
        progress: Any = None,
        samples: int = 1,
    ) -> list[PairwiseAnnotation]:
        from simfarm.annotation import (
            BackendOverrides,
            load_annotator,
            with_both_orders,
        )
        from simfarm.annotation import annotate as run_annotation

        loaded = load_annotator(persona, annotators_dirs)
        if both_orders:
            loaded = with_both_orders(loaded)
        overrides = BackendOverrides(
            model=model, options={"base_url": base_url} if base_url else {}
        )
        result = run_annotation(
            items,
            loaded,
            use_cache=use_cache,
            backend_overrides=overrides,
            progress=progress,
            samples=samples,
            **engine_options,
        )
        return result.annotations

    return annotate
