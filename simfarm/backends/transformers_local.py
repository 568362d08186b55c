"""Local Hugging Face causal language models: the ``transformers`` backend.

A model is loaded once per backend (lazily, on first use) with ``AutoModelForCausalLM`` and
``AutoTokenizer`` from a local folder or a hub id; each batch of requests is decoded together
by :class:`~simfarm.backends.local_decoder.BatchDecoder` (per-request decoding parameters and
seeds), in the worker thread and under the lock that
:class:`~simfarm.backends.local_base.LocalBatchedBackend` provides. Prompts are rendered by
:mod:`simfarm.backends.local_prompt` (shared with vLLM).

This module holds the options, the loading and the backend. torch and transformers are
imported only when a model is loaded, so it imports without the ``local`` extra; a missing
dependency becomes a :class:`~simfarm.errors.MissingExtraError` naming the extra.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simfarm.backends.base import BackendSpec
from simfarm.backends.local_base import LocalBatchedBackend, failed
from simfarm.backends.local_decoder import BatchDecoder, DecodeRow, LoadedModel
from simfarm.backends.local_prompt import render_prompt
from simfarm.backends.model_digest import local_model_identity
from simfarm.errors import BackendError, ConfigError, MissingExtraError
from simfarm.types import Completion, CompletionRequest, DecodingParams, TokenLogprob

logger = logging.getLogger(__name__)


def import_local_stack(feature: str) -> tuple[Any, Any]:
    """``(torch, transformers)``, or a :class:`MissingExtraError` naming the ``local`` extra."""
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ModuleNotFoundError as error:
        raise MissingExtraError(feature, "local", error.name or "torch") from error
    return torch, transformers


def cpu_has_native_bf16(torch: Any) -> bool:
    """Whether this CPU has bfloat16 matmul instructions (AVX512-BF16 or AMX).

    Uses torch's own (private, hence guarded) CPU-feature probes; unknown means no.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(getattr(torch, "cpu", None), probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:
            continue
    return False


# --- options -----------------------------------------------------------------------------------


