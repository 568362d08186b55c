"""What the command line alone can refuse is refused before any request is sent (issue 13):
an output name ``write_records`` cannot write, executor options that contradict each other."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.cli.executor_options import RayOptions
from simfarm.errors import ConfigError
from simfarm.testing.openai_server import start_server
from tests.server_personas import make_persona

runner = CliRunner()


def _annotate(shared_data: Path, tmp_path: Path, name: str, out: Path, *extra: str):
    outputs = shared_data / "alpaca_eval" / "model_outputs"
    args = ["annotate", "--persona", name, "--annotators-dir", str(tmp_path), "--quiet",
            "--model-outputs", str(outputs / "alpaca-7b.json"), "--reference-outputs",
            str(outputs / "gpt4_1106_preview.json"), "--limit", "5",
            "--cache-path", str(tmp_path / "cache.sqlite"), "--out", str(out), *extra]  # fmt: skip
    return runner.invoke(app, args)


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("ann.txt", (), "unsupported output format '.txt'"),
        ("ann.jsonl", ("--requests-per-minute", "10"), "need --executor ray"),
        ("ann.jsonl", ("--executor", "dask"), "--executor must be 'local' or 'ray'"),
    ],
)
def test_annotate_refuses_before_sending_any_request(
    shared_data: Path, tmp_path: Path, out: str, extra: tuple[str, ...], message: str
) -> None:
    with start_server() as server:
        name = make_persona(tmp_path, server)
        result = _annotate(shared_data, tmp_path, name, tmp_path / out, *extra)
        received = server.stats()["completed"]
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert received == 0
    assert not (tmp_path / out).exists()


def test_a_supported_output_runs(shared_data: Path, tmp_path: Path) -> None:
    # The same command with a writable name does send requests: the test above can fail.
    with start_server() as server:
        name = make_persona(tmp_path, server)
        result = _annotate(shared_data, tmp_path, name, tmp_path / "ann.JSONL")
        received = server.stats()["completed"]
    assert result.exit_code == 0, result.output
    assert received == 5
    assert (tmp_path / "ann.JSONL").is_file()


def test_ray_options_say_what_was_given() -> None:
    options = RayOptions("ray", actors=3, requests_per_minute=60)
    assert options.explicit() == {
        "actors": 3,
        "request_rate": {"max_requests": 60, "max_tokens": None},
    }
    assert RayOptions().explicit() == {}
    with pytest.raises(ConfigError, match="need --executor ray"):
        RayOptions("local", tokens_per_minute=1000)
