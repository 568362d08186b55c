"""Fixtures for the training tests: a tiny random causal LM in hub layout, with a real
byte-level BPE tokenizer trained here (offline, in well under a second).

``tiny_model_dir`` (session-scoped) is the folder; recipes load it as
``ModelSpec(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu")``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DATA = REPO_ROOT / "recipes" / "data"


def _corpus() -> list[str]:
    from simfarm.training.policy import PROMPT_NO_INPUT, PROMPT_WITH_INPUT

    texts = [PROMPT_NO_INPUT, PROMPT_WITH_INPUT]
    for path in sorted(BUNDLED_DATA.glob("*.jsonl")):
        texts.extend(path.read_text(encoding="utf-8").splitlines())
    return texts


def build_tiny_model(folder: Path, *, vocab_size: int = 512, hidden: int = 64) -> Path:
    """Write a 2-layer Llama-architecture model (random init, seed 0) and a byte-level BPE
    tokenizer trained on the bundled recipe data into ``folder`` (hub layout)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM with a real tokenizer, saved in hub layout (shared by the
    training tests of every recipe)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
