"""The ``vllm`` backend: vLLM's offline engine (``vllm.LLM``) in this process, for GPU users.

vLLM schedules and batches internally (continuous batching, paged KV cache), so the runner
hands it large batches and one ``LLM.generate`` call answers them all. Every request gets its
own ``SamplingParams`` (temperature, ``top_p``, ``max_tokens``, stop strings, seed, logprobs).

Chat requests are rendered here, with the model's chat template, and sent to ``generate`` as
token ids — rather than through ``LLM.chat`` — so that one call can mix chat and raw-prompt
requests, and so that a base model without a template gets the same plain-transcript rendering
(and implied stop strings) as in the ``transformers`` backend
(:func:`~simfarm.backends.local_prompt.render_prompt`).

The translation between simfarm's records and vLLM's (:func:`sampling_kwargs`,
:func:`prompt_input`, :func:`translate_request`, :func:`completion_from_output`) is plain
functions over plain values, testable without vLLM or a GPU. vLLM itself is imported only when
the engine is built; without it, :meth:`VLLMBackend.from_spec` raises
:class:`~simfarm.errors.MissingExtraError` naming ``simfarm[vllm]``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simfarm.backends.base import BackendSpec
from simfarm.backends.local_base import LocalBatchedBackend, failed
from simfarm.backends.local_prompt import ChatTokenizer, render_prompt
from simfarm.backends.model_digest import local_model_identity
from simfarm.errors import BackendError, ConfigError, MissingExtraError
from simfarm.types import Completion, CompletionRequest, DecodingParams, Failure, TokenLogprob

_FEATURE = "the 'vllm' backend"


class VLLMOptions(BaseModel):
    """Options of the ``vllm`` backend (``backend.options`` in a persona file)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights and activations; ``auto`` follows the checkpoint (float16 for float32 ones)."""
    batch_size: int = Field(default=256, ge=1)
    """Requests per ``generate`` call; vLLM batches within it as memory allows."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=1)
    """Context length to reserve KV cache for (None: the model's)."""
    trust_remote_code: bool = False
    revision: str | None = None
    seed: int = 0
    """The engine's seed (requests with their own ``seed`` use that instead)."""
    enforce_eager: bool = False
    """Skip CUDA-graph capture: faster start, slower decoding."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further keyword arguments for ``vllm.LLM`` (e.g. ``quantization``)."""


# --- pure translation --------------------------------------------------------------------------


@dataclass(frozen=True)
class VLLMInput:
    """One request in vLLM's terms."""

    prompt: dict[str, Any]
    """A vLLM ``TextPrompt`` (``{"prompt": str}``) or ``TokensPrompt``
    (``{"prompt_token_ids": [...]}``)."""
    sampling: dict[str, Any]
    """Keyword arguments for ``vllm.SamplingParams``."""
    strip_output: bool = False
    """Strip whitespace around the answer (a turn of a plain transcript)."""


