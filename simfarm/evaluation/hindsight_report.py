"""The hindsight report: how often foresight and hindsight feedback pick the truly better
response, overall and per pair of response types, as JSON and markdown."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from simfarm.annotation.hindsight import HindsightAnnotation, HindsightSummary, agreement


class PairTypeRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    responses: str
    """``<response_1 id> vs <response_2 id>``."""
    n_decisive: int
    foresight_agreement: float | None
    hindsight_agreement: float | None


class HindsightReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str
    annotator: str
    n_pairs: int
    n_annotated: int
    n_failed: int
    failures_by_kind: dict[str, int]
    n_decisive: int
    """Annotated pairs whose true utilities differ (the denominator of the agreements)."""
    foresight_agreement: float | None
    """Fraction of decisive pairs where foresight feedback picks the truly better response."""
    hindsight_agreement: float | None
    """The same for hindsight feedback (after the simulated outcome)."""
    foresight_ties: int
    hindsight_ties: int
    by_response_pair: list[PairTypeRow]
    requests_sent: int
    cache_hits: int
    cost_usd: float


def build_report(
    scenario: str, records: Sequence[HindsightAnnotation], summary: HindsightSummary
) -> HindsightReport:
    groups: dict[str, list[HindsightAnnotation]] = defaultdict(list)
    for record in records:
        groups[f"{record.response_1} vs {record.response_2}"].append(record)
    rows = []
    for name in sorted(groups):
        n, foresight = agreement(groups[name], "foresight_preference")
        _, hindsight = agreement(groups[name], "hindsight_preference")
        rows.append(
            PairTypeRow(
                responses=name,
                n_decisive=n,
                foresight_agreement=foresight,
                hindsight_agreement=hindsight,
            )
        )
    return HindsightReport(
        scenario=scenario,
        annotator=summary.annotator,
        n_pairs=summary.n_items,
        n_annotated=summary.n_annotated,
        n_failed=summary.n_failed,
        failures_by_kind=summary.failures_by_kind,
        n_decisive=summary.n_decisive,
        foresight_agreement=summary.foresight_agreement,
        hindsight_agreement=summary.hindsight_agreement,
        foresight_ties=summary.foresight_ties,
        hindsight_ties=summary.hindsight_ties,
        by_response_pair=rows,
        requests_sent=summary.requests_sent,
        cache_hits=summary.cache_hits,
        cost_usd=summary.cost_usd,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def report_markdown(report: HindsightReport) -> str:
    lines = [
        f"# Hindsight report: `{report.annotator}` on scenario `{report.scenario}`",
        "",
        "How often each kind of feedback picks the response with the higher true utility, on "
        "pairs whose utilities differ (a tie counts as a miss).",
        "",
        "| feedback | agreement with the true utility | ties |",
        "|---|---|---|",
        f"| foresight (before the outcome) | {_pct(report.foresight_agreement)} | "
        f"{report.foresight_ties} |",
        f"| hindsight (after the simulated outcome) | {_pct(report.hindsight_agreement)} | "
        f"{report.hindsight_ties} |",
        "",
        f"Pairs: {report.n_pairs}; annotated: {report.n_annotated}; decisive: "
        f"{report.n_decisive}; failed: {report.n_failed}"
        + (f" ({json.dumps(report.failures_by_kind)})" if report.failures_by_kind else "")
        + f". Requests sent in this run: {report.requests_sent}; cache hits: "
        f"{report.cache_hits}; cost: ${report.cost_usd:.4f}.",
        "",
        "| responses | decisive pairs | foresight | hindsight |",
        "|---|---|---|---|",
    ]
    for row in report.by_response_pair:
        lines.append(
            f"| {row.responses} | {row.n_decisive} | {_pct(row.foresight_agreement)} | "
            f"{_pct(row.hindsight_agreement)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: HindsightReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
