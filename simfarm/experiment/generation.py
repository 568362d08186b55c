"""Sampling a method's responses for the experiment: feedback pairs and eval outputs.

Both go through the training layer's :func:`~simfarm.training.policy.generate` (sample ``k``
of a prompt is seeded by ``(seed, prompt, k)``, so the split into progress chunks changes
nothing), and both count the tokens they generate for the run's cost table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm.training.config import GenerationSpec, ModelSpec


@dataclass
class Generated:
    texts: list[list[str]]
    """``texts[i][k]``: sample ``k`` of prompt ``i``."""
    tokens: int
    """Generated tokens (by the policy's tokenizer)."""


def prompts_for(tokenizer: Any, examples: Sequence[Any], model: ModelSpec) -> list[str]:
    from simfarm.training.policy import format_prompt

    return [
        format_prompt(
            tokenizer, ex.instruction, ex.input, use_chat_template=model.use_chat_template
        )
        for ex in examples
    ]


def sample(
    model: ModelSpec,
    checkpoint: Path | None,
    examples: Sequence[Any],
    spec: GenerationSpec,
    *,
    n: int,
    seed: int,
    progress: Callable[[int, int], None],
) -> Generated:
    """``n`` responses per instruction from the policy ``model`` (+ ``checkpoint``)."""
    from simfarm.training.policy import generate, load_policy

    policy = load_policy(model, checkpoint=checkpoint)
    prompts = prompts_for(policy.tokenizer, examples, model)
    texts: list[list[str]] = []
    chunk = max(1, spec.batch_size // n)
    progress(0, len(prompts))
    for start in range(0, len(prompts), chunk):
        texts += generate(
            policy,
            prompts[start : start + chunk],
            n=n,
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=seed,
            batch_size=spec.batch_size,
            stop=spec.stop,
        )
        progress(len(texts), len(prompts))
    tokens = sum(
        len(policy.tokenizer(t, add_special_tokens=False)["input_ids"]) for r in texts for t in r
    )
    return Generated(texts=texts, tokens=tokens)
