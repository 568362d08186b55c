"""The vllm backend without vLLM: the missing-extra error, and the pure translation between
simfarm's records and vLLM's, fed with plain objects shaped like vLLM's own
(``vllm.outputs.RequestOutput``, ``CompletionOutput``, ``vllm.logprobs.Logprob``)."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from simfarm.backends import BackendSpec, backend_class, create_backend, vllm_engine
from simfarm.backends.local_prompt import FALLBACK_CHAT_STOPS, plain_chat_prompt
from simfarm.backends.vllm_engine import (
    VLLMBackend,
    VLLMOptions,
    completion_from_output,
    convert_logprobs,
    sampling_kwargs,
    translate_request,
)
from simfarm.errors import MissingExtraError
from simfarm.types import ChatMessage, CompletionRequest, DecodingParams

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


# Shapes of vLLM's output records (the fields this backend reads).
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class TemplatedTokenizer:
    """Stands in for a tokenizer with a chat template (records how it was called)."""

    chat_template: str = "{{ messages }}"
    bos_token: str = "<s>"
    calls: list[tuple[str, bool]] = field(default_factory=list)

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        assert kwargs == {"tokenize": False, "add_generation_prompt": True}
        turns = "".join(f"[{m['role']}]{m['content']}" for m in conversation)
        return f"<s>{turns}[assistant]"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.calls.append((text, add_special_tokens))
        return [ord(ch) for ch in text]


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")
def test_missing_vllm_names_the_extra() -> None:
    assert backend_class("vllm") is VLLMBackend  # the module imports without vLLM
    with pytest.raises(MissingExtraError, match=r"simfarm\[vllm\]") as caught:
        create_backend(BackendSpec(name="vllm", model="Qwen/Qwen2.5-0.5B-Instruct"))
    assert caught.value.extra == "vllm" and caught.value.module == "vllm"


def test_modules_import_without_torch() -> None:
    code = (
        "import sys, simfarm.backends.vllm_engine, simfarm.backends.transformers_local, "
        "simfarm.backends.local_base, simfarm.backends.local_decoder, "
        "simfarm.backends.local_prompt, "
        "simfarm.backends.embedded; "
        "assert 'torch' not in sys.modules and 'vllm' not in sys.modules, 'eager import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sampling_kwargs() -> None:
    greedy = sampling_kwargs(DecodingParams())
    assert greedy == {
        "n": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 256,
        "stop": None,
        "seed": None,
        "logprobs": None,
    }
    sampled = sampling_kwargs(
        DecodingParams(temperature=0.7, top_p=0.9, max_tokens=5, stop=["\n"], seed=3),
        extra_stop=["\nUser:"],
    )
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9
    assert sampled["max_tokens"] == 5 and sampled["seed"] == 3
    assert sampled["stop"] == ["\n", "\nUser:"]
    assert sampling_kwargs(DecodingParams(logprobs=True))["logprobs"] == 0
    assert sampling_kwargs(DecodingParams(logprobs=True, top_logprobs=5))["logprobs"] == 5
    assert sampling_kwargs(DecodingParams(top_logprobs=5))["logprobs"] is None


def test_raw_prompts_go_as_text() -> None:
    tokenizer = TemplatedTokenizer()
    item = translate_request(CompletionRequest(prompt="Hello"), tokenizer)
    assert item.prompt == {"prompt": "Hello"}
    assert not item.strip_output and item.sampling["stop"] is None
    # A prompt that already starts with BOS text must not get a second BOS.
    item = translate_request(CompletionRequest(prompt="<s>Hello"), tokenizer)
    assert item.prompt == {"prompt_token_ids": [ord(c) for c in "<s>Hello"]}
    assert tokenizer.calls == [("<s>Hello", False)]


def test_chat_uses_the_template_and_sends_token_ids() -> None:
    tokenizer = TemplatedTokenizer()
    request = CompletionRequest(
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi"),
        ],
        params=DecodingParams(stop=["##"]),
    )
    item = translate_request(request, tokenizer)
    rendered = "<s>[system]Be brief.[user]Hi[assistant]"
    assert item.prompt == {"prompt_token_ids": [ord(c) for c in rendered]}
    assert tokenizer.calls == [(rendered, False)]
    assert item.sampling["stop"] == ["##"] and not item.strip_output


def test_chat_without_template_falls_back_to_the_transcript() -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    for tokenizer in (None, TemplatedTokenizer(chat_template="")):
        item = translate_request(CompletionRequest(messages=messages), tokenizer)
        assert item.prompt == {"prompt": plain_chat_prompt(messages)}
        assert item.sampling["stop"] == list(FALLBACK_CHAT_STOPS)
        assert item.strip_output


def _output(**sample: Any) -> RequestOutput:
    defaults: dict[str, Any] = {
        "index": 0,
        "text": " Paris.",
        "token_ids": [11, 12],
        "cumulative_logprob": -0.6,
        "logprobs": None,
        "finish_reason": "stop",
    }
    defaults.update(sample)
    return RequestOutput(
        request_id="0",
        prompt="The capital of France is",
        prompt_token_ids=[1, 2, 3, 4, 5],
        prompt_logprobs=None,
        outputs=[CompletionOutput(**defaults)],
    )


def test_completion_from_output() -> None:
    result = completion_from_output(_output(), DecodingParams(), latency_s=0.25)
    assert result.ok
    assert result.text == " Paris."
    assert result.prompt_tokens == 5 and result.completion_tokens == 2
    assert result.finish_reason == "stop" and result.cost_usd == 0.0
    assert result.latency_s == 0.25 and result.logprobs is None
    stripped = completion_from_output(
        _output(text=" Paris.\n"), DecodingParams(), strip_output=True
    )
    assert stripped.text == "Paris."
    aborted = completion_from_output(_output(finish_reason="abort"), DecodingParams())
    assert aborted.failure is not None and aborted.failure.kind == "backend"


def test_logprobs_from_output() -> None:
    positions = [
        # The chosen token ranks first.
        {
            11: Logprob(-0.1, 1, " Paris"),
            13: Logprob(-2.5, 2, " Lyon"),
            14: Logprob(-3.0, 3, " Nice"),
        },
        # Sampled token outside the top 2: vLLM returns it plus the top 2.
        {
            12: Logprob(-4.0, 9, "!"),
            15: Logprob(-0.2, 1, "."),
            16: Logprob(-1.9, 2, ","),
        },
    ]
    result = completion_from_output(
        _output(logprobs=positions), DecodingParams(logprobs=True, top_logprobs=2)
    )
    assert result.logprobs is not None
    first, second = result.logprobs
    assert (first.token, first.logprob) == (" Paris", pytest.approx(-0.1))
    assert first.top_logprobs == {" Paris": pytest.approx(-0.1), " Lyon": pytest.approx(-2.5)}
    assert (second.token, second.logprob) == ("!", pytest.approx(-4.0))
    assert second.top_logprobs == {".": pytest.approx(-0.2), ",": pytest.approx(-1.9)}
    # logprobs without alternatives (vLLM logprobs=0: the chosen token only).
    only_chosen = convert_logprobs([11], [{11: Logprob(-0.1, 1, " Paris")}], top_logprobs=0)
    assert only_chosen[0].top_logprobs == {} and only_chosen[0].logprob == pytest.approx(-0.1)


def test_options_are_validated() -> None:
    assert VLLMOptions().batch_size == 256
    with pytest.raises(ValueError):
        VLLMOptions.model_validate({"gpu_memory_utilisation": 0.5})


class StandInLLM:
    """Stands in for ``vllm.LLM`` (vLLM cannot run here): like vLLM, it validates every
    prompt before generating, so one over-long prompt fails the whole call."""

    max_model_len = 12

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[int] = []

    def get_tokenizer(self) -> TemplatedTokenizer:
        return TemplatedTokenizer()

    def generate(
        self, prompts: list[dict], sampling_params: list[Any], use_tqdm: bool
    ) -> list[RequestOutput]:
        self.calls.append(len(prompts))
        for prompt in prompts:
            if len(prompt["prompt"]) > self.max_model_len:
                raise ValueError(f"prompt longer than max_model_len={self.max_model_len}")
        return [
            RequestOutput(
                request_id=str(i),
                prompt=p["prompt"],
                prompt_token_ids=[1, 2],
                prompt_logprobs=None,
                outputs=[CompletionOutput(0, p["prompt"].upper(), [7], None, None, "stop")],
            )
            for i, p in enumerate(prompts)
        ]


def test_backend_batches_and_fails_only_the_bad_request(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = types.SimpleNamespace(LLM=StandInLLM, SamplingParams=lambda **kw: kw)
    monkeypatch.setattr(vllm_engine, "_import_vllm", lambda: stand_in)
    backend = VLLMBackend("org/model", VLLMOptions(batch_size=3, seed=5))
    prompts = ["one", "a prompt far too long for it", "two", "three"]
    results = asyncio.run(backend.complete([CompletionRequest(prompt=p) for p in prompts]))
    assert [r.text for r in results] == ["ONE", "", "TWO", "THREE"]
    assert results[1].failure is not None and results[1].failure.kind == "client_error"
    assert "max_model_len" in results[1].failure.message
    assert all(r.ok and r.latency_s > 0 for i, r in enumerate(results) if i != 1)
    # batch of 3 failed -> rerun one by one; then the last request in a batch of its own
    assert backend._llm.calls == [3, 1, 1, 1, 1]
    assert backend._llm.kwargs["seed"] == 5
    assert backend.requests_sent == 4