def sampling_kwargs(params: DecodingParams, extra_stop: Sequence[str] = ()) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for ``params``.

    vLLM's ``logprobs=k`` returns, per generated token, the chosen token plus the ``k`` most
    likely ones; ``0`` returns the chosen token only, ``None`` nothing.
    """
    stop = [*(params.stop or ()), *extra_stop]
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "stop": stop or None,
        "seed": params.seed,
        "logprobs": (params.top_logprobs or 0) if params.logprobs else None,
    }
    return kwargs


def prompt_input(text: str, templated: bool, tokenizer: Any | None) -> dict[str, Any]:
    """The vLLM prompt for rendered ``text``.

    Text that already holds the special tokens (chat-template output, or a prompt starting with
    the BOS text) is tokenized here without adding them, and sent as token ids: sent as text,
    vLLM would add a second BOS.
    """
    bos = getattr(tokenizer, "bos_token", None) if tokenizer is not None else None
    if tokenizer is not None and (templated or (bos and text.startswith(bos))):
        ids = tokenizer.encode(text, add_special_tokens=False)
        return {"prompt_token_ids": list(ids)}
    return {"prompt": text}


def translate_request(request: CompletionRequest, tokenizer: ChatTokenizer | None) -> VLLMInput:
    """Render ``request`` and translate its parameters (``ValueError`` if the chat template
    rejects its messages)."""
    rendered = render_prompt(request, tokenizer)
    return VLLMInput(
        prompt=prompt_input(rendered.text, rendered.templated, tokenizer),
        sampling=sampling_kwargs(request.params, rendered.extra_stop),
        strip_output=rendered.strip_output,
    )


def _logprob_value(entry: Any) -> float:
    """A vLLM ``Logprob`` (``.logprob``) or a bare float."""
    return float(getattr(entry, "logprob", entry))


def _decoded(entry: Any, token_id: int) -> str:
    token = getattr(entry, "decoded_token", None)
    return token if token is not None else f"<token {token_id}>"


def convert_logprobs(
    token_ids: Sequence[int], positions: Sequence[dict[int, Any]], top_logprobs: int
) -> list[TokenLogprob]:
    """vLLM sample logprobs -> :class:`TokenLogprob` per generated token.

    ``positions[i]`` maps token id -> ``Logprob(logprob, rank, decoded_token)`` for position
    ``i``: the chosen token (``token_ids[i]``) and the top-k alternatives (vLLM's
    ``FlatLogprobs`` indexes the same way). The alternatives kept are the ``top_logprobs``
    most likely, which include the chosen token when it ranks among them.
    """
    result: list[TokenLogprob] = []
    for token_id, position in zip(token_ids, positions, strict=False):
        position = position or {}
        chosen = position.get(token_id)
        top: dict[str, float] = {}
        if top_logprobs:
            ranked = sorted(position.items(), key=lambda item: -_logprob_value(item[1]))
            for alt_id, entry in ranked[:top_logprobs]:
                top.setdefault(_decoded(entry, alt_id), _logprob_value(entry))
        result.append(
            TokenLogprob(
                token=_decoded(chosen, token_id) if chosen is not None else f"<token {token_id}>",
                logprob=_logprob_value(chosen) if chosen is not None else float("-inf"),
                top_logprobs=top,
            )
        )
    return result


def completion_from_output(
    output: Any,
    params: DecodingParams,
    *,
    strip_output: bool = False,
    latency_s: float = 0.0,
) -> Completion:
    """A vLLM ``RequestOutput`` (first sample) -> :class:`Completion`.

    Reads ``output.prompt_token_ids`` and ``output.outputs[0]``'s ``text``, ``token_ids``,
    ``logprobs`` and ``finish_reason`` (``"stop"``, ``"length"``, or ``"abort"``).
    """
    if not getattr(output, "outputs", None):
        return Completion(failure=Failure(kind="backend", message="vLLM returned no output"))
    sample = output.outputs[0]
    token_ids = list(getattr(sample, "token_ids", None) or [])
    text = str(sample.text)
    if strip_output:
        text = text.strip()
    logprobs = None
    if params.logprobs:
        logprobs = convert_logprobs(
            token_ids, list(sample.logprobs or []), params.top_logprobs or 0
        )
    finish_reason = getattr(sample, "finish_reason", None)
    if finish_reason == "abort":
        return Completion(failure=Failure(kind="backend", message="vLLM aborted the request"))
    return Completion(
        text=text,
        logprobs=logprobs,
        prompt_tokens=len(getattr(output, "prompt_token_ids", None) or []),
        completion_tokens=len(token_ids),
        cost_usd=0.0,
        latency_s=latency_s,
        finish_reason=finish_reason,
    )


# --- the backend -------------------------------------------------------------------------------


def _import_vllm(feature: str = _FEATURE) -> Any:
    """``vllm``, or a MissingExtraError naming ``feature`` and ``simfarm[vllm]``."""
    try:
        return importlib.import_module("vllm")
    except ModuleNotFoundError as error:
        raise MissingExtraError(feature, "vllm", error.name or "vllm") from error


class VLLMBackend(LocalBatchedBackend[tuple[VLLMInput, DecodingParams]]):
    """A model served by an in-process ``vllm.LLM`` (built on first use)."""

    name: ClassVar[str] = "vllm"
    options_model: ClassVar[type[BaseModel]] = VLLMOptions
    OPERATIONAL_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"batch_size", "gpu_memory_utilization", "enforce_eager", "tensor_parallel_size"}
    )
    """Options that change how vLLM schedules and runs the model, never which model or how it
    decodes: left out of :meth:`identity` (like batch composition, they can move only
    floating-point noise). ``engine_kwargs`` are identity as a whole: they can change
    anything (quantization, RoPE scaling, ...)."""

    def __init__(self, model: str, options: VLLMOptions) -> None:
        super().__init__(options.batch_size)
        self.model_id = model
        self.options = options
        self._llm: Any = None
        self._identity: dict[str, Any] | None = None

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> VLLMBackend:
        if importlib.util.find_spec("vllm") is None:
            raise MissingExtraError(_FEATURE, "vllm", "vllm")
        if not spec.model:
            raise ConfigError("the 'vllm' backend needs `model`: a Hugging Face hub id or folder")
        try:
            options = VLLMOptions.model_validate(spec.options)
        except ValidationError as error:
            raise ConfigError(f"invalid options for the 'vllm' backend: {error}") from error
        return cls(spec.model, options)

    def identity(self) -> dict[str, Any]:
        """Backend, model and every option that can change an answer (``revision``,
        ``seed``, ``max_model_len``, ``engine_kwargs``, ...); for a local folder its content
        digest instead of its path (computed once per backend instance)."""
        if self._identity is None:
            self._identity = local_model_identity(self.name, self.model_id, {})
        options = self.options.model_dump(mode="json", exclude=set(self.OPERATIONAL_FIELDS))
        return {**self._identity, "options": options}

    def _engine(self) -> Any:
        if self._llm is None:
            vllm = _import_vllm()
            o = self.options
            kwargs: dict[str, Any] = {
                "model": self.model_id,
                "dtype": o.dtype,
                "tensor_parallel_size": o.tensor_parallel_size,
                "gpu_memory_utilization": o.gpu_memory_utilization,
                "trust_remote_code": o.trust_remote_code,
                "seed": o.seed,
                "enforce_eager": o.enforce_eager,
            }
            if o.max_model_len is not None:
                kwargs["max_model_len"] = o.max_model_len
            if o.revision is not None:
                kwargs["revision"] = o.revision
            kwargs.update(o.engine_kwargs)
            try:
                self._llm = vllm.LLM(**kwargs)
            except Exception as error:
                raise BackendError(
                    f"could not start vLLM for {self.model_id!r}: {type(error).__name__}: {error}"
                ) from error
        return self._llm

    # -- completions (called by LocalBatchedBackend under the lock) --

    def _ready(self) -> None:
        self._engine()

    def _prepare(self, request: CompletionRequest) -> tuple[VLLMInput, DecodingParams] | Completion:
        try:
            return translate_request(request, self._engine().get_tokenizer()), request.params
        except ValueError as error:
            return failed("client_error", str(error))

    def _run_batch(self, batch: list[tuple[VLLMInput, DecodingParams]]) -> list[Completion]:
        """One ``generate`` call (vLLM validates every request up front, so one over-long
        prompt fails the call; the base class then runs the requests one by one)."""
        vllm = _import_vllm()
        outputs = self._engine().generate(
            [item.prompt for item, _params in batch],
            sampling_params=[vllm.SamplingParams(**item.sampling) for item, _params in batch],
            use_tqdm=False,
        )
        return [
            completion_from_output(output, params, strip_output=item.strip_output)
            for (item, params), output in zip(batch, outputs, strict=True)
        ]

    def _batch_failure(self, error: Exception) -> Completion:
        kind: Literal["client_error", "backend"] = (
            "client_error" if isinstance(error, ValueError) else "backend"
        )
        return failed(kind, f"vLLM failed: {type(error).__name__}: {error}")

    async def aclose(self) -> None:
        def release() -> None:
            with self._lock:
                self._llm = None
                gc.collect()
                try:
                    torch = importlib.import_module("torch")
                except ModuleNotFoundError:
                    return
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

        await asyncio.to_thread(release)
