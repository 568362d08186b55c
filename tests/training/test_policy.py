"""The policy: LoRA through peft, the prompt format, reproducible batched sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.training.config import LoraSpec, ModelSpec
from simfarm.training.policy import format_prompt, generate, load_policy

pytestmark = pytest.mark.slow


def _spec(folder: Path) -> ModelSpec:
    return ModelSpec(name_or_path=str(folder), dtype="float32", device="cpu")


def test_lora_wraps_and_trains_only_adapters(tiny_model_dir: Path) -> None:
    policy = load_policy(_spec(tiny_model_dir), LoraSpec(r=4))
    assert policy.is_peft
    trainable = [name for name, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    plain = load_policy(_spec(tiny_model_dir))
    assert not plain.is_peft


def test_prompt_format() -> None:
    with_input = format_prompt(None, "Fix it.", "he go")
    assert with_input.endswith("### Input:\nhe go\n\n### Response:\n")
    assert "### Input" not in format_prompt(None, "Say hi.")


def test_samples_do_not_depend_on_batching(tiny_model_dir: Path) -> None:
    policy = load_policy(_spec(tiny_model_dir), LoraSpec())
    prompts = [format_prompt(None, text) for text in ("Say hi.", "List three colors.", "Why?")]
    together = generate(policy, prompts, n=2, max_new_tokens=10, temperature=1.0, seed=3)
    alone = generate(
        policy, prompts[::-1], n=3, max_new_tokens=10, temperature=1.0, seed=3, batch_size=1
    )
    assert [row[:2] for row in alone[::-1]] == together
    assert together[0][0] != together[0][1], "different sample indices differ"
    other_seed = generate(policy, prompts, n=2, max_new_tokens=10, temperature=1.0, seed=4)
    assert other_seed != together
