"""``simfarm personas``: list, show and export the schema of personas and pools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from simfarm.cli.common import AnnotatorsDirs, console, fail
from simfarm.errors import SimfarmError

app = typer.Typer(help="List, show and validate annotator personas and pools.")


@app.command("list")
def personas_list(annotators_dir: AnnotatorsDirs = None) -> None:
    """Every persona and pool on the search path."""
    from simfarm.annotation import iter_annotator_files, read_spec

    table = Table("id", "kind", "backend / rule", "description")
    for path in iter_annotator_files(annotators_dir):
        try:
            spec = read_spec(path)
        except SimfarmError as error:
            table.add_row(path.stem, "[red]invalid[/]", "", escape(str(error).splitlines()[0]))
            continue
        if spec.kind == "pool":
            how = ", ".join(m.persona for m in spec.members)
        else:
            backend = spec.backend
            how = spec.rule or (
                ":".join(p for p in (backend.name, backend.model) if p) if backend else ""
            )
        table.add_row(spec.id, spec.kind, how, escape(spec.description))
    console.print(table)


@app.command("show")
def personas_show(name: str, annotators_dir: AnnotatorsDirs = None) -> None:
    """A persona or pool, validated, as JSON (defaults filled in)."""
    from simfarm.annotation import load_annotator

    try:
        loaded = load_annotator(name, annotators_dir)
    except SimfarmError as error:
        raise fail(error) from None
    console.print_json(loaded.spec.model_dump_json())


@app.command("schema")
def personas_schema(
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
) -> None:
    """The JSON schema of persona and pool files (for editors)."""
    from simfarm.annotation import annotator_json_schema

    text = json.dumps(annotator_json_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
