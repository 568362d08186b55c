"""The hand-written batched decoder against ``model.generate`` as an oracle.

Tiny randomly initialised models (2 layers, Llama and Gemma 3 with a sliding window shorter
than the prompts) and a real word-level tokenizer built here: no download, a second to run.
Greedy decoding of a batch of prompts of different lengths (left padding), with different
``max_tokens`` per row (rows leave the batch and the KV cache mid-decode) and an
end-of-sequence token that some rows produce, must give exactly the token ids that
``model.generate`` gives for each prompt alone.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from simfarm.backends.local_decoder import BatchDecoder, DecodeRow, LoadedModel  # noqa: E402
from simfarm.types import DecodingParams  # noqa: E402

WORDS = " ".join(
    [
        "the a cat dog sat on mat ran to park red blue green big small",
        "one two three four five six seven eight nine ten",
        "and or but if then when where why how what who is are was were",
    ]
).split()
PROMPTS = [
    "the cat sat on the mat",
    "one",
    "red blue green big small one two three four five six seven",
    "why is the dog big",
    "if then",
]
MAX_NEW = [12, 7, 12, 3, 10]


def word_tokenizer() -> Any:
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>")
    raw = tokenizers.Tokenizer(model)
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    raw.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def tiny_model(kind: str, vocab_size: int) -> Any:
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.2,
    }
    if kind == "llama":
        config = transformers.LlamaConfig(**common)
        model_class = transformers.LlamaForCausalLM
    else:
        config = transformers.Gemma3TextConfig(
            **common,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        )
        model_class = transformers.Gemma3ForCausalLM
    torch.manual_seed(0)
    model = model_class(config).to(torch.float32).eval()
    return model


def reference(model: Any, ids: list[int], max_new: int, eos: list[int]) -> list[int]:
    """Greedy ids from ``model.generate`` for one prompt, unpadded, up to and including the
    first end-of-sequence token."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
        )
    new = out[0, len(ids) :].tolist()
    for i, token in enumerate(new):
        if token in eos:
            return new[: i + 1]
    return new


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_batched_greedy_equals_generate(kind: str) -> None:
    tokenizer = word_tokenizer()
    model = tiny_model(kind, len(tokenizer))
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(p) for p in prompts}) > 3  # really different lengths: left padding
    # An end-of-sequence token that the first prompt produces mid-answer, so rows also leave
    # the batch by producing it.
    eos_token = reference(model, prompts[0], 4, [tokenizer.eos_token_id])[-1]
    model.generation_config.eos_token_id = eos_token
    loaded = LoadedModel.describe(model, tokenizer, torch.device("cpu"))
    eos = sorted(loaded.eos_ids)
    assert eos == sorted({eos_token, tokenizer.eos_token_id})
    expected = [reference(model, p, n, eos) for p, n in zip(prompts, MAX_NEW, strict=True)]
    assert any(e[-1] in eos for e in expected)  # some rows stop at EOS...
    assert any(len(e) == n for e, n in zip(expected, MAX_NEW, strict=True))  # ...some at length

    rows = [
        DecodeRow(input_ids=p, params=DecodingParams(max_tokens=n, temperature=0.0), max_new=n)
        for p, n in zip(prompts, MAX_NEW, strict=True)
    ]
    decoder = BatchDecoder(loaded, torch)
    decoder.decode(rows)
    assert [row.out_ids for row in rows] == expected
    for row, ids in zip(rows, expected, strict=True):
        assert row.finish_reason == ("stop" if ids[-1] in eos else "length")
        completion = decoder.completion(row)
        text_ids = ids[:-1] if ids[-1] in eos else ids
        assert completion.text == tokenizer.decode(text_ids, skip_special_tokens=True)
        assert completion.completion_tokens == len(ids)
        assert completion.prompt_tokens == len(row.input_ids)

    # Decoding the same rows again (as after a failed batch) gives the same answers.
    decoder.decode(rows[::-1])
    assert [row.out_ids for row in rows] == expected
