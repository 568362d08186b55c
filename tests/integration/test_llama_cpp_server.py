"""`simfarm annotate` through a real OpenAI-compatible server: the llama.cpp server from
PyPI (``llama-cpp-python[server]``) serving the embedded Gemma 3 270M GGUF on loopback.

Every other HTTP test talks to simfarm's own fake server; this one catches protocol drift in
a real one: chat completions, legacy completions with top logprobs, API-key auth and its
401. The model is a tiny base model, so its chat verdicts are often unreadable: what is
asserted is what simfarm guarantees (every pair ends annotated or failed by its true kind,
no protocol failure, logprob verdicts read from real top tokens), not the model's quality.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.cli.common import EXIT_ITEMS_FAILED
from simfarm.paths import bundled_data_dir

pytestmark = pytest.mark.slow

API_KEY = "llama-test-key-5150"
MODEL_ALIAS = "gemma-3-270m"
N_PAIRS = 6
runner = CliRunner()


def _require_llama_cpp() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as error:
        if os.environ.get("CI"):  # CI installs the `llamacpp` extra: missing is a failure
            raise AssertionError(f"llama_cpp must be installed in CI: {error}") from error
        pytest.skip(
            "llama_cpp is not importable: pip install 'simfarm[llamacpp]' (built from source; "
            "see .ci/run for the CMAKE_ARGS)"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 180
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llama.cpp server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"llama.cpp server did not start: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The llama.cpp server on 127.0.0.1 serving the embedded GGUF; yields its base URL."""
    _require_llama_cpp()
    from simfarm.backends.embedded import _assemble_gguf

    scratch = tmp_path_factory.mktemp("llama")
    gguf = _assemble_gguf(scratch)
    port = _free_port()
    log = scratch / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2", "--logits_all", "True",
        "--chat_format", "gemma", "--api_key", API_KEY, "--verbose", "False",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(process, port, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _persona(folder: Path, name: str, base: str, base_url: str, **fields: object) -> None:
    spec = yaml.safe_load((bundled_data_dir("annotators") / f"{base}.yaml").read_text())
    spec["backend"] = {
        "name": "openai",
        "model": MODEL_ALIAS,
        "options": {
            "base_url": base_url,
            "api_key_env": "SIMFARM_LLAMA_TEST_KEY",
            "max_concurrency": 2,
            "timeout_s": 120,
        },
    }
    spec.pop("measured_agreement", None)
    spec.update(fields)
    prompts = folder / "prompts"
    if not prompts.exists():
        prompts.mkdir()
        for template in (bundled_data_dir("annotators") / "prompts").iterdir():
            (prompts / template.name).write_text(template.read_text())
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def _pairs(path: Path) -> Path:
    with path.open("w") as out:
        for i in range(N_PAIRS):
            record = {
                "instruction": f"Name a colour of the sky ({i}).",
                "output_1": "Blue." if i % 2 else "The sky is usually blue on a clear day.",
                "output_2": "Bananas are yellow." if i % 2 else "Blue.",
            }
            out.write(json.dumps(record) + "\n")
    return path


def _annotate(folder: Path, persona: str, out: Path) -> tuple[int, str, list[dict]]:
    result = runner.invoke(
        app,
        [
            "annotate", "--persona", persona, "--annotators-dir", str(folder),
            "--pairs", str(_pairs(folder / "pairs.jsonl")), "--out", str(out), "--quiet",
            "--cache-path", str(folder / "cache.sqlite"),
        ],
    )  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result.exit_code, result.output, rows


def test_chat_and_logprob_personas_through_the_llama_cpp_server(
    llama_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMFARM_LLAMA_TEST_KEY", API_KEY)
    # A chat persona (AlpacaFarm prompt, "Output (a)/(b)") over /v1/chat/completions.
    _persona(tmp_path, "llama_chat", "alpaca_farm_greedy", llama_server)
    code, output, rows = _annotate(tmp_path, "llama_chat", tmp_path / "chat.jsonl")
    assert code in (0, EXIT_ITEMS_FAILED), output
    assert len(rows) == N_PAIRS
    # The server answered every request: failures can only be unreadable verdicts.
    assert {r["failure"]["kind"] for r in rows if r["failure"]} <= {"parse"}, output
    assert all(r["raw_completion"] for r in rows)
    # A logprob persona (base-model A/B prompt) over /v1/completions with top logprobs.
    _persona(
        tmp_path,
        "llama_logprob",
        "embedded_gemma",
        llama_server,
        both_orders=False,
        randomize_order=True,
    )
    code, output, rows = _annotate(tmp_path, "llama_logprob", tmp_path / "logprob.jsonl")
    assert code == 0, output
    assert len(rows) == N_PAIRS and not any(r["failure"] for r in rows)
    assert all(0.0 < r["preference_probability"] < 1.0 for r in rows)
    assert all(1.0 < r["preference"] < 2.0 for r in rows)


def test_a_wrong_key_is_refused_and_the_run_stops_early(
    llama_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-the-key-0000"
    monkeypatch.setenv("SIMFARM_LLAMA_TEST_KEY", wrong)
    _persona(tmp_path, "llama_chat", "alpaca_farm_greedy", llama_server)
    code, output, rows = _annotate(tmp_path, "llama_chat", tmp_path / "chat.jsonl")
    assert code == EXIT_ITEMS_FAILED, output
    assert len(rows) == N_PAIRS
    assert {r["failure"]["kind"] for r in rows} == {"client_error"}
    assert all("401" in r["failure"]["message"] for r in rows)
    assert wrong not in output and wrong not in (tmp_path / "chat.jsonl").read_text()
