"""What the cache key knows of a local backend: every option that can change an answer, and
a local folder's content (not its location). No model is loaded: identity never needs one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from simfarm.backends import BackendSpec, create_backend, model_digest
from simfarm.backends.embedded import FORMAT_VERSION, MODEL_NAME, EmbeddedBackend, expected_sha256
from simfarm.backends.model_digest import folder_digest
from simfarm.backends.transformers_local import (
    LocalModelOptions,
    TransformersBackend,
    TransformersOptions,
)
from simfarm.backends.vllm_engine import VLLMBackend, VLLMOptions

pytest.importorskip("torch")  # resolving dtype "auto" asks torch about the device


def transformers_identity(model: str = "org/model", **options: Any) -> dict[str, Any]:
    spec = BackendSpec(name="transformers", model=model, options={"dtype": "float32", **options})
    return create_backend(spec).identity()


def vllm_identity(model: str = "org/model", **options: Any) -> dict[str, Any]:
    # Built directly: from_spec refuses without vLLM installed, identity needs no engine.
    return VLLMBackend(model, VLLMOptions.model_validate(options)).identity()


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 32}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / ".cache").mkdir()  # hub download metadata: not content
    (folder / ".cache" / "download.lock").write_text("x")
    return folder


def test_golden_transformers_identity() -> None:
    # Pinned: an accidental change here re-keys (orphans) every user's cached answers.
    assert transformers_identity(revision="abc123") == {
        "backend": "transformers",
        "model": "org/model",
        "options": {"dtype": "float32", "trust_remote_code": False, "revision": "abc123"},
    }


def test_golden_vllm_identity() -> None:
    assert vllm_identity(seed=3, max_model_len=2048) == {
        "backend": "vllm",
        "model": "org/model",
        "options": {
            "dtype": "auto",
            "max_model_len": 2048,
            "trust_remote_code": False,
            "revision": None,
            "seed": 3,
            "engine_kwargs": {},
        },
    }


def test_every_option_is_identity_or_declared_operational() -> None:
    cases = [
        (transformers_identity(), TransformersOptions, TransformersBackend.OPERATIONAL_FIELDS),
        (vllm_identity(), VLLMOptions, VLLMBackend.OPERATIONAL_FIELDS),
        (
            EmbeddedBackend(LocalModelOptions(dtype="float32")).identity(),
            LocalModelOptions,
            EmbeddedBackend.OPERATIONAL_FIELDS,
        ),
    ]
    for identity, options_model, operational in cases:
        assert operational <= set(options_model.model_fields)
        assert set(identity["options"]) == set(options_model.model_fields) - operational


@pytest.mark.parametrize(
    "change",
    [{"revision": "v2"}, {"trust_remote_code": True}, {"dtype": "bfloat16"}],
)
def test_transformers_answer_changing_options_change_the_identity(change: dict) -> None:
    assert transformers_identity(**change) != transformers_identity()


@pytest.mark.parametrize(
    "change",
    [{"batch_size": 64}, {"device": "cpu"}, {"max_input_tokens": 100}, {"local_files_only": True}],
)
def test_transformers_operational_options_keep_the_identity(change: dict) -> None:
    assert transformers_identity(**change) == transformers_identity()


@pytest.mark.parametrize(
    "change",
    [
        {"revision": "v2"},
        {"seed": 1},
        {"max_model_len": 4096},
        {"engine_kwargs": {"quantization": "awq"}},
        {"engine_kwargs": {"rope_scaling": {"type": "linear", "factor": 2.0}}},
        {"dtype": "float16"},
    ],
)
def test_vllm_answer_changing_options_change_the_identity(change: dict) -> None:
    assert vllm_identity(**change) != vllm_identity()


@pytest.mark.parametrize(
    "change",
    [
        {"batch_size": 8},
        {"gpu_memory_utilization": 0.5},
        {"enforce_eager": True},
        {"tensor_parallel_size": 2},
    ],
)
def test_vllm_operational_options_keep_the_identity(change: dict) -> None:
    assert vllm_identity(**change) == vllm_identity()


def test_embedded_identity_is_the_weights_digest_and_conversion() -> None:
    identity = EmbeddedBackend(LocalModelOptions(dtype="float32")).identity()
    assert identity["model"] == MODEL_NAME
    assert identity["sha256"] == expected_sha256()
    assert identity["format_version"] == FORMAT_VERSION
    assert identity["options"]["dtype"] == "float32"
    same = EmbeddedBackend(LocalModelOptions(dtype="float32", batch_size=2, device="cpu"))
    assert same.identity() == identity
    assert EmbeddedBackend(LocalModelOptions(dtype="bfloat16")).identity() != identity


@pytest.mark.parametrize("identity_of", [transformers_identity, vllm_identity])
def test_a_local_folder_is_keyed_by_content_not_location(
    model_folder: Path, tmp_path: Path, identity_of: Any
) -> None:
    before = identity_of(str(model_folder))
    assert before["model"] == "my-model"
    assert str(tmp_path) not in str(before)  # the location is not identity
    assert len(before["content_sha256"]) == 64

    copy = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(model_folder, copy)
    assert identity_of(str(copy)) == before  # moved or copied: same answers, same key

    (model_folder / ".cache" / "download.lock").write_text("changed")  # bookkeeping only
    assert identity_of(str(model_folder)) == before

    (model_folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
    after_config = identity_of(str(model_folder))
    assert after_config["content_sha256"] != before["content_sha256"]

    (model_folder / "tokenizer_config.json").write_text('{"chat_template": "{{ x }}"}')
    assert identity_of(str(model_folder)) != after_config


def test_large_files_are_hashed_once_and_a_changed_one_is_seen(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_digest, "FULL_HASH_MAX_BYTES", 1024)  # weights count as large
    hashed: list[str] = []
    real = model_digest.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(model_digest, "file_sha256", counting)
    sidecar = tmp_path / "digests.json"
    weights = model_folder / "model.safetensors"

    first = folder_digest(model_folder, sidecar)
    assert hashed.count("model.safetensors") == 1
    hashed.clear()
    assert folder_digest(model_folder, sidecar) == first
    assert hashed == ["config.json", "tokenizer.json"]  # small files every time, weights not

    # Fine-tuned in place: same size, and the modification time put back as it was.
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    changed = folder_digest(model_folder, sidecar)
    assert changed != first
    assert changed == folder_digest(model_folder, tmp_path / "fresh-sidecar.json")