class LocalModelOptions(BaseModel):
    """Settings shared by the backends that run a model in this process."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "cuda", "auto"] = "auto"
    """``auto``: CUDA when available, else CPU."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    """``auto``: on CPU, bfloat16 when the CPU computes it natively (AVX512-BF16 or AMX; 2-3x
    faster than float32 there) and float32 otherwise (where bfloat16 is emulated and slow); on
    CUDA, bfloat16 (float16 on GPUs without it). Whatever the dtype, answers are
    reproducible only with ``batch_invariant`` (float32 merely makes batch noise smaller)."""
    batch_invariant: bool = True
    """Run each request in forward passes of its own (no padding, no neighbours), so its
    tokens and logprobs are bit-identical whatever else the run sends with it: a fresh run, an
    interrupted and resumed one and another ``batch_size`` or concurrency give the same
    answers (on the same machine, torch and dtype). ``false``: ``batch_size`` requests share
    each forward pass, left-padded: about 3x faster for the embedded judge's one-token
    verdicts on a 2-core CPU (``bench/batch_invariance.py``), but logprobs then move in their
    last bits with the batch a request lands in, and an occasional near-tie verdict flips."""
    batch_size: int = Field(default=16, ge=1)
    """Requests per :meth:`Backend.complete` call from the runner, and per forward pass
    unless ``batch_invariant``."""
    max_input_tokens: int | None = Field(default=None, ge=1)
    """Longer prompts fail (``client_error``) instead of running; default: the model's
    ``max_position_embeddings``."""


class TransformersOptions(LocalModelOptions):
    """Options of the ``transformers`` backend."""

    trust_remote_code: bool = False
    """Run model code shipped with a hub repository (off: only transformers' own classes)."""
    revision: str | None = None
    """Hub branch, tag or commit to load (None: the default branch)."""
    local_files_only: bool = False
    """Never reach the hub; load only what is in the local folder or hub cache."""


# --- the backend -------------------------------------------------------------------------------


class TransformersBackend(LocalBatchedBackend[DecodeRow]):
    """A Hugging Face causal LM run in this process (CPU or one GPU).

    ``spec.model`` is a local folder or a hub id. The model loads on first use, inside the
    worker thread of that call (or up front with :meth:`load`).

    :meth:`complete` never raises for a single request: a prompt over ``max_input_tokens`` or
    one the chat template rejects fails with kind ``client_error`` (retrying cannot help, as
    for an HTTP 400), anything the model raises with kind ``backend``. A model that cannot be
    loaded at all raises :class:`~simfarm.errors.BackendError`: every request would fail.
    """

    name: ClassVar[str] = "transformers"
    options_model: ClassVar[type[LocalModelOptions]] = TransformersOptions
    OPERATIONAL_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"device", "batch_size", "batch_invariant", "max_input_tokens", "local_files_only"}
    )
    """Options that change how answers are computed or fetched, never what they are: left
    out of :meth:`identity`. ``device``, ``batch_size`` and ``batch_invariant`` change only
    floating-point noise (as batch composition does), so caches made either way stay valid;
    ``max_input_tokens`` only rejects prompts (failures are never cached);
    ``local_files_only`` only forbids downloads (``revision`` says what is loaded).
    Everything else, ``revision`` and ``trust_remote_code`` included, is identity."""
    required_modules: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    """Checked by :meth:`from_spec`, so a missing extra is reported when the backend is built
    rather than at its first request."""

    def __init__(self, model: str, options: LocalModelOptions) -> None:
        super().__init__(options.batch_size, 1 if options.batch_invariant else None)
        self.model_id = model
        self.options = options
        self._loaded: LoadedModel | None = None
        self._decoder: BatchDecoder | None = None
        self._identity: dict[str, Any] | None = None

    @classmethod
    def _validate_options(cls, spec: BackendSpec) -> LocalModelOptions:
        for module in cls.required_modules:
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(f"the {cls.name!r} backend", "local", module)
        try:
            return cls.options_model.model_validate(spec.options)
        except ValidationError as error:
            raise ConfigError(f"invalid options for the {cls.name!r} backend: {error}") from error

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> TransformersBackend:
        if not spec.model:
            raise ConfigError(
                "the 'transformers' backend needs `model`: a local folder or a Hugging Face hub id"
            )
        return cls(spec.model, cls._validate_options(spec))

    # -- identity --

    def model_source(self) -> str:
        """What ``from_pretrained`` is given: an existing local folder (resolved) or a hub id."""
        path = Path(self.model_id).expanduser()
        return str(path.resolve()) if path.exists() else self.model_id

    def resolved_device(self) -> str:
        if self.options.device != "auto":
            return self.options.device
        torch, _ = import_local_stack(f"the {self.name!r} backend")
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        """The dtype the model runs in (``auto`` resolved for the device)."""
        if self.options.dtype != "auto":
            return self.options.dtype
        torch, _ = import_local_stack(f"the {self.name!r} backend")
        if self.resolved_device() == "cpu":
            return "bfloat16" if cpu_has_native_bf16(torch) else "float32"
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def identity_options(self) -> dict[str, Any]:
        """The validated options minus :attr:`OPERATIONAL_FIELDS`, with ``dtype`` resolved
        (``auto`` and the dtype it resolves to give the same answers)."""
        options = self.options.model_dump(mode="json", exclude=set(self.OPERATIONAL_FIELDS))
        options["dtype"] = self.resolved_dtype()
        return options

    def identity(self) -> dict[str, Any]:
        """Backend, model and every option that can change an answer; for a local folder
        its content digest instead of its path (computed once per backend instance: cheap,
        see :mod:`simfarm.backends.model_digest`)."""
        if self._identity is None:
            self._identity = local_model_identity(self.name, self.model_id, {})
        return {**self._identity, "options": self.identity_options()}

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    # -- loading --

    def load(self) -> None:
        """Load the tokenizer and model now (blocking; otherwise done on first use)."""
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> LoadedModel:
        if self._loaded is None:
            try:
                self._loaded = self._load()
            except (MissingExtraError, BackendError):
                raise
            except Exception as error:
                raise BackendError(
                    f"could not load model {self.model_source()!r} for the {self.name!r} "
                    f"backend: {type(error).__name__}: {error}"
                ) from error
            torch, _ = import_local_stack(f"the {self.name!r} backend")
            self._decoder = BatchDecoder(self._loaded, torch)
        return self._loaded

    def _load(self) -> LoadedModel:
        torch, transformers = import_local_stack(f"the {self.name!r} backend")
        source = self.model_source()
        device = torch.device(self.resolved_device())
        dtype = getattr(torch, self.resolved_dtype())
        hub_kwargs: dict[str, Any] = {}
        if isinstance(self.options, TransformersOptions):
            hub_kwargs = {
                "trust_remote_code": self.options.trust_remote_code,
                "revision": self.options.revision,
                "local_files_only": self.options.local_files_only,
            }
        started = time.perf_counter()
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **hub_kwargs)
        # transformers renamed `torch_dtype` to `dtype` in 4.56; older versions would pass an
        # unknown `dtype` on to the config and silently load float32.
        major_minor = tuple(int(p) for p in transformers.__version__.split(".")[:2])
        dtype_kwarg = "dtype" if major_minor >= (4, 56) else "torch_dtype"
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, **{dtype_kwarg: dtype}, **hub_kwargs
        )
        model.to(device)
        model.eval()
        logger.info(
            "loaded %s on %s in %s (%.1fs)", source, device, dtype, time.perf_counter() - started
        )
        return LoadedModel.describe(model, tokenizer, device)

    async def aclose(self) -> None:
        def release() -> None:
            with self._lock:
                loaded, self._loaded, self._decoder = self._loaded, None, None
                if loaded is None:
                    return
                is_cuda = loaded.device.type == "cuda"
                del loaded
                gc.collect()
                if is_cuda:
                    torch, _ = import_local_stack(f"the {self.name!r} backend")
                    torch.cuda.empty_cache()

        await asyncio.to_thread(release)

    # -- prompts and tokens --

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (loads the model if needed)."""
        with self._lock:
            return self._ensure_loaded().tokenizer

    def render_prompt(self, request: CompletionRequest) -> str:
        """The text the model sees for ``request`` (see
        :func:`~simfarm.backends.local_prompt.render_prompt`)."""
        return render_prompt(request, self.tokenizer).text

    def _encode(self, loaded: LoadedModel, text: str, templated: bool = False) -> list[int]:
        """Token ids of ``text``, with the tokenizer's special tokens (BOS) unless the text
        already carries them (chat-template output, or a prompt that starts with BOS text)."""
        tokenizer = loaded.tokenizer
        bos = tokenizer.bos_token
        has_specials = templated or (bool(bos) and text.startswith(bos))
        ids: list[int] = tokenizer(text, add_special_tokens=not has_specials)["input_ids"]
        return list(ids)

    def _input_limit(self, loaded: LoadedModel) -> int | None:
        return self.options.max_input_tokens or loaded.max_positions

    # -- completions (called by LocalBatchedBackend under the lock) --

    def _ready(self) -> None:
        self._ensure_loaded()

    def _prepare(self, request: CompletionRequest) -> DecodeRow | Completion:
        loaded = self._ensure_loaded()
        torch, _ = import_local_stack(f"the {self.name!r} backend")
        params = request.params
        try:
            rendered = render_prompt(request, loaded.tokenizer)
        except ValueError as error:
            return failed("client_error", str(error))
        try:
            input_ids = self._encode(loaded, rendered.text, rendered.templated)
        except Exception as error:
            return failed("backend", f"tokenization failed: {type(error).__name__}: {error}")
        if not input_ids:
            return failed("client_error", "the prompt is empty (no tokens to condition on)")
        limit = self._input_limit(loaded)
        if limit is not None and len(input_ids) > limit:
            return failed(
                "client_error",
                f"the prompt has {len(input_ids)} tokens, more than the {limit} allowed "
                f"(max_input_tokens)",
            )
        max_new = max(0, params.max_tokens)
        if loaded.max_positions is not None:
            max_new = min(max_new, max(0, loaded.max_positions - len(input_ids)))
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=loaded.device)
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
        top_k = 0
        if params.logprobs and params.top_logprobs:
            top_k = max(0, min(params.top_logprobs, loaded.vocab_size))
        return DecodeRow(
            input_ids=input_ids,
            params=params,
            stops=tuple(params.stop or ()) + rendered.extra_stop,
            max_new=max_new,
            generator=generator,
            top_k=top_k,
            strip_output=rendered.strip_output,
        )

    def _order(self, pending: list[tuple[int, DecodeRow]]) -> list[tuple[int, DecodeRow]]:
        # Similar lengths together: less padding per batch.
        return sorted(pending, key=lambda item: len(item[1].input_ids))

    def _run_batch(self, batch: list[DecodeRow]) -> list[Completion]:
        self._ensure_loaded()
        assert self._decoder is not None
        scoring = [row for row in batch if is_scoring(row.params)]
        if len(scoring) == len(batch):
            return self._score(batch)
        if scoring:
            # Rare (a judge asks one kind of request): score and decode apart, in order.
            scored = iter(self._score(scoring))
            decoding = [row for row in batch if not is_scoring(row.params)]
            decoded = iter(self._run_batch(decoding))
            return [next(scored) if is_scoring(r.params) else next(decoded) for r in batch]
        self._decoder.decode(batch)
        return [self._decoder.completion(row) for row in batch]

    def _score(self, batch: list[DecodeRow]) -> list[Completion]:
        """The log-probability of each prompt token given the ones before it (the first
        token, which nothing precedes, gets 0), like OpenAI's ``echo`` with
        ``max_tokens: 0``: one forward pass over the right-padded batch."""
        loaded = self._loaded
        assert loaded is not None and self._decoder is not None
        torch, _ = import_local_stack(f"the {self.name!r} backend")
        width = max(len(row.input_ids) for row in batch)
        ids = torch.full((len(batch), width), loaded.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for index, row in enumerate(batch):
            ids[index, : len(row.input_ids)] = torch.tensor(row.input_ids)
            mask[index, : len(row.input_ids)] = 1
        ids, mask = ids.to(loaded.device), mask.to(loaded.device)
        with torch.no_grad():
            logits = loaded.model(input_ids=ids, attention_mask=mask).logits.float()
        chosen = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
        completions = []
        for index, row in enumerate(batch):
            values = [0.0, *chosen[index, : len(row.input_ids) - 1].tolist()]
            logprobs = [
                TokenLogprob(token=self._decoder.token_str(token), logprob=value)
                for token, value in zip(row.input_ids, values, strict=True)
            ]
            completions.append(
                Completion(
                    text="",
                    logprobs=logprobs,
                    prompt_tokens=len(row.input_ids),
                    completion_tokens=0,
                    cost_usd=0.0,
                    finish_reason="length",
                )
            )
        return completions


def is_scoring(params: DecodingParams) -> bool:
    """A request for the prompt's own token log-probabilities (``max_tokens: 0`` with
    ``logprobs``), not for new tokens."""
    return params.max_tokens == 0 and params.logprobs
