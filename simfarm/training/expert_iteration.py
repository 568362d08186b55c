"""Expert iteration (ours): best-of-n on unlabeled prompts, then SFT on the winners, k rounds.

Round ``r`` (1-based):

1. sample ``n`` responses per prompt from the current policy (the base model in round 1, the
   round ``r-1`` checkpoint after that) and keep the best under the scorer (best-of-n);
2. supervised fine-tuning on the winners, through the ``sft`` recipe's runner (TRL's
   SFTTrainer behind simfarm's one TRL adapter), from the **base** model, on the winners of
   rounds ``1..r`` (``accumulate``; otherwise round ``r``'s only).

Starting every round's SFT from the base model on the accumulated winners (as ReST, Gulcehre
et al. 2023, does) keeps each checkpoint a single LoRA adapter on the base model, which any
later stage can load, and avoids compounding overfitting on ever-narrower self-generated data.

Each round's mean sample score (of the policy that entered the round) is the learning curve;
a final scoring-only pass measures the last policy. Everything is resumable: a round's winners
file is reused when complete, and its SFT run resumes through :func:`run_recipe`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from simfarm.training.config import (
    GenerationSpec,
    InstructionSource,
    RecipeConfig,
    TrainingSpec,
    _Strict,
)
from simfarm.training.scoring import ScorerSpec

if TYPE_CHECKING:
    from simfarm.training.best_of_n import Selection, SelectionRunner
    from simfarm.training.data import InstructionExample
    from simfarm.training.run import RecipeOutcome, RunContext


class ExpertIterationData(_Strict):
    """Unlabeled prompts to sample on, and optionally held-out prompts to measure on."""

    prompts: InstructionSource
    """Prompts whose best-of-n winners become SFT data (e.g. the bundled unlabeled split)."""
    eval: InstructionSource | None = None
    """Prompts to measure each round's policy on (null: the training prompts)."""


class ExpertIterationConfig(RecipeConfig):
    """k rounds of best-of-n then SFT on the winners."""

    method: Literal["expert_iteration"] = "expert_iteration"
    data: ExpertIterationData
    rounds: int = Field(default=2, ge=1)
    """Rounds of best-of-n + SFT."""
    n: int = Field(default=4, ge=2)
    """Samples per prompt in each round's best-of-n."""
    selection: Literal["score", "tournament"] = "score"
    """How the winner is chosen (see the best_of_n recipe)."""
    scorer: ScorerSpec = Field(default_factory=lambda: ScorerSpec(reference="initial_policy"))
    """Where scores come from (the same scorer measures every round)."""
    generation: GenerationSpec = Field(default_factory=lambda: GenerationSpec(temperature=1.0))
    """How samples are drawn."""
    accumulate: bool = True
    """Train each round on the winners of every round so far (false: this round's only)."""
    sft: TrainingSpec = Field(default_factory=TrainingSpec)
    """The SFT step's optimiser, batch and checkpoint settings (per round)."""

    @model_validator(mode="after")
    def _selection_fits_scorer(self) -> ExpertIterationConfig:
        if self.selection == "tournament" and self.scorer.kind != "annotator":
            raise ValueError('selection "tournament" needs scorer.kind "annotator"')
        if self.generation.temperature == 0:
            raise ValueError("generation.temperature 0 makes all n samples identical")
        return self


WINNERS_FILE = "winners.jsonl"
SCORES_FILE = "eval_scores.json"


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _policy_spec(config: ExpertIterationConfig, checkpoint: Path | None) -> Any:
    """The round's sampling policy: the base model, the base with a round's LoRA adapter, or
    a round's full weights."""
    from simfarm.training.policy import is_adapter_folder

    if checkpoint is None:
        return config.model
    if is_adapter_folder(checkpoint):
        return config.model.model_copy(update={"adapter": checkpoint})
    return config.model.model_copy(update={"name_or_path": str(checkpoint), "adapter": None})


def _measure(
    config: ExpertIterationConfig,
    runner: SelectionRunner,
    checkpoint: Path | None,
    examples: list[InstructionExample],
    references: list[str],
    n: int,
) -> list[Selection]:
    """Best-of-n with the policy in ``checkpoint`` (None: the base model)."""
    from simfarm.training.best_of_n import select_best
    from simfarm.training.policy import format_prompt, load_policy

    policy = load_policy(_policy_spec(config, checkpoint), lora=None)
    chat = config.model.use_chat_template
    prompts = [
        format_prompt(policy.tokenizer, e.instruction, e.input, use_chat_template=chat)
        for e in examples
    ]
    selections = select_best(
        policy,
        examples,
        prompts,
        references,
        runner,
        n=n,
        generation=config.generation,
        seed=config.seed,
    )
    del policy
    return selections


def _round_metrics(selections: list[Selection]) -> dict[str, float]:
    count = max(len(selections), 1)
    return {
        "mean_sample_score": sum(sum(s.scores) / len(s.scores) for s in selections) / count,
        "mean_sample0_score": sum(s.scores[0] for s in selections) / count,
        "mean_best_score": sum(s.scores[s.chosen_index] for s in selections) / count,
    }


