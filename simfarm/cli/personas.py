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
        typer.Argument(
            help="Persona/pool ids, scenario ids or YAML files (default: every persona, pool "
            "and scenario on the search path)."
        ),
    ] = None,
    annotators_dir: AnnotatorsDirs = None,
) -> None:
    """Load each persona, pool, scenario or rubric as a run would (fields, backend name and
    options, templates, pool members of one kind, a critique persona's rubric, a scenario's
    outcome function and instances); print every problem with its file, line and field.
    Exit 2 if any is invalid."""
    from simfarm.annotation import iter_annotator_files
    from simfarm.annotation.rubric import RUBRICS_FOLDER, iter_rubric_files, load_rubric
    from simfarm.annotation.scenario import iter_scenario_files

    targets = names or [
        *(str(p) for p in iter_annotator_files(annotators_dir)),
        *(str(p) for p in iter_scenario_files(annotators_dir)),
        *(str(p) for p in iter_rubric_files(annotators_dir)),
    ]
    invalid = 0
    for name in targets:
        try:
            if Path(name).parent.name == RUBRICS_FOLDER and Path(name).is_file():
                load_rubric(Path(name))
            else:
                _validate_one(name, annotators_dir)
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


def _validate_one(name: str, annotators_dir: list[Path] | None) -> None:
    """A scenario file (in a ``scenarios`` folder, or an id found only there) is loaded
    with its instances; anything else as a persona or pool, built into its judges."""
    from simfarm.annotation import judges_for, load_annotator
    from simfarm.annotation.loader import find_annotator_file
    from simfarm.annotation.scenario import find_scenario_file, load_scenario
    from simfarm.errors import ConfigError

    path = Path(name)
    is_file = path.suffix in (".yaml", ".yml") and path.is_file()
    is_scenario = is_file and path.resolve().parent.name == "scenarios"
    if not is_file:
        try:
            find_annotator_file(name, annotators_dir)
        except ConfigError:
            try:
                find_scenario_file(name, annotators_dir)
            except ConfigError:
                raise ConfigError(f"no persona, pool or scenario named {name!r}") from None
            is_scenario = True
    if is_scenario:
        load_scenario(name, annotators_dir).load_instances()
        return
    judges_for(load_annotator(name, annotators_dir))


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
