"""On/off flags show no ``<bool>`` value placeholder in any command's help (issue 13)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simfarm.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command", [[], ["annotate"], ["evaluate"], ["validate"], ["quickstart"], ["cache", "clear"]]
)
def test_flags_show_no_value_placeholder(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output and "<bool>" not in result.output
    if command == ["annotate"]:
        assert "<str>" in result.output  # options that take a value keep their type


def test_a_typer_without_the_help_hook_still_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """typer 0.27 (seen on a GPU machine) has no ``TyperOption.display_type_rich``: the
    placeholder patch must step aside, not make ``import simfarm.cli`` fail."""
    import typer.core

    from simfarm.cli.app import _flags_without_value_placeholder

    without_hook = type("TyperOption", (), {})
    monkeypatch.setattr(typer.core, "TyperOption", without_hook)
    _flags_without_value_placeholder()  # raised AttributeError before the fix
    assert not hasattr(without_hook, "display_type_rich")
