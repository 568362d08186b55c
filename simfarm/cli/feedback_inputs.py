"""Inputs and summaries of the single-output feedback kinds (ratings, absolute critiques)
for ``simfarm annotate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from simfarm.cli.common import console, err_console

if TYPE_CHECKING:
    from simfarm.annotation.feedback_records import FeedbackSummary, SingleItem
    from simfarm.annotation.loader import LoadedPersona, LoadedPool
    from simfarm.record_checks import BadRecordPolicy, RecordIssue


def judges_single_outputs(loaded: LoadedPersona | LoadedPool) -> bool:
    """Whether the persona (or a pool's members) judges one output at a time."""
    from simfarm.annotation.feedback_specs import CritiquePersona, RatingPersona
    from simfarm.annotation.loader import LoadedPool

    spec = loaded.members[0][0].spec if isinstance(loaded, LoadedPool) else loaded.spec
    if isinstance(spec, RatingPersona):
        return True
    return isinstance(spec, CritiquePersona) and spec.mode == "absolute"


def single_items(
    model_outputs: str, reference_outputs: str | None, policy: BadRecordPolicy
) -> tuple[list[SingleItem], list[RecordIssue]]:
    """One item per model output; reference outputs, when given, are paired by
    instruction (and input) and become the items' reference answers."""
    from simfarm.annotation.feedback_records import SingleItem
    from simfarm.datafiles import load_model_outputs
    from simfarm.errors import SimfarmError

    outputs = load_model_outputs(model_outputs, policy, warn=False)
    issues = list(outputs.issues)
    references: dict[tuple[str, str], str] = {}
    if reference_outputs is not None:
        reference_file = load_model_outputs(reference_outputs, policy, warn=False)
        issues += reference_file.issues
        references = {(r.instruction, r.input): r.output for r in reference_file.outputs}
        missing = [o for o in outputs.outputs if (o.instruction, o.input) not in references]
        if missing:
            err_console.print(
                f"[yellow]warning:[/] {len(missing)} output(s) have no reference answer in "
                f"{reference_outputs} (first: {missing[0].instruction[:80]!r})"
            )
    items = [
        SingleItem(
            instruction=o.instruction,
            input=o.input,
            output=o.output,
            generator=o.generator,
            reference=references.get((o.instruction, o.input)),
            item_id=str(index),
        )
        for index, o in enumerate(outputs.outputs)
    ]
    if not items:
        raise SimfarmError(f"{model_outputs}: no outputs to annotate")
    return items, issues


def print_feedback_summary(summary: FeedbackSummary, out: Path) -> None:
    table = Table(
        title=f"simfarm annotate: {summary.annotator} ({summary.kind})", show_header=False
    )
    mean = "-" if summary.mean_score is None else f"{summary.mean_score:.3f}"
    rows = [
        ("items", summary.n_items),
        ("annotated", summary.n_annotated),
        ("failed", summary.n_failed),
        ("failures by kind", json.dumps(summary.failures_by_kind) or "-"),
        ("mean score" if summary.kind != "critique" else "mean score / preference", mean),
        ("requests sent", summary.requests_sent),
        ("cache hits", summary.cache_hits),
        ("cost this run (USD)", f"{summary.cost_usd:.4f}"),
        ("cost of all annotations (USD)", f"{summary.cost_usd_total:.4f}"),
        ("time (s)", f"{summary.elapsed_s:.1f}"),
        ("written to", str(out)),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
