"""The transformers backend on a real model: the converted embedded Gemma 3 270M folder, loaded
as an ordinary local Hugging Face checkpoint (no network).

The shared backend runs padded batches (``batch_invariant: false``) in float32, so the batched
decoding path itself is checked against one-by-one decoding; the default, batch-invariant
scoring is checked bit for bit in bfloat16, where padding noise is largest.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from simfarm.backends import BackendSpec, create_backend
from simfarm.backends.embedded import ensure_converted
from simfarm.backends.local_prompt import FALLBACK_CHAT_STOPS, plain_chat_prompt, render_prompt
from simfarm.backends.model_digest import folder_digest
from simfarm.backends.transformers_local import TransformersBackend
from simfarm.errors import BackendError, ConfigError
from simfarm.types import ChatMessage, Completion, CompletionRequest, DecodingParams

pytestmark = pytest.mark.slow

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "def add(a, b):\n    return",
    "Water boils at a temperature of",
    "Once upon a time,",
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The converted Gemma folder (converted once per machine, reused afterwards)."""
    return ensure_converted()


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Iterator[TransformersBackend]:
    spec = BackendSpec(
        name="transformers",
        model=str(model_dir),
        options={
            "dtype": "float32",
            "device": "cpu",
            "batch_size": 8,
            "batch_invariant": False,
            "max_input_tokens": 64,
        },
    )
    built = create_backend(spec)
    assert isinstance(built, TransformersBackend)
    built.load()
    yield built
    asyncio.run(built.aclose())


def _complete(backend: TransformersBackend, requests: list[CompletionRequest]) -> list[Completion]:
    return asyncio.run(backend.complete(requests))


def _prompt(text: str, **params: object) -> CompletionRequest:
    return CompletionRequest(prompt=text, params=DecodingParams(**params))


def test_identity_names_the_folder_content_and_options(
    backend: TransformersBackend, model_dir: Path
) -> None:
    identity = backend.identity()
    assert identity == {
        "backend": "transformers",
        "model": model_dir.resolve().name,
        "options": {"dtype": "float32", "trust_remote_code": False, "revision": None},
        "content_sha256": folder_digest(model_dir),
    }
    assert backend.max_concurrency == 1
    assert backend.batch_size == 8


def test_batched_greedy_equals_one_by_one(backend: TransformersBackend) -> None:
    requests = [_prompt(p, max_tokens=10, logprobs=True) for p in PROMPTS]
    sent_before = backend.requests_sent
    batched = _complete(backend, requests)
    singles = [_complete(backend, [r])[0] for r in requests]
    assert backend.requests_sent == sent_before + 2 * len(requests)
    for together, alone in zip(batched, singles, strict=True):
        assert together.ok and alone.ok
        assert together.text == alone.text
        assert together.text.strip()
        assert together.completion_tokens == alone.completion_tokens
        assert together.prompt_tokens == alone.prompt_tokens > 0
        assert together.cost_usd == 0.0
        assert together.latency_s > 0
        assert together.logprobs is not None and alone.logprobs is not None
        for a, b in zip(together.logprobs, alone.logprobs, strict=True):
            assert a.token == b.token
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
    assert "Paris" in batched[0].text


def test_answers_do_not_depend_on_the_batch_by_default(model_dir: Path) -> None:
    """Bit for bit: the same request alone, and amid others of other lengths (padding), in
    bfloat16 (with ``batch_invariant: false`` in the options this fails)."""
    options = {"dtype": "bfloat16", "device": "cpu", "batch_size": 8}
    bf16 = create_backend(BackendSpec(name="transformers", model=str(model_dir), options=options))
    assert isinstance(bf16, TransformersBackend) and bf16.rows_per_pass == 1
    try:
        params = {"max_tokens": 6, "logprobs": True, "top_logprobs": 20}
        requests = [_prompt(p, **params) for p in PROMPTS]
        together = _complete(bf16, [_prompt("word " * 40, **params), *requests])[1:]
        apart = [_complete(bf16, [r])[0] for r in requests]
        assert [a.model_dump(exclude={"latency_s"}) for a in together] == [
            a.model_dump(exclude={"latency_s"}) for a in apart
        ]
    finally:
        asyncio.run(bf16.aclose())


def test_each_request_keeps_its_own_max_tokens(backend: TransformersBackend) -> None:
    limits = [1, 5, 9, 0]
    results = _complete(
        backend, [_prompt(p, max_tokens=n) for p, n in zip(PROMPTS, limits, strict=True)]
    )
    for result, limit in zip(results, limits, strict=True):
        assert result.ok
        assert result.completion_tokens <= limit
        if result.finish_reason == "length":
            assert result.completion_tokens == limit
    assert results[3].text == "" and results[3].finish_reason == "length"


