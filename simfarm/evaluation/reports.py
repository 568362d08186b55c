"""Markdown renderings of validation and correlation results (the JSON is the record itself)."""

from __future__ import annotations

import math

from simfarm.evaluation.correlation import CorrelationResult
from simfarm.evaluation.validation import AgreementMetrics, ValidationReport

_METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("accuracy_with_ties", "Accuracy vs human majority, ties included (%)", "pct"),
    ("accuracy_without_ties", "Accuracy vs human majority, ties excluded (%)", "pct"),
    ("human_loo_ceiling", "Human leave-one-out agreement, ceiling (%)", "pct"),
    ("cohen_kappa", "Cohen's kappa", "num"),
    ("position_consistency", "Position consistency, both orders (%)", "pct"),
    ("p_prefer_longer", "P(prefer longer), lengths differ > 30 chars (%)", "pct"),
    ("bias", "Bias (%)", "pct"),
    ("variance", "Variance (%)", "pct"),
    ("annotator_tie_rate", "Annotator ties (%)", "pct"),
    ("human_tie_rate", "Human ties (%)", "pct"),
    ("price_per_1000", "$ / 1000 annotations", "num"),
    ("time_per_1000", "s / 1000 annotations", "num"),
    ("n_items", "Pairs", "int"),
    ("n_without_ties", "Pairs with a decisive human majority", "int"),
    ("n_failed", "Failed annotations", "int"),
)


def _cell(value: float | int | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "pct":
        return f"{value:.1f}"
    if kind == "num":
        return f"{value:.3f}"
    return str(value)


def metrics_table(columns: dict[str, AgreementMetrics]) -> list[str]:
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for field, label, kind in _METRIC_ROWS:
        cells = [_cell(getattr(columns[n], field), kind) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def validation_markdown(report: ValidationReport) -> str:
    lines = [
        f"# Validation of `{report.annotator}` on `{report.set}`",
        "",
        report.description.strip(),
        "",
        f"- sources: {', '.join(f'`{s}`' for s in report.sources)}",
    ]
    # A rating annotator's report (Likert set) has no pairs: no pairwise table of blanks.
    pairwise = report.rating is None or report.overall.n_items > 0
    if pairwise:
        lines += [
            f"- both orders: {report.both_orders}; samples per pair: {report.n_samples}",
            "",
            "## Overall",
            "",
            *metrics_table({"overall": report.overall}),
        ]
    if len(report.groups) > 1:
        lines += ["", "## By group", "", *metrics_table(report.groups)]
    if len(report.subsets) > 1:
        lines += ["", "## By subset", "", *metrics_table(report.subsets)]
    if report.systems is not None:
        s = report.systems
        lines += [
            "",
            "## Systems (win rate against the other systems, ties = 1/2)",
            "",
            "| system | humans | annotator |",
            "|---|---|---|",
            *(
                f"| {name} | {s.human_win_rate[name]:.1f} | {s.annotator_win_rate[name]:.1f} |"
                for name in sorted(s.human_win_rate, key=lambda n: -s.human_win_rate[n])
            ),
            "",
            f"Spearman {_cell(s.spearman, 'num')}, Kendall {_cell(s.kendall, 'num')}.",
        ]
    if report.rating is not None:
        lines += [
            "",
            f"## Correlation with human Likert scores ({report.rating.scores_from})",
            "",
            "| aspect | n | Spearman | Kendall | Spearman within context (mean) |",
            "|---|---|---|---|---|",
            *(
                f"| {a.aspect} | {a.n} | {_cell(a.spearman, 'num')} | {_cell(a.kendall, 'num')}"
                f" | {_cell(a.spearman_within_context, 'num')} |"
                for a in report.rating.aspects
            ),
        ]
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in report.notes)]
    if report.issues:
        lines += [
            "",
            f"## Bad input records ({len(report.issues)})",
            "",
            *(f"- {issue.describe()}" for issue in report.issues),
        ]
    return "\n".join(lines) + "\n"


def correlation_markdown(result: CorrelationResult) -> str:
    pct = round(result.confidence * 100)
    lines = [
        f"# Ranking fidelity: `{result.simulated_label}` vs `{result.human_label}`",
        "",
        f"{len(result.systems)} systems in both.",
        "",
        f"| statistic | value | {pct}% bootstrap CI |",
        "|---|---|---|",
        f"| Spearman | {result.spearman:.3f} | "
        f"[{result.spearman_ci[0]:.3f}, {result.spearman_ci[1]:.3f}] |",
        f"| Kendall | {result.kendall:.3f} | "
        f"[{result.kendall_ci[0]:.3f}, {result.kendall_ci[1]:.3f}] |",
        f"| Pearson | {result.pearson:.3f} | |",
        "",
        f"Bootstrap: {result.n_bootstrap} resamples of the systems (seed {result.seed}).",
    ]
    if result.unmatched_simulated:
        lines += [
            "",
            f"No human score (left out): {', '.join(result.unmatched_simulated)}.",
        ]
    return "\n".join(lines) + "\n"
