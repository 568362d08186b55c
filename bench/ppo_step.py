"""PPO step throughput on CPU: tokens/s and seconds per step of simfarm's PPO trainer.

    python bench/ppo_step.py                 # tiny random 2-layer Llama (seconds)
    python bench/ppo_step.py --model embedded --steps 2   # the embedded Gemma 3 270M + LoRA

One PPO step = sample ``--batch`` responses of ``--new-tokens`` tokens, score them with the
``longest`` persona against a fixed reference (the real simfarm scorer path, no model), the
policy/reference/value forward passes, and ``--epochs`` PPO epochs of minibatch updates.
tokens/s counts generated response tokens per second of the whole step.

The last line is ``ratio=<float>``: PPO tokens/s ÷ plain sampling tokens/s of the same model,
batch and lengths (``model.generate`` alone, measured in the same process). It says what share
of raw generation speed a full PPO step keeps — the rest is scoring, three extra forward passes
and the updates — so it is comparable across machines; higher is better, 1.0 is the ceiling
(a step can never beat generating alone). Steps are timed after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer Llama (random init, seed 0) with a byte-level BPE tokenizer trained on the
    bundled recipe data, in hub layout."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        line
        for path in sorted((REPO / "recipes" / "data").glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help='"tiny" or "embedded" (Gemma 270M)')
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()

    import torch

    from simfarm.training.config import LoraSpec, ModelSpec
    from simfarm.training.policy import format_prompt, load_policy
    from simfarm.training.ppo import PPOConfig, PPOTrainer, step_seed
    from simfarm.training.scoring import ScorerSpec, build_response_scorer
    from simfarm.training.value_head import ValueHead

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    with tempfile.TemporaryDirectory() as tmp:
        name = str(build_tiny_model(Path(tmp))) if args.model == "tiny" else "embedded"
        spec = ModelSpec(name_or_path=name, dtype=args.dtype, device="cpu")
        lora = LoraSpec(r=8, alpha=16)
        policy = load_policy(spec, lora)
        config = PPOConfig.model_validate(
            {
                "method": "ppo",
                "model": spec.model_dump(),
                "lora": lora.model_dump(),
                "data": {"prompts": {"path": "unused.jsonl"}},
                "generation": {"max_new_tokens": args.new_tokens, "temperature": 1.0},
                "ppo": {
                    "batch_size": args.batch,
                    "mini_batch_size": max(args.batch // 2, 1),
                    "ppo_epochs": args.epochs,
                },
            }
        )
        score, _, _ = build_response_scorer(ScorerSpec(annotator="longest"), spec)
        hidden = policy.model.config.get_text_config().hidden_size
        trainer = PPOTrainer(
            config, policy.model, policy.tokenizer, ValueHead(hidden), score, torch.device("cpu")
        )
        rows = [
            json.loads(line)
            for line in (REPO / "recipes" / "data" / "eval.jsonl").read_text("utf-8").splitlines()
        ][: args.batch]
        prompts = [format_prompt(policy.tokenizer, r["instruction"], r["input"]) for r in rows]
        instructions = [r["instruction"] for r in rows]
        inputs = [r["input"] for r in rows]
        references = [r["output"] for r in rows]

        def ppo_step(step: int) -> tuple[float, int]:
            started = time.perf_counter()
            rollout = trainer.rollout(
                prompts, instructions, inputs, references, seed=step_seed(0, step, "rollout")
            )
            trainer.optimise(rollout, seed=step)
            return time.perf_counter() - started, int(rollout.response_mask.sum())

        def generate_only(step: int) -> tuple[float, int]:
            tokenizer = policy.tokenizer
            tokenizer.padding_side = "left"
            encoded = tokenizer(prompts, return_tensors="pt", padding=True)
            started = time.perf_counter()
            torch.manual_seed(step)
            with torch.no_grad():
                out = policy.model.generate(
                    **encoded,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=args.new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            from simfarm.training.ppo import response_mask

            mask = response_mask(out[:, encoded["input_ids"].shape[1] :], trainer.eos_token_ids)
            return time.perf_counter() - started, int(mask.sum())

        ppo_step(0)  # warm-up
        generate_only(0)
        ppo_times, ppo_tokens, gen_times, gen_tokens = [], 0, [], 0
        for step in range(1, args.steps + 1):
            seconds, tokens = ppo_step(step)
            ppo_times.append(seconds)
            ppo_tokens += tokens
            seconds, tokens = generate_only(step)
            gen_times.append(seconds)
            gen_tokens += tokens
    ppo_rate = ppo_tokens / sum(ppo_times)
    gen_rate = gen_tokens / sum(gen_times)
    print(f"model={args.model} batch={args.batch} new_tokens={args.new_tokens}")
    print(f"epochs={args.epochs}")
    print(f"ppo_seconds_per_step={sum(ppo_times) / len(ppo_times):.3f}")
    print(f"ppo_tokens_per_s={ppo_rate:.1f}")
    print(f"generate_only_tokens_per_s={gen_rate:.1f}")
    print(f"ratio={ppo_rate / gen_rate:.4f}")


if __name__ == "__main__":
    main()
