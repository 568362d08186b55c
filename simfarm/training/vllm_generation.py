"""Sampling the policy with vLLM (GPU): the same samples contract as the transformers path.

:func:`simfarm.training.policy.generate_with` comes here when ``generation.engine`` chooses
vLLM (:func:`choose_engine`: "vllm", or "auto" with vLLM installed and the policy on a GPU).
One ``vllm.LLM`` is built per base model and kept for the process (building one costs tens of
seconds; expert iteration samples once per round), with ``enable_lora=True``: the policy's
current LoRA adapter is handed to each ``generate`` call as a ``LoRARequest`` — the adapter
folder the policy was loaded from, or, for adapters held in memory (peft), a copy saved to a
temporary folder named by its content, so a changed adapter is never served from vLLM's
adapter cache under an old id.

Sample ``k`` of prompt ``i`` is its own request (``SamplingParams(n=1)``) seeded by ``(seed,
prompt, k)``, rather than one request with ``n=k``: like the transformers path, sample 0 is
then the same response whatever ``n`` is, which best-of-n's comparison with best-of-1 relies on.
A response vLLM ended for length (``finish_reason == "length"``) is marked truncated.

The pure parts (engine choice, SamplingParams keywords, output translation, LoRA rank) run
without vLLM; vLLM itself is imported only when an engine is built, and its absence is a
:class:`~simfarm.errors.MissingExtraError` naming ``simfarm[vllm]``.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from simfarm.errors import ConfigError, MissingExtraError
from simfarm.training.config import GenerationSpec, VLLMGenerationOptions
from simfarm.types import DecodingParams

if TYPE_CHECKING:
    from simfarm.training.policy import Policy, Sample

FEATURE = "vLLM generation in training recipes (generation.engine: vllm)"

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The ``max_lora_rank`` values vLLM's engine accepts."""


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(spec: GenerationSpec, device: str) -> Literal["vllm", "transformers"]:
    """Which engine samples for ``spec`` when the policy sits on ``device``.

    "auto" is vLLM only when it is installed and the device is a GPU (vLLM's CPU backend is a
    separate build); "vllm" without vLLM, or off a GPU, is an error saying what to change.
    """
    if spec.engine == "transformers":
        return "transformers"
    on_gpu = str(device).startswith("cuda")
    if spec.engine == "auto":
        return "vllm" if on_gpu and vllm_installed() else "transformers"
    if not vllm_installed():
        raise MissingExtraError(FEATURE, "vllm", "vllm")
    if not on_gpu:
        raise ConfigError(
            f"generation.engine: 'vllm' needs a CUDA GPU, but the policy is on {device!r}; "
            "use 'auto' or 'transformers'"
        )
    return "vllm"


def require_installed_engines(config: Any) -> None:
    """Fail before any model loads when a recipe asks for ``engine: vllm`` (at any depth,
    e.g. ``data.feedback.generation``) and vLLM is not installed."""
    from pydantic import BaseModel

    def walk(node: Any, key: str) -> None:
        if isinstance(node, GenerationSpec) and node.engine == "vllm" and not vllm_installed():
            raise MissingExtraError(
                f"vLLM generation in training recipes ({key}.engine: vllm)", "vllm", "vllm"
            )
        if isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name), f"{key}.{name}" if key else name)

    walk(config, "")


def sample_request_seed(seed: int, prompt: str, k: int) -> int:
    """The seed of sample ``k`` of ``prompt`` (the transformers path's, kept within 31 bits,
    which every vLLM version's sampler takes)."""
    from simfarm.training.policy import sample_seed

    return sample_seed(seed, prompt, k) % (2**31 - 1)


def sampling_params_kwargs(spec: GenerationSpec, seed: int, prompt: str, k: int) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for sample ``k`` of ``prompt`` (``n=1``,
    temperature, top_p, ``max_tokens``, stop strings, seed), through the annotation backend's
    translation (:func:`simfarm.backends.vllm_engine.sampling_kwargs`)."""
    from simfarm.backends.vllm_engine import sampling_kwargs

    params = DecodingParams(
        temperature=spec.temperature,
        top_p=spec.top_p,
        max_tokens=spec.max_new_tokens,
        stop=list(spec.stop) or None,
        seed=sample_request_seed(seed, prompt, k),
    )
    return sampling_kwargs(params)


def sample_from_output(output: Any, stop: Sequence[str]) -> Sample:
    """A vLLM ``RequestOutput`` (its one sample) -> :class:`~simfarm.training.policy.Sample`
    (text cut at the stop strings and stripped, as the transformers path does)."""
    from simfarm.training.policy import Sample, cut_at_stop

    outputs = getattr(output, "outputs", None)
    if not outputs:
        raise RuntimeError("vLLM returned a request with no output")
    sample = outputs[0]
    reason = getattr(sample, "finish_reason", None)
    if reason == "abort":
        raise RuntimeError("vLLM aborted a generation request")
    return Sample(cut_at_stop(str(sample.text), stop).strip(), truncated=reason == "length")


def lora_rank_limit(rank: int, options: VLLMGenerationOptions) -> int:
    """``max_lora_rank`` for an adapter of ``rank``: the option when set, else the smallest
    value vLLM accepts that holds it."""
    if options.max_lora_rank is not None:
        if options.max_lora_rank < rank:
            raise ConfigError(
                f"generation.vllm.max_lora_rank: {options.max_lora_rank} is below the "
                f"adapter's rank {rank}"
            )
        return options.max_lora_rank
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ConfigError(f"lora.r: vLLM serves LoRA ranks up to {LORA_RANKS[-1]}, not {rank}")


def _adapter_rank(folder: Path) -> int:
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return int(config.get("r") or 8)


# ---------------------------------------------------------------------------------------
# The engine (one per process) and the adapter


class _EngineCache:
    """The process's one ``vllm.LLM`` and what it was built for (a new key rebuilds it)."""

    key: tuple[Any, ...] | None = None
    llm: Any = None
    adapter_dir: Path | None = None
    """Where in-memory adapters are saved for vLLM to load (removed with the engine)."""

    @classmethod
    def get(cls, key: tuple[Any, ...], build: Any) -> Any:
        if cls.key != key:
            cls.release()
            cls.llm = build()
            cls.key = key
        return cls.llm

    @classmethod
    def release(cls) -> None:
        cls.llm, cls.key = None, None
        if cls.adapter_dir is not None:
            shutil.rmtree(cls.adapter_dir, ignore_errors=True)
            cls.adapter_dir = None
        gc.collect()
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def release_engine() -> None:
    """Drop the vLLM engine (frees its GPU memory for training)."""
    _EngineCache.release()