def test_stop_strings_truncate_text_and_logprobs(backend: TransformersBackend) -> None:
    # Greedy continues "1, 2, 3, 4," with " 5, 6, 7, 8, ...".
    free, stopped = _complete(
        backend,
        [
            _prompt("1, 2, 3, 4,", max_tokens=12),
            _prompt("1, 2, 3, 4,", max_tokens=12, stop=[" 7", "never"], logprobs=True),
        ],
    )
    assert free.text.startswith(" 5, 6, 7")
    assert stopped.text == " 5, 6,"
    assert stopped.finish_reason == "stop"
    assert stopped.logprobs is not None
    assert "".join(lp.token for lp in stopped.logprobs) == stopped.text


def test_logprobs_and_top_logprobs(backend: TransformersBackend) -> None:
    (result,) = _complete(
        backend, [_prompt(PROMPTS[0], max_tokens=6, logprobs=True, top_logprobs=4)]
    )
    assert result.logprobs is not None and len(result.logprobs) == result.completion_tokens
    for lp in result.logprobs:
        assert math.isfinite(lp.logprob) and lp.logprob <= 0
        assert len(lp.top_logprobs) <= 4
        # Greedy: the chosen token is the most likely one.
        assert lp.top_logprobs[lp.token] == pytest.approx(lp.logprob)
        assert max(lp.top_logprobs.values()) == pytest.approx(lp.logprob)
    (plain,) = _complete(backend, [_prompt(PROMPTS[0], max_tokens=3)])
    assert plain.logprobs is None


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(
    backend: TransformersBackend,
) -> None:
    def sampled(seed: int) -> CompletionRequest:
        return _prompt("Once upon a time", max_tokens=12, temperature=1.0, top_p=0.95, seed=seed)

    alone = _complete(backend, [sampled(7)])[0]
    in_batch = _complete(backend, [_prompt(PROMPTS[1], max_tokens=4), sampled(7), sampled(8)])
    assert in_batch[1].text == alone.text
    assert in_batch[2].text != alone.text


def test_a_failing_request_fails_alone(backend: TransformersBackend) -> None:
    too_long = _prompt("word " * 200, max_tokens=4)  # over max_input_tokens=64
    results = _complete(backend, [_prompt(PROMPTS[0], max_tokens=4), too_long])
    assert results[0].ok and "Paris" in results[0].text
    assert results[1].failure is not None
    assert results[1].failure.kind == "client_error"
    assert "max_input_tokens" in results[1].failure.message


def test_chat_without_template_uses_a_plain_transcript(backend: TransformersBackend) -> None:
    messages = [
        ChatMessage(role="system", content="You answer geography questions briefly."),
        ChatMessage(role="user", content="What is the capital of France?"),
    ]
    request = CompletionRequest(messages=messages, params=DecodingParams(max_tokens=24))
    assert backend.tokenizer.chat_template is None
    assert backend.render_prompt(request) == plain_chat_prompt(messages)
    assert plain_chat_prompt(messages).endswith(
        "User: What is the capital of France?\n\nAssistant:"
    )
    (result,) = _complete(backend, [request])
    assert result.ok
    assert result.text == result.text.strip() and result.text
    assert not any(stop.strip() in result.text for stop in FALLBACK_CHAT_STOPS)


def test_chat_template_output_gets_no_second_bos(backend: TransformersBackend) -> None:
    tokenizer = backend.tokenizer
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    try:
        request = CompletionRequest(
            messages=[ChatMessage(role="user", content="Name a colour.")],
            params=DecodingParams(max_tokens=5),
        )
        rendered = render_prompt(request, tokenizer)
        assert rendered.templated and rendered.text.startswith("<bos><start_of_turn>user")
        assert rendered.extra_stop == ()
        (result,) = _complete(backend, [request])
        assert result.ok
        ids = tokenizer(rendered.text, add_special_tokens=False)["input_ids"]
        assert ids.count(tokenizer.bos_token_id) == 1
        assert result.prompt_tokens == len(ids)
    finally:
        tokenizer.chat_template = None


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="batch_sizes"):
        create_backend(BackendSpec(name="transformers", model="x", options={"batch_sizes": 2}))
    with pytest.raises(ConfigError, match="model"):
        create_backend(BackendSpec(name="transformers"))


def test_an_unloadable_model_raises_backend_error(tmp_path: Path) -> None:
    backend = create_backend(
        BackendSpec(
            name="transformers",
            model=str(tmp_path / "no-such-model"),
            options={"local_files_only": True, "device": "cpu"},
        )
    )
    with pytest.raises(BackendError, match="could not load"):
        asyncio.run(backend.complete([_prompt("hi")]))
