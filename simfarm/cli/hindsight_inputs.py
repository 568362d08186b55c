"""Inputs and summary of hindsight (RLHS) personas, shared by ``simfarm hindsight report``
and ``simfarm annotate``: both judge the same pairs of a scenario's candidate responses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from simfarm.cli.common import console, err_console

if TYPE_CHECKING:
    from simfarm.annotation import JudgePool
    from simfarm.annotation.hindsight import HindsightJudge, HindsightSummary
    from simfarm.annotation.loader import LoadedPersona, LoadedPool
    from simfarm.annotation.scenario import HindsightItem
    from simfarm.record_checks import BadRecordPolicy, RecordIssue


def is_hindsight(loaded: LoadedPersona | LoadedPool) -> bool:
    """Whether the persona (or any pool member) gives hindsight feedback."""
    from simfarm.annotation.loader import LoadedPool

    if isinstance(loaded, LoadedPool):
        return any(member.spec.kind == "hindsight" for member, _ in loaded.members)
    return loaded.spec.kind == "hindsight"


def hindsight_pairs(
    loaded: LoadedPersona | LoadedPool,
    annotator: str,
    instances: Path | None = None,
    policy: BadRecordPolicy = "error",
) -> tuple[
    HindsightJudge | JudgePool[Any, Any, Any, Any],
    HindsightJudge,
    list[HindsightItem],
    list[RecordIssue],
]:
    """The judge (a pool's, or the persona's), its first hindsight member, every pair of
    responses of every instance of the scenario (``instances``, or the scenario's own
    file) that ``policy`` keeps, and the issues of the bad instances, as for pairs: under
    ``error`` any bad instance stops here, naming file, line, record and field; under
    ``skip``/``coerce`` the caller lists the issues, and a file with no good instance at all
    is refused (its issues listed first), so nothing is sent. Refuses a persona that is not
    a hindsight one and a pool whose members apply different scenarios."""
    from simfarm.annotation import JudgePool, judges_for
    from simfarm.annotation.hindsight import HindsightJudge
    from simfarm.annotation.scenario import pairs_of
    from simfarm.errors import ConfigError
    from simfarm.record_checks import print_record_issues, raise_if_error

    judge = judges_for(loaded)
    members = list(judge.judges) if isinstance(judge, JudgePool) else [judge]
    hindsight_judges = [m for m in members if isinstance(m, HindsightJudge)]
    if len(hindsight_judges) != len(members):
        raise ConfigError(f"{annotator}: not a hindsight persona (kind: hindsight)")
    if len({m.scenario.path.resolve() for m in hindsight_judges}) > 1:
        raise ConfigError(f"{annotator}: pool members use different scenarios")
    first = hindsight_judges[0]
    loaded_instances = first.scenario.read_instances(instances, policy)
    raise_if_error(loaded_instances.issues, policy, "the input")
    if not loaded_instances.instances:  # every instance bad: say which and why, then stop
        print_record_issues(loaded_instances.issues, err_console)
        raise ConfigError(f"{loaded_instances.source}: no instances to judge")
    items = pairs_of(first.scenario.spec.id, loaded_instances.instances)
    return judge, first, items, loaded_instances.issues  # type: ignore[return-value]


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_hindsight_summary(summary: HindsightSummary, scenario: str, out: Path) -> None:
    """The ``simfarm annotate`` table for a hindsight run (the rows of the other kinds, with
    foresight and hindsight agreement with the true utility in place of wins)."""
    table = Table(title=f"simfarm annotate: {summary.annotator} (hindsight)", show_header=False)
    rows = [
        ("scenario", scenario),
        ("pairs", summary.n_items),
        ("annotated", summary.n_annotated),
        ("failed", summary.n_failed),
        (
            "failures by kind",
            ", ".join(f"{k}: {n}" for k, n in summary.failures_by_kind.items()) or "-",
        ),
        ("decisive pairs", summary.n_decisive),
        ("foresight agreement (true utility)", pct(summary.foresight_agreement)),
        ("hindsight agreement (true utility)", pct(summary.hindsight_agreement)),
        ("foresight / hindsight ties", f"{summary.foresight_ties} / {summary.hindsight_ties}"),
        ("requests sent", summary.requests_sent),
        ("cache hits", summary.cache_hits),
        ("cost this run (USD)", f"{summary.cost_usd:.4f}"),
        ("time (s)", f"{summary.elapsed_s:.1f}"),
        ("written to", str(out)),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
