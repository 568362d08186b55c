"""Responses cut off by ``max_new_tokens`` keep that fact from generation through best-of-n
and expert iteration's winners to the SFT data, where they get no end-of-sequence token
(appending one teaches the policy to stop mid-sentence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simfarm.training.config import ModelSpec
from simfarm.training.policy import format_prompt, generate_samples, load_policy

pytestmark = pytest.mark.slow

PROMPTS = [format_prompt(None, text) for text in ("Say hi.", "List three colors.", "Why?")]


def _policy(folder: Path):  # type: ignore[no-untyped-def]
    return load_policy(ModelSpec(name_or_path=str(folder), dtype="float32", device="cpu"))


def test_generation_marks_responses_cut_by_the_length_limit(tiny_model_dir: Path) -> None:
    policy = _policy(tiny_model_dir)
    cut = generate_samples(policy, PROMPTS, n=2, max_new_tokens=4, temperature=1.0, seed=0)
    # A random 512-token model rarely says EOS within 4 tokens: these were all cut off.
    assert all(sample.truncated for row in cut for sample in row), cut
    # Make each prompt's greedy first token an end token (through the generation config, as
    # Gemma's <end_of_turn> is): every response then ends by itself, none is truncated.
    tokenizer = policy.tokenizer
    first = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        first.append(int(policy.model(**ids).logits[0, -1].argmax()))
    policy.model.generation_config.eos_token_id = [tokenizer.eos_token_id, *first]
    ended = generate_samples(policy, PROMPTS, n=1, max_new_tokens=4, temperature=0.0, seed=0)
    assert not any(row[0].truncated for row in ended), ended
    # A stop string also ends a response: not truncated either.
    policy.model.generation_config.eos_token_id = tokenizer.eos_token_id
    free = generate_samples(policy, PROMPTS, n=1, max_new_tokens=12, temperature=0.0, seed=0)
    stop = [row[0].text[1:3] for row in free if len(row[0].text) > 3]
    stopped = generate_samples(
        policy, PROMPTS, n=1, max_new_tokens=12, temperature=0.0, seed=0, stop=stop
    )
    for row_free, row_stopped in zip(free, stopped, strict=True):
        if any(s in row_free[0].text for s in stop):
            assert not row_stopped[0].truncated


def test_sft_rows_match_trl_and_truncated_ones_get_no_eos(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Rows simfarm tokenizes itself equal what TRL's SFTTrainer makes of a plain
    prompt/completion row, except that a truncated completion's labels end without EOS."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from simfarm.training.trl_adapter import sft_example

    tokenizer = _policy(tiny_model_dir).tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [(PROMPTS[0], "Hello there, friend"), (PROMPTS[1], "Red, green and blue.")]

    def prepared(dataset: Dataset) -> list[dict[str, list[int]]]:
        args = SFTConfig(
            output_dir=str(tmp_path / "trl"),
            completion_only_loss=True,
            max_length=256,
            report_to="none",
            use_cpu=True,
            bf16=False,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer
        )
        return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]

    by_trl = prepared(Dataset.from_list([{"prompt": p, "completion": c} for p, c in rows]))
    ours = prepared(Dataset.from_list([sft_example(tokenizer, p, c, False) for p, c in rows]))
    assert ours == by_trl
    assert by_trl[0]["labels"][-1] == tokenizer.eos_token_id
    cut = prepared(Dataset.from_list([sft_example(tokenizer, p, c, True) for p, c in rows]))
    for whole, truncated in zip(by_trl, cut, strict=True):
        assert truncated["input_ids"] == whole["input_ids"][:-1]
        assert truncated["labels"] == whole["labels"][:-1]
        assert tokenizer.eos_token_id not in truncated["input_ids"][1:]


def test_expert_iteration_keeps_the_flag_to_the_sft_data(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from simfarm.training.expert_iteration import ExpertIterationConfig
    from simfarm.training.run import run_recipe

    data = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"Write item {i}.", "output": "x" * 10} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ExpertIterationConfig.model_validate(
        {
            "method": "expert_iteration",
            "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
            "lora": {"enabled": False},
            "data": {"prompts": {"path": str(data)}},
            "rounds": 1,
            "n": 2,
            "scorer": {"kind": "annotator", "annotator": "longest", "reference": "data"},
            "generation": {"max_new_tokens": 4, "temperature": 1.0},
            "sft": {"max_steps": 1, "batch_size": 4},
        }
    )
    run_recipe(config, tmp_path / "run")
    lines = (tmp_path / "run" / "rounds" / "round-1" / "sft_data.jsonl").read_text("utf-8")
    winners = [json.loads(line) for line in lines.splitlines()]
    assert len(winners) == 4 and all(w["truncated"] is True for w in winners), winners
