"""Batched incremental decoding of a Hugging Face causal LM, one request per row.

Written here rather than calling ``model.generate`` because each request in a batch may
carry its own decoding parameters: temperature, ``top_p``, ``max_tokens``, stop strings and —
most importantly — its own seed. Each sampled request draws from its own ``torch.Generator``
seeded with ``params.seed``, so its output does not depend on which other requests happened to
share its batch (greedy requests are independent of batching too, up to floating-point noise
from padding; none at all when each batch holds one request, as local backends run by
default: ``batch_invariant``). A request that is finished is dropped from the batch (its rows
of the KV cache are removed), so one long answer does not make every short one pay for its
tail. Greedy decoding is checked token for token against ``model.generate``
(tests/backends/test_local_decoder.py).

Log-probabilities are those of the model's raw distribution (before temperature and
``top_p``), as OpenAI and vLLM report them.

torch is passed in, not imported, so this module imports without the ``local`` extra.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simfarm.types import Completion, DecodingParams, TokenLogprob

if TYPE_CHECKING:
    import torch


@dataclass
class LoadedModel:
    """A model and tokenizer ready to decode, with what the decoder must know about them."""

    model: Any
    tokenizer: Any
    device: Any
    eos_ids: frozenset[int]
    pad_id: int
    max_positions: int | None
    vocab_size: int
    cache_kwarg: str
    """The forward argument that takes the KV cache (transformers 5 renamed
    ``past_key_values`` to ``cache``)."""
    logits_kwarg: str | None
    """The forward argument that limits logits to the last positions (``logits_to_keep``,
    ``num_logits_to_keep`` before transformers 4.50), if the model has one."""

    @classmethod
    def describe(cls, model: Any, tokenizer: Any, device: Any) -> LoadedModel:
        """Read end-of-sequence ids, padding, context length and forward-argument names
        off a loaded model and its tokenizer."""
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
        cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        logits_kwarg = next(
            (name for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), None
        )
        return cls(
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


@dataclass
class DecodeRow:
    """One request's state during batched decoding."""

    input_ids: list[int]
    params: DecodingParams
    max_new: int
    """Tokens it may still generate (its ``max_tokens``, capped by the context length)."""
    stops: tuple[str, ...] = ()
    generator: torch.Generator | None = None
    """Its own random generator when sampling (None: greedy)."""
    top_k: int = 0
    """How many alternatives to report per token (with ``params.logprobs``)."""
    strip_output: bool = False
    out_ids: list[int] = field(default_factory=list)
    text_ends: list[int] = field(default_factory=list)
    """Length of the decoded text after each generated token (tracked only with stops)."""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    cut: int | None = None
    """Where a stop string starts in the decoded text (text is cut there)."""

    def reset(self) -> None:
        """Back to the state before decoding (a failed batch is rerun row by row)."""
        self.out_ids.clear()
        self.text_ends.clear()
        self.logprobs.clear()
        self.finish_reason = None
        self.cut = None
        if self.generator is not None and self.params.seed is not None:
            self.generator.manual_seed(self.params.seed)


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


class BatchDecoder:
    """Decodes batches of :class:`DecodeRow` on one loaded model (not thread-safe: the
    backend calls it under its lock)."""

    def __init__(self, loaded: LoadedModel, torch: Any) -> None:
        self.loaded = loaded
        self.torch = torch
        self._token_str_cache: dict[int, str] = {}

    def decode(self, rows: list[DecodeRow]) -> None:
        """Batched incremental decoding with a KV cache; fills each row's output in place
        (rows are reset first, so a batch can be decoded again)."""
        torch, loaded = self.torch, self.loaded
        model = loaded.model
        device = loaded.device
        for row in rows:
            row.reset()
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
                self._step(live, logits)
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

    def _step(self, live: list[DecodeRow], logits: Any) -> None:
        """Pick the next token of every unfinished row in ``live`` from ``logits[i]``."""
        torch, loaded = self.torch, self.loaded
        want_logprobs = any(row.params.logprobs for row in live)
        logp = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        greedy = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(live):
            if row.finish_reason is not None:
                continue
            if row.generator is None:
                token = int(greedy[i])
            else:
                token = sample_token(torch, logits[i], row.params, row.generator)
            row.out_ids.append(token)
            if logp is not None and row.params.logprobs:
                top: dict[str, float] = {}
                if row.top_k:
                    values, ids = torch.topk(logp[i], row.top_k)
                    for value, alt in zip(values.tolist(), ids.tolist(), strict=True):
                        top.setdefault(self.token_str(alt), float(value))
                row.logprobs.append(
                    TokenLogprob(
                        token=self.token_str(token),
                        logprob=float(logp[i, token]),
                        top_logprobs=top,
                    )
                )
            if token in loaded.eos_ids:
                row.finish_reason = "stop"
                continue
            if row.stops:
                text = loaded.tokenizer.decode(self._text_ids(row), skip_special_tokens=True)
                row.text_ends.append(len(text))
                cut = truncate_at_stop(text, row.stops)
                if cut is not None:
                    row.cut = cut
                    row.finish_reason = "stop"
                    continue
            if len(row.out_ids) >= row.max_new:
                row.finish_reason = "length"

    def completion(self, row: DecodeRow) -> Completion:
        """The decoded row as a :class:`Completion` (text cut at a stop string, logprobs of
        the tokens that make up the text; ``latency_s`` is left to the caller)."""
        text = self.loaded.tokenizer.decode(self._text_ids(row), skip_special_tokens=True)
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
            finish_reason=row.finish_reason or "length",
        )

    def token_str(self, token_id: int) -> str:
        """A token's text (cached: the same few thousand tokens recur in every answer)."""
        text = self._token_str_cache.get(token_id)
        if text is None:
            text = self.loaded.tokenizer.decode([token_id])
            self._token_str_cache[token_id] = text
        return text

    def _text_ids(self, row: DecodeRow) -> list[int]:
        """Generated ids that make up the text (a final EOS is not text)."""
        if row.out_ids and row.out_ids[-1] in self.loaded.eos_ids:
            return row.out_ids[:-1]
        return row.out_ids


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def sample_token(torch: Any, logits: Any, params: DecodingParams, generator: Any) -> int:
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
