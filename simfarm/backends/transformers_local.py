"""Local Hugging Face causal language models: the ``transformers`` backend.

A model is loaded once per backend (lazily, on first use) with ``AutoModelForCausalLM`` and
``AutoTokenizer`` from a local folder or a hub id, and every :meth:`TransformersBackend.complete`
call pads its requests into one batch. Decoding is a small loop written here rather than
``model.generate`` because each request in a batch may carry its own decoding parameters:
temperature, ``top_p``, ``max_tokens``, stop strings and — most importantly — its own seed.
Each sampled request draws from its own ``torch.Generator`` seeded with ``params.seed``, so its
output does not depend on which other requests happened to share its batch (greedy requests
are independent of batching too, up to floating-point noise from padding). A request that is
finished is dropped from the batch (its rows of the KV cache are removed), so one long answer
does not make every short one pay for its tail.

Log-probabilities are those of the model's raw distribution (before temperature and
``top_p``), as OpenAI and vLLM report them.

torch and transformers are imported only when a model is loaded, so this module (and its pure
helpers, :func:`plain_chat_prompt` and :func:`render_prompt`, which the vLLM backend shares) can
be imported without the ``local`` extra; a missing dependency becomes a
:class:`~simfarm.errors.MissingExtraError` naming the extra.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simfarm.backends.base import Backend, BackendSpec
from simfarm.errors import BackendError, ConfigError, MissingExtraError
from simfarm.types import (
    ChatMessage,
    Completion,
    CompletionRequest,
    DecodingParams,
    Failure,
    TokenLogprob,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# How many logit values (positions x vocabulary) one scoring forward pass may materialise.
# Gemma's vocabulary has 262k entries, so full logits for a batch of long sequences would take
# gigabytes; scoring computes logits only for the continuation positions and splits a batch
# whose continuations would exceed this (2**26 float32 values = 256 MiB).
_SCORE_LOGITS_BUDGET = 2**26


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


# --- prompt rendering (pure; shared with the vLLM backend) -------------------------------------

_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}

FALLBACK_CHAT_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nSystem:")
"""Stop strings added to chat requests rendered with :func:`plain_chat_prompt`: a base model
continuing a transcript writes the next turn itself, which is not part of its answer."""


def plain_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """Render a chat as a plain transcript, for tokenizers without a chat template.

    Base (not instruction-tuned) models have no chat template; what they have seen in
    pre-training is text, and a transcript is the text form of a chat that they continue most
    sensibly. Each message becomes ``"<Role>: <content>"`` (roles ``System``, ``User``,
    ``Assistant``), messages are separated by a blank line, and the prompt ends with
    ``"Assistant:"`` (no trailing space: sentencepiece vocabularies attach the space to the next
    word) so the model writes the assistant's turn. Requests rendered this way also stop at
    :data:`FALLBACK_CHAT_STOPS`.
    """
    turns = [f"{_ROLE_LABELS[m.role]}: {m.content.strip()}" for m in messages]
    turns.append("Assistant:")
    return "\n\n".join(turns)


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that prompt rendering needs."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class RenderedPrompt:
    """A request's input as text, and how to tokenize and stop it."""

    text: str
    templated: bool
    """True when a chat template produced ``text``: it then already holds the special tokens
    (BOS, turn markers) and must be tokenized without adding them again."""
    extra_stop: tuple[str, ...] = ()
    """Stop strings implied by the rendering (see :data:`FALLBACK_CHAT_STOPS`)."""
    strip_output: bool = False
    """The answer is a turn in a plain transcript: whitespace around it is formatting, not
    content (the model writes ``" The answer."`` after ``"Assistant:"``), so it is stripped."""


def render_prompt(request: CompletionRequest, tokenizer: ChatTokenizer | None) -> RenderedPrompt:
    """The text a model sees for ``request``.

    A raw ``prompt`` is used as is. Chat ``messages`` go through the tokenizer's chat template
    (with the generation prompt appended) when it has one, else :func:`plain_chat_prompt`.
    Raises ``ValueError`` when the template rejects the conversation (e.g. a template that
    allows no system message): the request itself is then at fault.
    """
    if request.messages is None:
        return RenderedPrompt(text=request.prompt or "", templated=False)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        conversation = [m.model_dump() for m in request.messages]
        try:
            text = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:  # jinja raises TemplateError (and others) for bad chats
            raise ValueError(f"the chat template rejected the messages: {error}") from error
        return RenderedPrompt(text=str(text), templated=True)
    return RenderedPrompt(
        text=plain_chat_prompt(request.messages),
        templated=False,
        extra_stop=FALLBACK_CHAT_STOPS,
        strip_output=True,
    )


