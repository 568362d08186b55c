"""The policy: LoRA through peft, the prompt format, reproducible batched sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.training.config import LoraSpec, ModelSpec
from simfarm.training.policy import cut_at_stop, format_prompt, generate, load_policy

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


def test_stop_strings_end_and_cut_responses(tiny_model_dir: Path) -> None:
    assert cut_at_stop("Paris.\n\n### Instruction:\nNext", ["###"]) == "Paris.\n\n"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
    policy = load_policy(_spec(tiny_model_dir))
    prompts = [format_prompt(None, "Say hi."), format_prompt(None, "List three colors.")]
    free = generate(policy, prompts, n=4, max_new_tokens=24, temperature=1.0, seed=5)
    stop = sorted(
        {text[len(text) // 2 : len(text) // 2 + 2] for row in free for text in row if len(text) > 8}
    )
    assert stop, free
    stopped = generate(policy, prompts, n=4, max_new_tokens=24, temperature=1.0, seed=5, stop=stop)
    for row_free, row_stopped in zip(free, stopped, strict=True):
        for text, cut in zip(row_free, row_stopped, strict=True):
            assert not any(s in cut for s in stop)
            assert text.startswith(cut) and cut == cut_at_stop(text, stop).strip()