def _base_and_adapter(policy: Policy) -> tuple[str, Path | None, int]:
    """(base model folder for vLLM, LoRA adapter folder or None, adapter rank)."""
    from simfarm.training.policy import model_folder

    spec = policy.spec
    base = model_folder(spec.model_copy(update={"adapter": None}))
    if policy.is_peft:
        if spec.adapter is not None:
            raise ConfigError(
                "model.adapter: vLLM generation serves one LoRA adapter at a time, but this "
                "policy has model.adapter merged in and trainable adapters on top; merge the "
                "first into full weights, or use generation.engine: transformers"
            )
        return base, _saved_adapter(policy), int(policy.model.peft_config["default"].r)
    if spec.adapter is not None:
        return base, Path(spec.adapter), _adapter_rank(Path(spec.adapter))
    return base, None, 0


def _saved_adapter(policy: Policy) -> Path:
    """The policy's in-memory adapter saved to a folder named by its content."""
    import hashlib

    if _EngineCache.adapter_dir is None:
        _EngineCache.adapter_dir = Path(tempfile.mkdtemp(prefix="simfarm-vllm-lora-"))
    staging = _EngineCache.adapter_dir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    policy.model.save_pretrained(str(staging))
    content = hashlib.sha256()
    for file in sorted(staging.iterdir()):
        if file.is_file():
            content.update(file.name.encode() + b"\0" + file.read_bytes())
    digest = content.hexdigest()[:16]
    final = _EngineCache.adapter_dir / digest
    if final.is_dir():
        shutil.rmtree(staging)
    else:
        staging.rename(final)
    return final


def _engine(policy: Policy, spec: GenerationSpec, base: str, rank: int) -> Any:
    from simfarm.backends.vllm_engine import _import_vllm
    from simfarm.training.policy import resolve_dtype

    vllm = _import_vllm(FEATURE)
    options = spec.vllm
    max_rank = lora_rank_limit(max(rank, 1), options)
    dtype = resolve_dtype(policy.spec)
    kwargs: dict[str, Any] = {
        "model": base,
        "dtype": dtype,
        "enable_lora": True,
        "max_lora_rank": max_rank,
        "max_loras": 1,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "enforce_eager": options.enforce_eager,
    }
    if policy.spec.revision is not None:
        kwargs["revision"] = policy.spec.revision
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    kwargs.update(options.engine_kwargs)
    key = (base, dtype, max_rank, json.dumps(options.model_dump(mode="json"), sort_keys=True))
    return _EngineCache.get(key, lambda: vllm.LLM(**kwargs))


def vllm_generate(
    policy: Policy, prompts: Sequence[str], spec: GenerationSpec, *, n: int, seed: int
) -> list[list[Sample]]:
    """``n`` samples per (formatted) prompt from the policy, on vLLM: ``result[i][k]``."""
    from simfarm.backends.vllm_engine import _import_vllm, prompt_input

    vllm = _import_vllm(FEATURE)
    base, adapter, rank = _base_and_adapter(policy)
    llm = _engine(policy, spec, base, rank)
    lora_request = None
    if adapter is not None:
        from vllm.lora.request import LoRARequest

        name = f"simfarm-{adapter.name}"
        lora_request = LoRARequest(
            lora_name=name,
            lora_int_id=int(stable_id(str(adapter.resolve()))),
            lora_path=str(adapter),
        )
    jobs = [(i, k) for i in range(len(prompts)) for k in range(n)]
    inputs = [prompt_input(prompts[i], False, policy.tokenizer) for i, _ in jobs]
    params = [
        vllm.SamplingParams(**sampling_params_kwargs(spec, seed, prompts[i], k)) for i, k in jobs
    ]
    outputs = llm.generate(
        inputs, sampling_params=params, use_tqdm=False, lora_request=lora_request
    )
    results: list[list[Sample]] = [[] for _ in prompts]
    for (i, _k), output in zip(jobs, outputs, strict=True):
        results[i].append(sample_from_output(output, spec.stop))
    return results


def stable_id(text: str) -> int:
    """A positive 31-bit id for ``text`` (vLLM's ``lora_int_id`` must be > 0 and unique per
    adapter: a different adapter folder gets a different id)."""
    from simfarm.types import stable_digest

    return int(stable_digest(["simfarm-lora", text])[:8], 16) % (2**31 - 2) + 1


__all__ = [
    "choose_engine",
    "lora_rank_limit",
    "release_engine",
    "require_installed_engines",
    "sample_from_output",
    "sampling_params_kwargs",
    "vllm_generate",
]