def truncate_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    cut: int | None = None
    for stop in stops:
        if not stop:
            continue
        index = text.find(stop)
        if index != -1 and (cut is None or index < cut):
            cut = index
    return cut


# --- options and results -----------------------------------------------------------------------


class LocalModelOptions(BaseModel):
    """Settings shared by the backends that run a model in this process."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "cuda", "auto"] = "auto"
    """``auto``: CUDA when available, else CPU."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    """``auto``: on CPU, bfloat16 when the CPU computes it natively (AVX512-BF16 or AMX; 2-3x
    faster than float32 there) and float32 otherwise (where bfloat16 is emulated and slow); on
    CUDA, bfloat16 (float16 on GPUs without it). Pin ``float32`` when outputs must not depend
    on batch composition: in bfloat16, padding noise flips an occasional greedy token."""
    batch_size: int = Field(default=16, ge=1)
    """Requests per forward pass (and per :meth:`Backend.complete` call from the runner)."""
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


class ContinuationScore(BaseModel):
    """log P(continuation | prompt) under the model, for likelihood-based judges."""

    model_config = ConfigDict(extra="forbid")

    sum_logprob: float
    """Sum of the continuation tokens' log-probabilities (natural log)."""
    mean_logprob: float
    """``sum_logprob / n_tokens``: compares continuations of different lengths (0 when empty)."""
    n_tokens: int
    """How many tokens were scored."""


@dataclass
class _Row:
    """One request's state during batched decoding."""

    index: int
    input_ids: list[int]
    params: DecodingParams
    stops: tuple[str, ...]
    max_new: int
    generator: torch.Generator | None
    top_k: int
    strip_output: bool = False
    out_ids: list[int] = field(default_factory=list)
    text_ends: list[int] = field(default_factory=list)
    """Length of the decoded text after each generated token (tracked only with stops)."""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    cut: int | None = None
    """Where a stop string starts in the decoded text (text is cut there)."""


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: Any
    eos_ids: frozenset[int]
    pad_id: int
    max_positions: int | None
    vocab_size: int
    cache_kwarg: str
    logits_kwarg: str | None


# --- the backend -------------------------------------------------------------------------------


