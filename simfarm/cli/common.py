"""What every ``simfarm`` command shares: consoles, common options, how errors are shown."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)

AnnotatorsDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--annotators-dir",
        help="Extra folder of persona/pool YAML files, searched before the bundled ones.",
    ),
]

BadRecordOption = Annotated[
    str | None,
    typer.Option(
        help="Bad input records: 'coerce' (repair what can be, skip the rest), 'skip' or "
        "'error'. Every bad record is reported with file, record index and field.",
    ),
]


TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds one request may take before it is retried (openai backends; default 60).",
        min=0.001,
    ),
]

RetryBudgetOption = Annotated[
    float | None,
    typer.Option(
        "--retry-budget",
        help="Seconds to keep retrying a rate-limited or failing request (openai backends; "
        "default 300).",
        min=0,
    ),
]

EXIT_ITEMS_FAILED = 3
"""Exit code of a run that finished but left items failed: distinct from a crash (1) and
from bad usage or input (2), so a script can tell "rerun to resume" from "fix something"."""


def fail(error: Exception) -> typer.Exit:
    """Print an error (unwrapped, markup-escaped: paths and ``simfarm[extra]`` stay
    intact, secrets and URL credentials redacted) and return the exit to raise: code 2, as
    for bad usage."""
    from simfarm.redaction import redact

    message = escape(redact(str(error)))
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def exit_if_failed(failures: list[Any], n_total: int, what: str = "pairs") -> None:
    """Exit with :data:`EXIT_ITEMS_FAILED` when any item failed, saying how many, of which
    kinds, and how to resume. ``failures`` are :class:`~simfarm.types.Failure` records."""
    if not failures:
        return
    from collections import Counter

    from simfarm.redaction import redact

    kinds = Counter(f.kind for f in failures)
    by_kind = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common())
    err_console.print(
        f"[bold red]{len(failures)} of {n_total} {what} failed[/] ({by_kind}); first: "
        f"{escape(redact(failures[0].message[:300]))}\n"
        "Every answer received is in the cache and will not be paid for again: run the same "
        "command again to retry only the failed ones (after fixing the cause, if the "
        "failures say it is the key, the model name or the server).",
        soft_wrap=True,
        highlight=False,
    )
    raise typer.Exit(code=EXIT_ITEMS_FAILED)


def print_issues(issues: list[Any], policy: Any, what: str) -> None:
    """Stop on bad records under the 'error' policy; otherwise list them on stderr."""
    from simfarm.record_checks import print_record_issues, raise_if_error

    raise_if_error(issues, policy, what)
    print_record_issues(issues, err_console)


def num(value: float | int | None, digits: int = 2) -> str:
    """A table cell: ``-`` for missing or NaN, ``digits`` decimals for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
