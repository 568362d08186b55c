"""The ``simfarm`` command line: one typer app, one module per command.

How a command is added: write ``simfarm/cli/<name>.py`` holding the command function (typer
options as ``Annotated`` parameters; shared options, consoles and :func:`fail` come from
:mod:`simfarm.cli.common`; import heavy libraries inside the function, so ``simfarm --help``
stays fast), then register it below with one line, ``app.command("<name>")(<name>.<function>)``;
a command group (``simfarm <group> <command>``) is a ``typer.Typer`` in its module, mounted
with ``app.add_typer(<module>.app, name="<group>")``. Commands are listed in ``--help`` in the
order they are registered here. The library never imports this package: progress and
printing stay here, and reach the library as callbacks.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from simfarm.cli import (
    annotate,
    cache,
    correlate,
    evaluate,
    hindsight,
    pairs_from_ratings,
    personas,
    quickstart,
    run,
    train,
    validate,
)


def _flags_without_value_placeholder() -> None:
    """typer (0.29) prints a ``<bool>`` value placeholder beside on/off flags (``--quiet``,
    ``--help``), and a user who then types ``--quiet true`` is refused. A flag takes no
    value: show none. Every command gets this, whichever module defines it. A typer without
    that hook (other versions render help differently) is left as it is: the help text is
    cosmetic, the CLI must start."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_simfarm_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        return original(self, ctx)

    display_type_rich._simfarm_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_value_placeholder()

app = typer.Typer(
    name="simfarm",
    help="Simulated annotators and feedback-learning experiments, cheaply, in simulation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from simfarm import __version__

        print(f"simfarm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print simfarm's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Simulated annotators and feedback-learning experiments, cheaply, in simulation."""


# --- the commands, in --help order ---------------------------------------------------------
app.command("annotate")(annotate.annotate)
app.command("pairs-from-ratings")(pairs_from_ratings.pairs_from_ratings)
app.command("evaluate")(evaluate.evaluate)
app.command("validate")(validate.validate)
app.command("correlate")(correlate.correlate)
app.command("quickstart")(quickstart.quickstart)
app.command("train")(train.train)
app.command("run")(run.run)
app.add_typer(personas.app, name="personas")
app.add_typer(hindsight.app, name="hindsight")
app.add_typer(cache.app, name="cache")


def main() -> None:
    """The ``simfarm`` console script."""
    app()
