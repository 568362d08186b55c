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
