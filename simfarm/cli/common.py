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


def fail(error: Exception) -> typer.Exit:
    """Print an error (unwrapped, markup-escaped: paths and ``simfarm[extra]`` stay
    intact) and return the exit to raise: code 2, as for bad usage."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


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
