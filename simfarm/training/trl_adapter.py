"""SFT, reward model and DPO through TRL's trainers — the only module that imports TRL.

Each runner turns a simfarm config into TRL's config and a ``datasets.Dataset`` in the format
TRL expects (prompt/completion for SFT, prompt/chosen/rejected for reward modelling and DPO),
evaluates on the held-out split before and after training, and leaves checkpointing and
resuming to the HF Trainer (``resume_from_checkpoint`` with the last
``checkpoints/checkpoint-N``): a run killed at any point restarts from its last checkpoint.
Metrics the trainer logs go to metrics.jsonl, progress to the run's callback.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from simfarm.errors import ConfigError
from simfarm.training.config import (
    DPOConfig,
    PreferenceData,
    RecipeConfig,
    RewardConfig,
    SFTConfig,
    TrainingSpec,
)
from simfarm.training.data import PreferencePair, load_instructions, load_preference_pairs
from simfarm.training.policy import (
    format_prompt,
    load_base_model,
    load_tokenizer,
    peft_lora_config,
    resolve_device,
    resolve_dtype,
)
from simfarm.training.reward_model import CHECKPOINT_INFO
from simfarm.training.run import RecipeOutcome, RunContext

TRL_SPEC = ">=1.0,<2"
"""The TRL versions this adapter is written and tested against (pyproject's ``train`` extra)."""


def _trl() -> Any:
    from simfarm.errors import MissingExtraError

    try:
        import trl
    except ModuleNotFoundError as error:
        raise MissingExtraError("training recipes", "train", error.name or "trl") from error
    return trl


def _args_kwargs(config: RecipeConfig, training: TrainingSpec, context: RunContext, has_eval: bool):
    """The TrainingArguments fields shared by every TRL config."""
    use_cpu = resolve_device(config.model) == "cpu"
    return {
        "output_dir": str(context.checkpoints_dir),
        "max_steps": training.max_steps,
        "per_device_train_batch_size": training.batch_size,
        "per_device_eval_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "learning_rate": training.learning_rate,
        "warmup_steps": training.warmup_steps,
        "weight_decay": training.weight_decay,
        "lr_scheduler_type": "linear",
        "logging_steps": training.logging_steps,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": training.save_total_limit,
        "eval_strategy": "steps" if has_eval and training.eval_steps else "no",
        "eval_steps": training.eval_steps,
        "report_to": "none",
        "disable_tqdm": True,
        "seed": config.seed,
        "data_seed": config.seed,
        "use_cpu": use_cpu,
        "bf16": resolve_dtype(config.model) == "bfloat16" and not use_cpu,
        "dataloader_num_workers": 0,
        # Small models on CPU: recomputing activations costs more time than it saves memory.
        "gradient_checkpointing": False,
        "include_num_input_tokens_seen": "non_padding",
        "max_length": training.max_length,
    }


class _Reporter:
    """A TrainerCallback (built lazily: transformers is imported only when training) that
    writes each log to metrics.jsonl and reports step progress."""

    def __new__(cls, context: RunContext, max_steps: int) -> Any:
        from transformers import TrainerCallback

        class Reporter(TrainerCallback):  # type: ignore[misc]
            tokens_at_start = 0
            steps_at_start = 0

            def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
                self.tokens_at_start = int(state.num_input_tokens_seen or 0)
                self.steps_at_start = int(state.global_step)
                context.report("train", state.global_step, max_steps)

            def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
                context.report("train", state.global_step, max_steps)

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any):
                if not logs:
                    return
                stage = "eval" if any(k.startswith("eval_") for k in logs) else "train"
                numbers = {k: v for k, v in logs.items() if isinstance(v, int | float)}
                context.metrics.log(state.global_step, numbers, stage=stage)

        return Reporter()


def _last_checkpoint(context: RunContext) -> tuple[str | None, int]:
    """The newest *complete* checkpoint and its step.

    The HF Trainer writes ``trainer_state.json`` last, so a folder without a readable one was
    cut off mid-save (Ctrl-C or kill -9): it holds nothing usable and is removed, and the
    run resumes from the checkpoint before it.
    """
    if not context.checkpoints_dir.is_dir():
        return None, 0
    candidates = []
    for folder in context.checkpoints_dir.glob("checkpoint-*"):
        suffix = folder.name.removeprefix("checkpoint-")
        if folder.is_dir() and suffix.isdigit():
            candidates.append((int(suffix), folder))
    for _, folder in sorted(candidates, reverse=True):
        try:
            state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return str(folder), int(state["global_step"])
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(folder, ignore_errors=True)
    return None, 0


