"""What every ``simfarm`` command shares: consoles, common options, how errors are shown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def fail(error: Exception) -> typer.Exit:
    """Print an error (unwrapped, markup-escaped: paths and ``simfarm[extra]`` stay
    intact) and return the exit to raise: code 2, as for bad usage."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)
