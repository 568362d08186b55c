"""``simfarm annotate``: judge pairs with a persona or pool, write one record per pair."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from simfarm.cli.common import (
    AnnotatorsDirs,
    RetryBudgetOption,
    TimeoutOption,
    console,
    err_console,
    exit_if_failed,
    fail,
)
from simfarm.cli.executor_options import (
    ExecutorOption,
    RayActorsOption,
    RayAddressOption,
    RayInFlightOption,
    RayNumCpusOption,
    RayNumGpusOption,
    RayOptions,
    RequestsPerMinuteOption,
    TokensPerMinuteOption,
    executor_factory_for,
)
from simfarm.cli.overrides import BaseUrlOverride, ModelOverride
from simfarm.errors import SimfarmError

if TYPE_CHECKING:
    from simfarm.annotation import AnnotationSummary
    from simfarm.execution.ray_executor import RayStats


def annotate(
    persona: Annotated[str, typer.Option(help="Persona or pool id (or a path to its YAML).")],
    out: Annotated[Path, typer.Option(help="Output file: .jsonl, .json or .parquet.")],
    model_outputs: Annotated[
        str | None,
        typer.Option(
            help="Outputs of the model under test: alpaca_eval JSON, JSONL, Parquet, CSV, a "
            "`datasets` folder, or hf:<repo>[:<config>][@<split>]."
        ),
    ] = None,
    reference_outputs: Annotated[
        str | None, typer.Option(help="Reference outputs (same formats), paired by instruction.")
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            help="A pairs file (instruction, output_1, output_2, ...). For a hindsight persona: "
            "scenario instances (JSONL; default: the scenario's own), judged pair by pair."
        ),
    ] = None,
    annotators_dir: AnnotatorsDirs = None,
    model: ModelOverride = None,
    base_url: BaseUrlOverride = None,
    max_requests: Annotated[
        int | None, typer.Option(help="Request budget for this run (openai backend).")
    ] = None,
    timeout: TimeoutOption = None,
    retry_budget: RetryBudgetOption = None,
    limit: Annotated[int | None, typer.Option(help="Annotate only the first N pairs.")] = None,
    both_orders: Annotated[
        bool,
        typer.Option(
            "--both-orders",
            help="Judge every pair in both orders (mean preference; position_consistent set).",
        ),
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the cache.")
    ] = False,
    cache_path: Annotated[Path | None, typer.Option(help="SQLite cache file to use.")] = None,
    on_bad_record: Annotated[
        str,
        typer.Option(
            help="Bad input records: 'coerce' (repair what can be, skip the rest), 'skip' or "
            "'error'. Every bad record is reported with file, record index and field."
        ),
    ] = "coerce",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    ray_actors: RayActorsOption = None,
    ray_in_flight: RayInFlightOption = None,
    ray_num_cpus: RayNumCpusOption = None,
    ray_num_gpus: RayNumGpusOption = None,
    requests_per_minute: RequestsPerMinuteOption = None,
    tokens_per_minute: TokensPerMinuteOption = None,
) -> None:
    """Annotate with a simulated annotator; writes one JSON object per item.

    Pairwise personas and relative critiques judge pairs (--pairs, or --model-outputs with
    --reference-outputs); rating personas and absolute critiques judge each output of
    --model-outputs on its own (--reference-outputs then gives their reference answers);
    hindsight personas judge every pair of candidate responses of every scenario instance
    (--pairs, or the scenario's own instances) in foresight and in hindsight."""
    from simfarm.annotation import (
        AnnotationSummary,
        BackendOverrides,
        load_annotator,
        with_both_orders,
    )
    from simfarm.annotation import annotate as run_annotation
    from simfarm.cli.feedback_inputs import (
        judges_single_outputs,
        print_feedback_summary,
        single_items,
    )
    from simfarm.cli.hindsight_inputs import (
        hindsight_pairs,
        is_hindsight,
        print_hindsight_summary,
    )
    from simfarm.cli.progress import annotation_progress
    from simfarm.datafiles import (
        check_output_format,
        check_pairing,
        load_model_outputs,
        load_pairs,
        pair_outputs,
        write_records,
    )
    from simfarm.record_checks import (
        RecordIssue,
        check_policy,
        print_record_issues,
        raise_if_error,
    )

    try:
        # Everything the command line alone can refuse is refused before any input is read
        # or any request is sent.
        check_output_format(out)
        executor_options = RayOptions(
            executor,
            address=ray_address,
            actors=ray_actors,
            in_flight=ray_in_flight,
            num_cpus=ray_num_cpus,
            num_gpus=ray_num_gpus,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
        policy = check_policy(on_bad_record)
        issues: list[RecordIssue] = []
        loaded = load_annotator(persona, annotators_dir)
        scenario: str | None = None  # hindsight personas: the scenario judged
        annotator: Any = loaded
        items: list[Any]
        if is_hindsight(loaded):
            if model_outputs or reference_outputs or both_orders:
                raise SimfarmError(
                    f"{loaded.spec.id} judges pairs of a scenario's candidate responses (in a "
                    "seeded random order): give --pairs with scenario instances (JSONL), or "
                    "nothing for the scenario's own; not --model-outputs, --reference-outputs "
                    "or --both-orders"
                )
            annotator, first, items, issues = hindsight_pairs(
                loaded, persona, Path(pairs) if pairs is not None else None, policy
            )
            scenario = first.scenario.spec.id
        elif judges_single_outputs(loaded):
            if pairs is not None or model_outputs is None:
                raise SimfarmError(
                    f"{loaded.spec.id} judges one output at a time: give --model-outputs "
                    "(and optionally --reference-outputs, as reference answers)"
                )
            items, issues = single_items(model_outputs, reference_outputs, policy)
        elif pairs is not None:
            if model_outputs or reference_outputs:
                raise SimfarmError("give either --pairs or --model-outputs/--reference-outputs")
            loaded_pairs = load_pairs(pairs, policy, warn=False)
            items, issues = loaded_pairs.pairs, loaded_pairs.issues
            if not items:  # every record bad: say which and why before giving up
                raise_if_error(issues, policy, "the input")
                print_record_issues(issues, err_console)
                raise SimfarmError(f"{pairs}: no pairs to annotate")
        elif model_outputs is not None and reference_outputs is not None:
            model_file = load_model_outputs(model_outputs, policy, warn=False)
            reference_file = load_model_outputs(reference_outputs, policy, warn=False)
            issues = [*model_file.issues, *reference_file.issues]
            items, unpaired = pair_outputs(model_file.outputs, reference_file.outputs)
            check_pairing(
                items,
                model_outputs,
                len(model_file.outputs),
                reference_outputs,
                len(reference_file.outputs),
            )
            if unpaired:
                err_console.print(
                    f"[yellow]warning:[/] {len(unpaired)} instruction(s) of {model_outputs} have "
                    f"no reference output and are not annotated (first: {unpaired[0][:80]!r})"
                )
        else:
            raise SimfarmError("give --pairs, or both --model-outputs and --reference-outputs")
        raise_if_error(issues, policy, "the input")
        print_record_issues(issues, err_console)
        if limit is not None:
            items = items[:limit]
        if both_orders:
            annotator = with_both_orders(loaded)
        options: dict[str, Any] = {}
        if base_url:
            options["base_url"] = base_url
        if max_requests is not None:
            options["request_budget"] = max_requests
        if timeout is not None:
            options["timeout_s"] = timeout
        if retry_budget is not None:
            options["retry_budget_s"] = retry_budget
        overrides = BackendOverrides(model=model, options=options)
        with (
            executor_factory_for(executor_options) as (factory, runtime),
            annotation_progress(
                len(items), loaded.spec.id, err_console if not quiet else Console(quiet=True)
            ) as progress,
        ):
            result = run_annotation(
                cast("list[Any]", items),
                annotator,
                use_cache=not no_cache,
                cache_path=cache_path,
                backend_overrides=overrides,
                progress=progress,
                executor_factory=factory,
            )
            ray_stats = runtime.stats() if runtime is not None else None
        write_records(out, result.annotations)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: every answer received so far is in the cache; "
            "run the same command again to resume."
        )
        raise typer.Exit(code=130) from None
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    if scenario is not None:
        print_hindsight_summary(result.summary, scenario, out)
    elif not isinstance(result.summary, AnnotationSummary):
        print_feedback_summary(result.summary, out)
    else:
        _print_summary(result.summary, out, ray_stats)
    what = "pairs" if scenario or isinstance(result.summary, AnnotationSummary) else "items"
    failures = [a.failure for a in result.annotations if a.failure]
    exit_if_failed(failures, len(result.annotations), what)


def _print_summary(
    summary: AnnotationSummary, out: Path, ray_stats: RayStats | None = None
) -> None:
    table = Table(title=f"simfarm annotate: {summary.annotator}", show_header=False)
    rows = [
        ("pairs", summary.n_items),
        ("annotated", summary.n_annotated),
        ("failed", summary.n_failed),
        (
            "failures by kind",
            json.dumps(summary.failures_by_kind) if summary.failures_by_kind else "-",
        ),
        ("output_1 (reference) wins", summary.n_output_1_wins),
        ("output_2 (model) wins", summary.n_output_2_wins),
        ("ties", summary.n_ties),
        ("requests sent", summary.requests_sent),
        ("cache hits", summary.cache_hits),
        ("cost this run (USD)", f"{summary.cost_usd:.4f}"),
        ("cost of all annotations (USD)", f"{summary.cost_usd_total:.4f}"),
        ("time (s)", f"{summary.elapsed_s:.1f}"),
        ("written to", str(out)),
    ]
    if ray_stats is not None:
        rows[-1:-1] = [
            ("ray actors", ray_stats.actors),
            ("ray actor restarts", ray_stats.actor_restarts),
            ("ray actors replaced", ray_stats.actor_replacements),
            ("ray retries (actor died)", ray_stats.retries),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