def run_expert_iteration(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    """The ``expert_iteration`` recipe (see the module docstring)."""
    from simfarm.training.best_of_n import SelectionRunner, references_for
    from simfarm.training.config import SFTConfig, SFTData
    from simfarm.training.data import load_instructions
    from simfarm.training.policy import format_prompt, load_policy
    from simfarm.training.run import RecipeOutcome, read_result, run_recipe

    assert isinstance(config, ExpertIterationConfig)
    examples = load_instructions(config.data.prompts)
    context.record_data("prompts", Path(config.data.prompts.path))
    eval_examples = examples
    if config.data.eval is not None:
        eval_examples = load_instructions(config.data.eval)
        context.record_data("eval", Path(config.data.eval.path))
    runner = SelectionRunner(config.scorer, config.selection, config.model)
    if config.scorer.kind == "annotator":
        context.record_persona(runner.id)

    # References (when the scorer needs them) are fixed once, from the base policy or data.
    base = load_policy(config.model, lora=None)
    chat = config.model.use_chat_template

    def references(items: list[InstructionExample], name: str, policy: Any) -> list[str]:
        prompts = [
            format_prompt(policy.tokenizer, e.instruction, e.input, use_chat_template=chat)
            for e in items
        ]
        folder = context.out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return references_for(config.scorer, items, policy, prompts, config.generation, folder)

    train_refs = references(examples, "references-train", base)
    eval_refs = train_refs
    if config.data.eval is not None:
        eval_refs = references(eval_examples, "references-eval", base)
    del base

    checkpoint: Path | None = None
    winners: list[dict[str, Any]] = []
    tokens = 0
    resumed = False
    for round_number in range(1, config.rounds + 1):
        folder = context.out_dir / "rounds" / f"round-{round_number}"
        folder.mkdir(parents=True, exist_ok=True)
        sft_dir = folder / "sft"
        winners_path = folder / WINNERS_FILE
        scores_path = folder / SCORES_FILE
        context.report(f"round {round_number}: best-of-{config.n}", 0, 1)
        if winners_path.is_file() and scores_path.is_file():
            resumed = True
            round_winners = _read_jsonl(winners_path)
            metrics = json.loads(scores_path.read_text(encoding="utf-8"))
        else:
            selections = _measure(config, runner, checkpoint, examples, train_refs, config.n)
            round_winners = [
                {
                    "instruction": s.instruction,
                    "input": s.input,
                    "output": s.chosen,
                    # A winner cut off by max_new_tokens is trained on without EOS.
                    "truncated": s.chosen_truncated,
                }
                for s in selections
            ]
            metrics = _round_metrics(selections)
            if config.data.eval is not None:
                held_out = _measure(config, runner, checkpoint, eval_examples, eval_refs, 1)
                metrics["eval_mean_score"] = _round_metrics(held_out)["mean_sample_score"]
            _write_jsonl(winners_path, round_winners)
            scores_path.write_text(json.dumps(metrics), encoding="utf-8")  # marks the round
        winners = [*winners, *round_winners] if config.accumulate else round_winners
        train_path = folder / "sft_data.jsonl"
        _write_jsonl(train_path, winners)

        context.report(f"round {round_number}: SFT on {len(winners)} winners", 0, 1)
        sft_config = SFTConfig(
            model=config.model,
            lora=config.lora,
            seed=config.seed + round_number,
            data=SFTData(train=InstructionSource(path=str(train_path))),
            training=config.sft,
        )
        resumed = resumed or read_result(sft_dir) is not None
        sft = run_recipe(sft_config, sft_dir)
        tokens += int((sft.tokens_per_s or 0) * sft.wall_time_s)
        checkpoint = sft.checkpoint
        metrics.update({f"sft_{k}": v for k, v in sft.final_metrics.items()})
        metrics["winners"] = float(len(winners))
        context.metrics.truncate_after(round_number - 1, stage="expert_iteration")
        context.metrics.log(round_number, metrics, stage="expert_iteration", round=round_number)

    # The policy that came out of the last round, measured with the same scorer.
    final_dir = context.out_dir / "rounds" / "final"
    final_dir.mkdir(parents=True, exist_ok=True)
    final_scores = final_dir / SCORES_FILE
    if final_scores.is_file():
        final_metrics = json.loads(final_scores.read_text(encoding="utf-8"))
    else:
        context.report("final policy: scoring", 0, 1)
        final_items, final_refs = (
            (eval_examples, eval_refs) if config.data.eval is not None else (examples, train_refs)
        )
        selections = _measure(config, runner, checkpoint, final_items, final_refs, 1)
        final_metrics = {"mean_sample_score": _round_metrics(selections)["mean_sample_score"]}
        final_scores.write_text(json.dumps(final_metrics), encoding="utf-8")
        context.metrics.log(config.rounds + 1, final_metrics, stage="final_policy")

    rounds = [r for r in context.metrics.read() if r.get("stage") == "expert_iteration"]
    summary = {f"round{r['round']}_mean_sample_score": r["mean_sample_score"] for r in rounds}
    summary["final_policy_mean_sample_score"] = final_metrics["mean_sample_score"]
    summary["score_failures"] = float(runner.n_failed)
    assert checkpoint is not None
    return RecipeOutcome(
        final_metrics=summary,
        tokens=tokens or None,
        checkpoint=checkpoint,
        resumed=resumed,
        judge_usage=runner.usage if config.scorer.kind == "annotator" else None,
    )


__all__ = ["ExpertIterationConfig", "ExpertIterationData", "run_expert_iteration"]
