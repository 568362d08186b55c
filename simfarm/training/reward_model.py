"""Load a trained reward model and score (prompt, response) pairs with it.

Used by best-of-n, expert iteration and PPO to turn responses into scalar rewards. The
checkpoint is the ``checkpoint/`` folder of a ``reward_model`` run (a LoRA adapter with the
score head, or full weights); its ``simfarm_checkpoint.json`` names the base model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm.errors import ConfigError
from simfarm.training.config import ModelSpec
from simfarm.training.policy import (
    import_torch_stack,
    is_adapter_folder,
    load_base_model,
    load_tokenizer,
    resolve_device,
)

CHECKPOINT_INFO = "simfarm_checkpoint.json"


@dataclass
class RewardModel:
    """A sequence-classification model with one output: the reward."""

    model: Any
    tokenizer: Any
    device: str


def checkpoint_model_spec(checkpoint: Path) -> ModelSpec:
    """The base model a simfarm checkpoint was trained from (from its info file)."""
    path = Path(checkpoint) / CHECKPOINT_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: not a simfarm checkpoint ({error.strerror})") from None
    return ModelSpec.model_validate(info["model"])


def load_reward_model(checkpoint: Path, model: ModelSpec | None = None) -> RewardModel:
    """The reward model saved in ``checkpoint`` (``model``: its base; read from the
    checkpoint's info file when omitted; pass it to change dtype or device)."""
    checkpoint = Path(checkpoint)
    spec = model if model is not None else checkpoint_model_spec(checkpoint)
    if is_adapter_folder(checkpoint):
        from peft import PeftModel

        base = load_base_model(spec, "sequence_classification", num_labels=1)
        net = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
        tokenizer = load_tokenizer(spec)
    else:
        full = spec.model_copy(update={"name_or_path": str(checkpoint), "adapter": None})
        net = load_base_model(full, "sequence_classification", num_labels=1)
        tokenizer = load_tokenizer(full)
    net.config.pad_token_id = tokenizer.pad_token_id
    net.eval()
    return RewardModel(model=net, tokenizer=tokenizer, device=resolve_device(spec))


def score(
    reward_model: RewardModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 512,
) -> list[float]:
    """r(prompt + response) for each pair; prompts as made by ``format_prompt`` (the same
    concatenation the reward trainer saw)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    torch, _ = import_torch_stack()
    tokenizer = reward_model.tokenizer
    eos = tokenizer.eos_token or ""
    # The reward trainer appends EOS to every sequence: score what it was trained on.
    texts = [
        p + r + (eos if not r.endswith(eos) else "")
        for p, r in zip(prompts, responses, strict=True)
    ]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    scores: list[float] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            ).to(reward_model.device)
            with torch.inference_mode():
                logits = reward_model.model(**batch).logits
            scores.extend(float(x) for x in logits[:, 0].float().tolist())
    finally:
        tokenizer.padding_side = old_side
    return scores