def _train(
    trainer: Any, config: RecipeConfig, context: RunContext, watch: tuple[str, ...]
) -> RecipeOutcome:
    """Evaluate (first run only), train or resume, evaluate, save the final checkpoint."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # the library never prints
        trainer.remove_callback(noisy)
    checkpoint, step = _last_checkpoint(context)
    metrics = context.metrics
    if checkpoint is None:
        metrics.truncate_after(-1)  # an interrupted start left nothing worth keeping
    else:
        metrics.truncate_after(step, stage="train")
        metrics.truncate_after(step, stage="eval")
    attempts = context.manifest_extra.setdefault("attempts", [])
    attempts.append({"resumed_from_step": step, "checkpoint": checkpoint})
    context.write_manifest()
    initial: dict[str, float] = {}
    if trainer.eval_dataset is not None:
        logged = [r for r in metrics.read() if r.get("stage") == "eval_initial"]
        if logged:
            initial = {k: v for k, v in logged[-1].items() if k not in ("step", "stage")}
        else:
            context.report("evaluating the starting model", 0, 1)
            initial = {k: float(v) for k, v in trainer.evaluate().items() if k in watch}
            metrics.log(0, initial, stage="eval_initial")
            context.report("evaluating the starting model", 1, 1)
    reporter = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "tokens_at_start"))
    output = trainer.train(resume_from_checkpoint=checkpoint)
    final: dict[str, float] = {"train_loss": float(output.training_loss)}
    if trainer.eval_dataset is not None:
        context.report("evaluating the trained model", 0, 1)
        evaluated = trainer.evaluate()
        metrics.log(trainer.state.global_step, evaluated, stage="eval_final")
        context.report("evaluating the trained model", 1, 1)
        for key in watch:
            if key in evaluated:
                final[key] = float(evaluated[key])
            if key in initial:
                final[f"{key}_initial"] = float(initial[key])
    _save_final(trainer, config, context)
    tokens = int(trainer.state.num_input_tokens_seen or 0) - reporter.tokens_at_start
    return RecipeOutcome(final_metrics=final, tokens=tokens or None, resumed=checkpoint is not None)


def _save_final(trainer: Any, config: RecipeConfig, context: RunContext) -> None:
    """Save the adapter (or full weights) and tokenizer into checkpoint/, atomically."""
    tmp = context.out_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    trainer.processing_class.save_pretrained(str(tmp))
    info = {
        "method": config.method,
        "model": config.model.model_dump(mode="json"),
        "lora": config.lora.model_dump(mode="json"),
        "step": trainer.state.global_step,
    }
    (tmp / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    shutil.rmtree(context.checkpoint_dir, ignore_errors=True)
    os.replace(tmp, context.checkpoint_dir)


def _seed(config: RecipeConfig) -> None:
    from transformers import set_seed

    set_seed(config.seed)


# ---------------------------------------------------------------------------------------
# SFT


def sft_example(tokenizer: Any, prompt: str, completion: str, truncated: bool) -> dict[str, Any]:
    """One SFT row tokenized as TRL's SFTTrainer tokenizes a prompt/completion row
    (``input_ids`` of prompt + completion + EOS; ``completion_mask`` 1 from where the
    tokenized prompt and the whole diverge), except that a ``truncated`` completion (cut off
    by a length limit) gets no EOS: the model must not learn that text ends there.

    TRL appends EOS to every non-conversational completion before tokenizing; handing it
    rows with ``input_ids`` makes it skip that step (and still build the labels from
    ``completion_mask`` and truncate to ``max_length``)."""
    from trl.data_utils import common_prefix_length

    eos = tokenizer.eos_token or ""
    text = prompt + completion
    if not truncated and not completion.endswith(eos):
        text += eos
    prompt_ids = list(tokenizer(text=prompt)["input_ids"])
    ids = list(tokenizer(text=text)["input_ids"])
    start = common_prefix_length(prompt_ids, ids)
    return {"input_ids": ids, "completion_mask": [0] * start + [1] * (len(ids) - start)}


def run_sft(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    """Supervised fine-tuning: loss on the reference response only (prompt tokens masked);
    EOS ends every response except those marked truncated (see :func:`sft_example`)."""
    assert isinstance(config, SFTConfig)
    trl = _trl()
    from datasets import Dataset

    tokenizer = load_tokenizer(config.model)

    def rows(spec: Any, name: str) -> Any:
        examples = load_instructions(spec, need_output=True)
        context.record_data(name, Path(spec.path) if Path(spec.path).exists() else None)
        return Dataset.from_list(
            [
                sft_example(
                    tokenizer,
                    format_prompt(
                        tokenizer,
                        ex.instruction,
                        ex.input,
                        use_chat_template=config.model.use_chat_template,
                    ),
                    ex.output or "",
                    ex.truncated,
                )
                for ex in examples
            ]
        )

    train = rows(config.data.train, "train")
    evaluation = rows(config.data.eval, "eval") if config.data.eval is not None else None
    _seed(config)
    model = load_base_model(config.model)
    args = trl.SFTConfig(
        **_args_kwargs(config, config.training, context, evaluation is not None),
        completion_only_loss=True,
        packing=False,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_lora_config(config.lora) if config.lora.enabled else None,
        callbacks=[_Reporter(context, config.training.max_steps)],
    )
    return _train(trainer, config, context, ("eval_loss", "eval_mean_token_accuracy"))


# ---------------------------------------------------------------------------------------
# Preference data (annotation files or simulated feedback)


def _preference_datasets(
    config: RewardConfig | DPOConfig, context: RunContext, tokenizer: Any
) -> tuple[Any, Any]:
    """Train and held-out datasets of prompt/chosen/rejected rows."""
    from datasets import Dataset

    data: PreferenceData = config.data
    if data.feedback is not None:
        from simfarm.training.feedback import collect_feedback

        source = collect_feedback(config, data.feedback, context)
    else:
        assert data.annotations is not None
        source = data.annotations
        context.record_data("annotations", source)
    pairs, stats = load_preference_pairs(source, keep_ties=data.keep_ties)
    for persona in stats.annotators:
        context.record_persona(persona)
    if data.eval_annotations is not None:
        held_out, _ = load_preference_pairs(data.eval_annotations, keep_ties=data.keep_ties)
        context.record_data("eval_annotations", data.eval_annotations)
    else:
        order = list(range(len(pairs)))
        random.Random(config.seed).shuffle(order)
        n_eval = round(len(pairs) * data.eval_fraction)
        held_out = [pairs[i] for i in order[:n_eval]]
        pairs = [pairs[i] for i in order[n_eval:]]
    context.record(
        "preference_stats",
        {
            "records": stats.records,
            "pairs_train": len(pairs),
            "pairs_eval": len(held_out),
            "ties_dropped": stats.ties_dropped,
            "failures_skipped": stats.failures_skipped,
            "failures_by_kind": stats.failures_by_kind,
        },
    )
    if not pairs:
        raise ConfigError(
            f"{source}: no usable preference pairs ({stats.records} records, "
            f"{stats.ties_dropped} ties dropped, {stats.failures_skipped} failures skipped)"
        )

    def rows(items: list[PreferencePair]) -> Any:
        return Dataset.from_list(
            [
                {
                    "prompt": format_prompt(
                        tokenizer,
                        p.instruction,
                        p.input,
                        use_chat_template=config.model.use_chat_template,
                    ),
                    "chosen": p.chosen,
                    "rejected": p.rejected,
                }
                for p in items
            ]
        )

    return rows(pairs), (rows(held_out) if held_out else None)


# ---------------------------------------------------------------------------------------
# Reward model


def run_reward_model(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    """A Bradley–Terry reward model: a scalar head on the base model, trained so that
    r(chosen) > r(rejected); reports held-out pairwise accuracy before and after."""
    assert isinstance(config, RewardConfig)
    trl = _trl()
    tokenizer = load_tokenizer(config.model)
    train, evaluation = _preference_datasets(config, context, tokenizer)
    _seed(config)
    model = load_base_model(config.model, "sequence_classification", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = trl.RewardConfig(
        **_args_kwargs(config, config.training, context, evaluation is not None),
        center_rewards_coefficient=config.center_rewards_coefficient,
    )
    peft_config = None
    if config.lora.enabled:
        peft_config = peft_lora_config(config.lora, task_type="SEQ_CLS")
    trainer = trl.RewardTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Reporter(context, config.training.max_steps)],
    )
    return _train(trainer, config, context, ("eval_loss", "eval_accuracy", "eval_margin"))


# ---------------------------------------------------------------------------------------
# DPO


def dpo_trl_config(config: DPOConfig, context: RunContext, has_eval: bool) -> Any:
    """TRL's DPOConfig for a simfarm DPO config (also used by bench/dpo_step.py)."""
    trl = _trl()
    loss_type = [config.loss_type] if isinstance(config.loss_type, str) else config.loss_type
    return trl.DPOConfig(
        **_args_kwargs(config, config.training, context, has_eval),
        beta=config.beta,
        loss_type=loss_type,
        loss_weights=config.loss_weights,
        label_smoothing=config.label_smoothing,
    )


def run_dpo(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    """DPO (or IPO, robust DPO, ... via ``loss_type``) against the frozen starting model
    (with LoRA, the reference is the base with adapters switched off: no second copy)."""
    assert isinstance(config, DPOConfig)
    trl = _trl()
    tokenizer = load_tokenizer(config.model)
    train, evaluation = _preference_datasets(config, context, tokenizer)
    _seed(config)
    model = load_base_model(config.model)
    trainer = trl.DPOTrainer(
        model=model,
        args=dpo_trl_config(config, context, evaluation is not None),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_lora_config(config.lora) if config.lora.enabled else None,
        callbacks=[_Reporter(context, config.training.max_steps)],
    )
    return _train(
        trainer,
        config,
        context,
        ("eval_loss", "eval_rewards/margins", "eval_rewards/accuracies"),
    )
