"""``simfarm personas``: list, show, validate and export the schema of personas and pools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from simfarm.cli.common import AnnotatorsDirs, console, err_console, fail
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
            how = getattr(spec, "rule", None) or (
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
    from simfarm.redaction import redact

    # A base_url may carry user:password@: shown redacted, like every message.
    console.print_json(redact(loaded.spec.model_dump_json()))


@app.command("validate")
def personas_validate(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Persona/pool ids or YAML files (default: all on the search path)."),
    ] = None,
    annotators_dir: AnnotatorsDirs = None,
) -> None:
    """Load each persona or pool as a run would (fields, backend name and options, template,
    pool members); print every problem with its file and field. Exit 2 if any is invalid."""
    from simfarm.annotation import iter_annotator_files, load_annotator

    targets = names or [str(p) for p in iter_annotator_files(annotators_dir)]
    invalid = 0
    for name in targets:
        try:
            load_annotator(name, annotators_dir)
        except SimfarmError as error:
            invalid += 1
            err_console.print(
                f"[red]invalid:[/] {escape(str(error))}", highlight=False, soft_wrap=True
            )
            continue
        console.print(f"ok: {name}", highlight=False)
    if invalid:
        err_console.print(f"{invalid} of {len(targets)} invalid")
        raise typer.Exit(2)


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
