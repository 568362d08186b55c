"""``simfarm pairs-from-ratings``: preference pairs (for reward models and DPO) from ratings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simfarm.cli.common import console, fail
from simfarm.errors import SimfarmError


def pairs_from_ratings(
    ratings: Annotated[Path, typer.Argument(help="Rating records (from `simfarm annotate`).")],
    out: Annotated[Path, typer.Option(help="Pairs file to write: .jsonl, .json or .parquet.")],
    strategy: Annotated[
        str, typer.Option(help="best-vs-random (UltraFeedback), best-vs-worst or all-pairs.")
    ] = "best-vs-random",
    score: Annotated[
        str, typer.Option(help="overall, mean (of the aspects) or an aspect name.")
    ] = "overall",
    margin: Annotated[
        float, typer.Option(help="Score differences below this are ties (0: only equal).")
    ] = 0.0,
    ties: Annotated[str, typer.Option(help="drop, or keep (as preference 1.5).")] = "drop",
    seed: Annotated[int, typer.Option(help="Salt of the best-vs-random draw.")] = 0,
) -> None:
    """Turn ratings of several outputs per instruction into pairwise preference records,
    the format `simfarm train` recipes (reward model, DPO) read."""
    from pydantic import ValidationError

    from simfarm.annotation.feedback_records import RatingRecord
    from simfarm.annotation.rating_pairs import PairingOptions
    from simfarm.annotation.rating_pairs import pairs_from_ratings as convert
    from simfarm.datafiles import read_records, write_records

    try:
        try:
            options = PairingOptions.model_validate(
                {"strategy": strategy, "score": score, "margin": margin, "ties": ties, "seed": seed}
            )
        except ValidationError as error:
            problems = "; ".join(
                f"--{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise SimfarmError(problems) from None
        records = []
        for index, raw in enumerate(read_records(ratings)):
            try:
                records.append(RatingRecord.model_validate(raw))
            except ValidationError as error:
                first = error.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "<record>"
                raise SimfarmError(
                    f"{ratings}: record {index}: {field}: {first['msg']} (not a rating record?)"
                ) from None
        pairs, report = convert(records, options)
        write_records(out, pairs)
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    table = Table(
        title=f"pairs from ratings ({options.strategy}, {options.score})", show_header=False
    )
    for name, value in report.model_dump().items():
        table.add_row(name.removeprefix("n_").replace("_", " "), str(value))
    table.add_row("written to", str(out))
    console.print(table)
