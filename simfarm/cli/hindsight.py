"""``simfarm hindsight report``: foresight vs hindsight feedback against the true utility."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from simfarm.cli.common import (
    AnnotatorsDirs,
    RetryBudgetOption,
    TimeoutOption,
    console,
    err_console,
    exit_if_failed,
    fail,
    interrupted,
)
from simfarm.cli.hindsight_inputs import pct
from simfarm.cli.overrides import BaseUrlOverride, ModelOverride
from simfarm.errors import SimfarmError

app = typer.Typer(help="Hindsight simulation (RLHS): foresight vs hindsight feedback.")


@app.command("report")
def report(
    annotator: Annotated[str, typer.Option(help="A hindsight persona or pool (id or YAML).")],
    out: Annotated[Path, typer.Option(help="Folder for annotations.jsonl, report.json/.md.")],
    scenario: Annotated[
        str | None, typer.Option(help="Scenario id or file (default: the persona's).")
    ] = None,
    instances: Annotated[
        Path | None, typer.Option(help="Instances JSONL (default: the scenario's own).")
    ] = None,
    annotators_dir: AnnotatorsDirs = None,
    model: ModelOverride = None,
    base_url: BaseUrlOverride = None,
    timeout: TimeoutOption = None,
    retry_budget: RetryBudgetOption = None,
    limit: Annotated[int | None, typer.Option(help="Judge only the first N pairs.")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the cache.")
    ] = False,
    cache_path: Annotated[Path | None, typer.Option(help="SQLite cache file to use.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Judge every pair of responses of every scenario instance in foresight and in
    hindsight; report how often each picks the response with the higher true utility."""
    from simfarm.annotation import BackendOverrides, annotate, load_annotator
    from simfarm.cli.hindsight_inputs import hindsight_pairs
    from simfarm.cli.progress import annotation_progress
    from simfarm.datafiles import write_records
    from simfarm.evaluation.hindsight_report import build_report, write_report

    try:
        loaded = load_annotator(annotator, annotators_dir)
        if scenario is not None:
            loaded = _with_scenario(loaded, scenario)
        judge, first, items, _ = hindsight_pairs(loaded, annotator, instances)
        if limit is not None:
            items = items[:limit]
        options: dict[str, Any] = {}
        if base_url:
            options["base_url"] = base_url
        if timeout is not None:
            options["timeout_s"] = timeout
        if retry_budget is not None:
            options["retry_budget_s"] = retry_budget
        with annotation_progress(
            len(items), loaded.spec.id, err_console if not quiet else Console(quiet=True)
        ) as progress:
            result = annotate(
                items,
                judge,
                use_cache=not no_cache,
                cache_path=cache_path,
                backend_overrides=BackendOverrides(model=model, options=options),
                progress=progress,
            )
        out.mkdir(parents=True, exist_ok=True)
        write_records(out / "annotations.jsonl", result.annotations)
        built = build_report(first.scenario.spec.id, result.annotations, result.summary)
        write_report(built, out)
    except KeyboardInterrupt:
        raise interrupted() from None
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    console.print(
        f"{built.annotator} on {built.scenario}: {built.n_decisive} decisive pairs; agreement "
        f"with the true utility: foresight {pct(built.foresight_agreement)}, hindsight "
        f"{pct(built.hindsight_agreement)}; requests sent {built.requests_sent}, cache hits "
        f"{built.cache_hits}; written to {out}",
        highlight=False,
    )
    exit_if_failed([a.failure for a in result.annotations if a.failure], len(items))


def _with_scenario(loaded: Any, scenario: str) -> Any:
    """The persona (or every pool member) applying another scenario."""
    from simfarm.annotation import LoadedPersona, LoadedPool

    def switch(persona: LoadedPersona) -> LoadedPersona:
        if persona.spec.kind != "hindsight":
            return persona
        spec = persona.spec.model_copy(update={"scenario": scenario})
        return LoadedPersona(spec=spec, template=persona.template, path=persona.path)

    if isinstance(loaded, LoadedPersona):
        return switch(loaded)
    return LoadedPool(
        spec=loaded.spec, members=[(switch(p), w) for p, w in loaded.members], path=loaded.path
    )
