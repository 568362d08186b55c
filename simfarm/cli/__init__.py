"""The ``simfarm`` command line (typer + rich); see :mod:`simfarm.cli.app` for the layout.

Nothing in the library imports this package.
"""

from simfarm.cli.app import app, main

__all__ = ["app", "main"]