class TransformersBackend(Backend):
    """A Hugging Face causal LM run in this process (CPU or one GPU).

    ``spec.model`` is a local folder or a hub id. The model loads on first use, inside the
    worker thread of that call (or up front with :meth:`load`). All model work runs in
    ``asyncio.to_thread`` under one lock, so the event loop stays free, and
    ``max_concurrency = 1``: parallelism comes from batching, not from concurrent calls.

    :meth:`complete` never raises for a single request: a prompt over ``max_input_tokens`` or
    one the chat template rejects fails with kind ``client_error`` (retrying cannot help, as
    for an HTTP 400), anything the model raises with kind ``backend``. A model that cannot be
    loaded at all raises :class:`~simfarm.errors.BackendError`: every request would fail.
    """

    name: ClassVar[str] = "transformers"
    options_model: ClassVar[type[LocalModelOptions]] = TransformersOptions
    required_modules: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    """Checked by :meth:`from_spec`, so a missing extra is reported when the backend is built
    rather than at its first request."""

    def __init__(self, model: str, options: LocalModelOptions) -> None:
        self.model_id = model
        self.options = options
        self.batch_size = options.batch_size
        self.max_concurrency = 1
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()
        self._requests_sent = 0
        self._token_str_cache: dict[int, str] = {}

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

    # -- identity and bookkeeping --

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

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_source(), "dtype": self.resolved_dtype()}

    @property
    def requests_sent(self) -> int:
        return self._requests_sent

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    # -- loading --

    def load(self) -> None:
        """Load the tokenizer and model now (blocking; otherwise done on first use)."""
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> _Loaded:
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
        return self._loaded

    def _load(self) -> _Loaded:
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

        eos_ids: set[int] = set()
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in (generation_eos, tokenizer.eos_token_id):
            if isinstance(value, int):
                eos_ids.add(value)
            elif isinstance(value, (list, tuple)):
                eos_ids.update(int(v) for v in value)
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        text_config = (
            model.config.get_text_config()
            if hasattr(model.config, "get_text_config")
            else model.config
        )
        max_positions = getattr(text_config, "max_position_embeddings", None)

        parameters = inspect.signature(model.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache`, and 4.50 `num_logits_to_keep`
        # to `logits_to_keep`; support both generations of the API.
        cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        logits_kwarg = next(
            (name for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), None
        )
        return _Loaded(
            model=model,
            tokenizer=tokenizer,
            device=device,
            eos_ids=frozenset(eos_ids),
            pad_id=int(pad_id),
            max_positions=int(max_positions) if max_positions else None,
            vocab_size=int(text_config.vocab_size),
            cache_kwarg=cache_kwarg,
            logits_kwarg=logits_kwarg,
        )

    async def aclose(self) -> None:
        def release() -> None:
            with self._lock:
                loaded, self._loaded = self._loaded, None
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
        """The text the model sees for ``request`` (see :func:`render_prompt`).

        Likelihood judges use it to score continuations of a chat exactly as
        :meth:`complete` would have prompted the model.
        """
        return render_prompt(request, self.tokenizer).text

    def _encode(self, loaded: _Loaded, text: str, templated: bool = False) -> list[int]:
        """Token ids of ``text``, with the tokenizer's special tokens (BOS) unless the text
        already carries them (chat-template output, or a prompt that starts with BOS text)."""
        tokenizer = loaded.tokenizer
        bos = tokenizer.bos_token
        has_specials = templated or (bool(bos) and text.startswith(bos))
        ids: list[int] = tokenizer(text, add_special_tokens=not has_specials)["input_ids"]
        return list(ids)

    def _token_str(self, loaded: _Loaded, token_id: int) -> str:
        text = self._token_str_cache.get(token_id)
        if text is None:
            text = loaded.tokenizer.decode([token_id])
            self._token_str_cache[token_id] = text
        return text

    def _input_limit(self, loaded: _Loaded) -> int | None:
        return self.options.max_input_tokens or loaded.max_positions

    # -- completions --

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        if not requests:
            return []
        return await asyncio.to_thread(self._complete_sync, list(requests))

    def _complete_sync(self, requests: list[CompletionRequest]) -> list[Completion]:
        with self._lock:
            loaded = self._ensure_loaded()
            torch, _ = import_local_stack(f"the {self.name!r} backend")
            results: list[Completion | None] = [None] * len(requests)
            rows: list[_Row] = []
            for index, request in enumerate(requests):
                row_or_failure = self._prepare(loaded, torch, index, request)
                if isinstance(row_or_failure, Completion):
                    results[index] = row_or_failure
                else:
                    rows.append(row_or_failure)
            rows.sort(key=lambda r: len(r.input_ids))
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for index, completion in self._run_rows(loaded, torch, chunk):
                    results[index] = completion
            return [c if c is not None else _failure("backend", "no result") for c in results]

    def _prepare(
        self, loaded: _Loaded, torch: Any, index: int, request: CompletionRequest
    ) -> _Row | Completion:
        params = request.params
        try:
            rendered = render_prompt(request, loaded.tokenizer)
        except ValueError as error:
            return _failure("client_error", str(error))
        try:
            input_ids = self._encode(loaded, rendered.text, rendered.templated)
        except Exception as error:
            return _failure("backend", f"tokenization failed: {type(error).__name__}: {error}")
        if not input_ids:
            return _failure("client_error", "the prompt is empty (no tokens to condition on)")
        limit = self._input_limit(loaded)
        if limit is not None and len(input_ids) > limit:
            return _failure(
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
        return _Row(
            index=index,
            input_ids=input_ids,
            params=params,
            stops=tuple(params.stop or ()) + rendered.extra_stop,
            max_new=max_new,
            generator=generator,
            top_k=top_k,
            strip_output=rendered.strip_output,
        )

    def _run_rows(
        self, loaded: _Loaded, torch: Any, rows: list[_Row]
    ) -> list[tuple[int, Completion]]:
        """Decode ``rows`` as one batch; if the batch fails, retry each row alone so that one
        bad request (or an out-of-memory batch) costs only its own answer."""
        self._requests_sent += len(rows)
        started = time.perf_counter()
        try:
            self._decode(loaded, torch, rows)
        except Exception as error:
            if len(rows) == 1:
                message = f"generation failed: {type(error).__name__}: {error}"
                return [(rows[0].index, _failure("backend", message))]
            logger.warning("batch of %d failed (%s); retrying one by one", len(rows), error)
            self._requests_sent -= len(rows)
            results: list[tuple[int, Completion]] = []
            for row in rows:
                _reset(row)
                results.extend(self._run_rows(loaded, torch, [row]))
            return results
        # Each request is charged its share of the batch: summed over a run, latency_s is
        # then the time the run spent (what s/1000 in validation reports should measure).
        latency = (time.perf_counter() - started) / len(rows)
        return [(row.index, self._finish(loaded, row, latency)) for row in rows]

    def _decode(self, loaded: _Loaded, torch: Any, rows: list[_Row]) -> None:
        """Batched incremental decoding with a KV cache; fills each row's output in place."""
        model = loaded.model
        device = loaded.device
        live = [row for row in rows if row.max_new > 0]
        for row in rows:
            if row.max_new == 0:
                row.finish_reason = "length"
        if not live:
            return
        width = max(len(row.input_ids) for row in live)
        input_ids = torch.full((len(live), width), loaded.pad_id, dtype=torch.long)
        attention = torch.zeros((len(live), width), dtype=torch.long)
        for i, row in enumerate(live):
            input_ids[i, width - len(row.input_ids) :] = torch.tensor(row.input_ids)
            attention[i, width - len(row.input_ids) :] = 1
        input_ids = input_ids.to(device)
        attention = attention.to(device)
        # Left padding: real tokens must still count positions from 0, as in an unpadded run.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"use_cache": True}
        if loaded.logits_kwarg:
            kwargs[loaded.logits_kwarg] = 1
        with torch.inference_mode():
            out = model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions, **kwargs
            )
            cache = _output_cache(out)
            while True:
                logits = out.logits[:, -1, :].float()
                self._step(loaded, torch, live, logits)
                still = [i for i, row in enumerate(live) if row.finish_reason is None]
                if not still:
                    return
                if len(still) < len(live) and hasattr(cache, "batch_select_indices"):
                    keep = torch.tensor(still, device=device)
                    cache.batch_select_indices(keep)
                    attention = attention[keep]
                    positions = positions[keep]
                    live = [live[i] for i in still]
                next_ids = torch.tensor(
                    [
                        [row.out_ids[-1] if row.finish_reason is None else loaded.pad_id]
                        for row in live
                    ],
                    dtype=torch.long,
                    device=device,
                )
                attention = torch.cat(
                    [attention, attention.new_ones((attention.shape[0], 1))], dim=-1
                )
                positions = positions[:, -1:] + 1
                out = model(
                    input_ids=next_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=True,
                    **{loaded.cache_kwarg: cache},
                )
                cache = _output_cache(out)

    def _step(self, loaded: _Loaded, torch: Any, live: list[_Row], logits: Any) -> None:
        """Pick the next token of every unfinished row in ``live`` from ``logits[i]``."""
        want_logprobs = any(row.params.logprobs for row in live)
        logp = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        greedy = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(live):
            if row.finish_reason is not None:
                continue
            if row.generator is None:
                token = int(greedy[i])
            else:
                token = _sample(torch, logits[i], row.params, row.generator)
            row.out_ids.append(token)
            if logp is not None and row.params.logprobs:
                top: dict[str, float] = {}
                if row.top_k:
                    values, ids = torch.topk(logp[i], row.top_k)
                    for value, alt in zip(values.tolist(), ids.tolist(), strict=True):
                        top.setdefault(self._token_str(loaded, alt), float(value))
                row.logprobs.append(
                    TokenLogprob(
                        token=self._token_str(loaded, token),
                        logprob=float(logp[i, token]),
                        top_logprobs=top,
                    )
                )
            if token in loaded.eos_ids:
                row.finish_reason = "stop"
                continue
            if row.stops:
                text = loaded.tokenizer.decode(_text_ids(row, loaded), skip_special_tokens=True)
                row.text_ends.append(len(text))
                cut = truncate_at_stop(text, row.stops)
                if cut is not None:
                    row.cut = cut
                    row.finish_reason = "stop"
                    continue
            if len(row.out_ids) >= row.max_new:
                row.finish_reason = "length"

    def _finish(self, loaded: _Loaded, row: _Row, latency: float) -> Completion:
        text = loaded.tokenizer.decode(_text_ids(row, loaded), skip_special_tokens=True)
        logprobs = row.logprobs if row.params.logprobs else None
        if row.cut is not None:
            text = text[: row.cut]
            if logprobs is not None:
                # Keep the tokens that contribute to the returned text: those starting before
                # the stop string.
                starts = [0, *row.text_ends[:-1]]
                logprobs = [
                    lp for lp, start in zip(logprobs, starts, strict=False) if start < row.cut
                ]
        if row.strip_output:
            text = text.strip()
        return Completion(
            text=text,
            logprobs=logprobs,
            prompt_tokens=len(row.input_ids),
            completion_tokens=len(row.out_ids),
            cost_usd=0.0,
            latency_s=latency,
            finish_reason=row.finish_reason or "length",
        )

    # -- likelihood scoring --

    def score_continuations(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """log P(continuation | prompt) for each ``(prompt, continuation)`` pair, in order.

        The continuation's tokens are found by tokenizing the prompt and prompt+continuation
        and taking what follows their longest common prefix, so the tokens scored are the ones
        the model would actually see for the joined text. When the tokenizer merges across the
        boundary (a prompt ending in a space followed by a word: ``"is " + "Paris"`` tokenizes
        as ``"is" + " Paris"``), the merged token is scored as part of the continuation. A
        prompt is tokenized with BOS like a completion prompt; a tokenizer without BOS cannot
        score the first token of an empty prompt, which is then left out.

        Blocking, and raises on failure (unlike :meth:`complete`): it is a direct call, not
        part of a run's request stream. See :meth:`ascore_continuations` for async code.
        """
        if not pairs:
            return []
        with self._lock:
            loaded = self._ensure_loaded()
            torch, _ = import_local_stack(f"the {self.name!r} backend")
            items = [self._continuation_ids(loaded, p, c) for p, c in pairs]
            limit = self._input_limit(loaded)
            for (ids, _n), (prompt, _c) in zip(items, pairs, strict=True):
                if limit is not None and len(ids) > limit:
                    raise ValueError(
                        f"prompt+continuation has {len(ids)} tokens, more than {limit} "
                        f"(max_input_tokens); prompt starts {prompt[:60]!r}"
                    )
            scores: list[ContinuationScore | None] = [None] * len(items)
            order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
            budget_positions = max(1, _SCORE_LOGITS_BUDGET // loaded.vocab_size)
            chunk: list[int] = []
            chunk_cont = 0
            for i in order:
                n_cont = items[i][1]
                grown = max(chunk_cont, n_cont)
                if chunk and (
                    len(chunk) >= self.batch_size
                    or (len(chunk) + 1) * (grown + 1) > budget_positions
                ):
                    self._score_chunk(loaded, torch, [(j, *items[j]) for j in chunk], scores)
                    chunk, chunk_cont = [], 0
                    grown = n_cont
                chunk.append(i)
                chunk_cont = grown
            if chunk:
                self._score_chunk(loaded, torch, [(j, *items[j]) for j in chunk], scores)
            return [s for s in scores if s is not None]

    async def ascore_continuations(
        self, pairs: Sequence[tuple[str, str]]
    ) -> list[ContinuationScore]:
        """:meth:`score_continuations` in a worker thread, leaving the event loop free."""
        return await asyncio.to_thread(self.score_continuations, list(pairs))

    def _continuation_ids(
        self, loaded: _Loaded, prompt: str, continuation: str
    ) -> tuple[list[int], int]:
        prompt_ids = self._encode(loaded, prompt)
        full_ids = self._encode(loaded, prompt + continuation)
        common = 0
        for a, b in zip(prompt_ids, full_ids, strict=False):
            if a != b:
                break
            common += 1
        if common == 0 and full_ids:
            bos = loaded.tokenizer.bos_token_id
            if bos is not None:
                full_ids = [int(bos), *full_ids]
            common = 1
        return full_ids, max(0, len(full_ids) - common)

    def _score_chunk(
        self,
        loaded: _Loaded,
        torch: Any,
        chunk: list[tuple[int, list[int], int]],
        scores: list[ContinuationScore | None],
    ) -> None:
        """Score one padded batch: only the last ``max_cont + 1`` positions get logits."""
        max_cont = max(n for _i, _ids, n in chunk)
        if max_cont == 0:
            for index, _ids, _n in chunk:
                scores[index] = ContinuationScore(sum_logprob=0.0, mean_logprob=0.0, n_tokens=0)
            return
        width = max(len(ids) for _i, ids, _n in chunk)
        input_ids = torch.full((len(chunk), width), loaded.pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (_index, ids, _n) in enumerate(chunk):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        input_ids = input_ids.to(loaded.device)
        attention = attention.to(loaded.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = max_cont + 1
        kwargs: dict[str, Any] = {"use_cache": False}
        if loaded.logits_kwarg:
            kwargs[loaded.logits_kwarg] = keep
        with torch.inference_mode():
            out = loaded.model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions, **kwargs
            )
            # logits[:, j] predicts the token after position width - keep + j.
            logits = out.logits[:, -keep:, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, (index, ids, n_cont) in enumerate(chunk):
                if n_cont == 0:
                    scores[index] = ContinuationScore(sum_logprob=0.0, mean_logprob=0.0, n_tokens=0)
                    continue
                targets = torch.tensor(ids[-n_cont:], device=logp.device)
                predictors = logp[row, keep - 1 - n_cont : keep - 1, :]
                token_logps = predictors.gather(-1, targets[:, None]).squeeze(-1)
                total = float(token_logps.sum())
                scores[index] = ContinuationScore(
                    sum_logprob=total, mean_logprob=total / n_cont, n_tokens=n_cont
                )


# --- helpers -----------------------------------------------------------------------------------


def _failure(kind: Literal["client_error", "backend"], message: str) -> Completion:
    return Completion(failure=Failure(kind=kind, message=message))


def _reset(row: _Row) -> None:
    row.out_ids.clear()
    row.text_ends.clear()
    row.logprobs.clear()
    row.finish_reason = None
    row.cut = None
    if row.generator is not None and row.params.seed is not None:
        row.generator.manual_seed(row.params.seed)


def _text_ids(row: _Row, loaded: _Loaded) -> list[int]:
    """Generated ids that make up the text (a final EOS is not text)."""
    if row.out_ids and row.out_ids[-1] in loaded.eos_ids:
        return row.out_ids[:-1]
    return row.out_ids


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _sample(torch: Any, logits: Any, params: DecodingParams, generator: Any) -> int:
    """Draw one token at ``params.temperature`` from the ``top_p`` nucleus of ``logits``.

    Inverse-CDF sampling with one uniform draw from the request's own generator: as exact as
    ``torch.multinomial`` and much cheaper over a 262k vocabulary on CPU.
    """
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    ids = None
    if params.top_p < 1.0:
        # The nucleus is nearly always a few hundred tokens at most: sorting only the top k
        # (growing k until they hold top_p of the mass) is exact and far cheaper than sorting
        # the whole vocabulary.
        vocab = probs.shape[-1]
        k = min(256, vocab)
        while True:
            top_probs, top_ids = torch.topk(probs, k)
            if k == vocab or float(top_probs.sum()) >= params.top_p:
                break
            k = min(4 * k, vocab)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        outside = (top_probs.cumsum(-1) - top_probs) >= params.top_p
        probs, ids = top_probs.masked_fill(outside, 0.0), top_ids
    cdf = probs.cumsum(-1)
    draw = torch.rand((), generator=generator, device=cdf.device) * cdf[-1]
    index = int(torch.searchsorted(cdf, draw, right=True).clamp(max=cdf.shape[-1] - 1))
    return int(ids[index]) if ids is not None else index
