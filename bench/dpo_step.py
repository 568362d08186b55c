"""DPO training steps through simfarm's recipe vs TRL's DPOTrainer called directly.

Same tiny model (2-layer Llama, hidden 64, tokenizer trained on the bundled data), same
LoRA, same pairs (bundled reference responses vs truncated ones, labelled by the `longest`
persona), same batch and step count. Each side's time is the HF Trainer's own ``train_runtime``
(the training loop: forward/backward/optimiser steps, logging, the final checkpoint save),
so simfarm's overhead inside the loop (metrics.jsonl lines, progress callback) is what the
ratio measures. Best of ``--repeats`` alternating runs per side (the machine is shared).

    python bench/dpo_step.py [--steps 20] [--repeats 3]

Last line: ``ratio=<simfarm seconds per step ÷ TRL seconds per step>`` (target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "training"))

BATCH, MAX_LENGTH, LR, BETA, LORA_R, LORA_ALPHA = 8, 128, 5e-3, 0.1, 8, 16


def simfarm_run(model_dir: Path, pairs: Path, out: Path, steps: int) -> float:
    from simfarm.training.config import DPOConfig
    from simfarm.training.run import run_recipe

    config = DPOConfig.model_validate(
        {
            "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu"},
            "lora": {"r": LORA_R, "alpha": LORA_ALPHA},
            "data": {"annotations": str(pairs), "eval_fraction": 0.0},
            "beta": BETA,
            "training": {
                "learning_rate": LR,
                "max_steps": steps,
                "batch_size": BATCH,
                "max_length": MAX_LENGTH,
                "save_steps": steps,
            },
        }
    )
    run_recipe(config, out)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    # The loop's summary line (per-step lines carry a running train_runtime too).
    return float(next(r["train_runtime"] for r in logs if "train_loss" in r))


def trl_run(model_dir: Path, pairs: Path, out: Path, steps: int) -> float:
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from simfarm.training.data import load_preference_pairs
    from simfarm.training.policy import format_prompt

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    loaded, _ = load_preference_pairs(pairs)
    dataset = Dataset.from_list(
        [
            {
                "prompt": format_prompt(tokenizer, p.instruction, p.input),
                "chosen": p.chosen,
                "rejected": p.rejected,
            }
            for p in loaded
        ]
    )
    transformers.set_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    args = DPOConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=steps,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        use_cpu=True,
        max_length=MAX_LENGTH,
        gradient_checkpointing=False,
        beta=BETA,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=LORA_R, lora_alpha=LORA_ALPHA, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # printing is not what is being compared
    output = trainer.train()
    return float(output.metrics["train_runtime"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args()

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from _recipes import length_labelled_pairs  # tests/training/_recipes.py
    from conftest import build_tiny_model  # tests/training/conftest.py

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_model(root / "model")
        pairs = length_labelled_pairs(root / "pairs.jsonl", ("sft",))
        times: dict[str, list[float]] = {"simfarm": [], "trl": []}
        for repeat in range(options.repeats):
            for side, run in (("simfarm", simfarm_run), ("trl", trl_run)):
                started = time.perf_counter()
                runtime = run(model_dir, pairs, root / f"{side}-{repeat}", options.steps)
                times[side].append(runtime / options.steps)
                total = time.perf_counter() - started
                print(
                    f"{side:8s} repeat {repeat}: {runtime / options.steps * 1000:.1f} ms/step "
                    f"(train loop {runtime:.2f} s, with setup {total:.2f} s)"
                )
        best = {side: min(values) for side, values in times.items()}
        print(f"simfarm: {best['simfarm'] * 1000:.1f} ms/step (best of {options.repeats})")
        print(f"trl:     {best['trl'] * 1000:.1f} ms/step (best of {options.repeats})")
        print(f"ratio={best['simfarm'] / best['trl']:.3f}")


if __name__ == "__main__":
    main()
