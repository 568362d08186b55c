"""Best-of-n (ours; TRL and OpenRLHF both deleted theirs): sample n, score, keep the best.

For each prompt the policy samples ``n`` responses (sample ``k`` seeded by ``(seed, prompt,
k)``, so sample 0 is the same response whatever ``n`` is, and best-of-4 can be compared with
best-of-1 response for response). The responses are then ranked either

- by an **absolute score**: a reward-model checkpoint, or a simfarm persona judging each
  response against a reference (+1 win, 0 tie, -1 loss); or
- in a **knockout tournament** judged by a pairwise persona (no reference needed: the
  candidates play each other; see :meth:`~simfarm.training.scoring.AnnotatorScorer.tournament`).

simfarm has no rating persona yet; it will be a third kind of absolute score.

It is an inference-time method (the run trains nothing: its product is
``best_of_n.jsonl``) and the data step of expert iteration, which calls :func:`select_best`.
Prompts are processed in chunks whose records are appended (and fsynced) as they are done, so
an interrupted run resumes after the last finished chunk; every persona verdict is in
simfarm's cache, so nothing paid for is asked twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from simfarm.training.config import GenerationSpec, InstructionSource, RecipeConfig, _Strict
from simfarm.training.scoring import ScorerSpec

if TYPE_CHECKING:
    from simfarm.training.data import InstructionExample
    from simfarm.training.policy import Policy
    from simfarm.training.run import RecipeOutcome, RunContext

OUTPUT_FILE = "best_of_n.jsonl"
"""One record per prompt: instruction, input, chosen output and index, every sample's score."""


class BestOfNData(_Strict):
    """The prompts to answer."""

    prompts: InstructionSource
    """Prompt set (e.g. the bundled unlabeled or eval split)."""


class BestOfNConfig(RecipeConfig):
    """Sample n responses per prompt, score them, keep the best (inference only)."""

    method: Literal["best_of_n"] = "best_of_n"
    data: BestOfNData
    n: int = Field(default=4, ge=1)
    """Samples per prompt."""
    selection: Literal["score", "tournament"] = "score"
    """"score": keep the highest absolute score (reward model, or persona vs reference);
    "tournament": a knockout tournament judged by the scorer's pairwise persona."""
    scorer: ScorerSpec = Field(default_factory=ScorerSpec)
    """Where scores or verdicts come from."""
    generation: GenerationSpec = Field(default_factory=lambda: GenerationSpec(temperature=1.0))
    """How the n samples are drawn (temperature > 0, or all n are the same)."""

    @model_validator(mode="after")
    def _selection_fits_scorer(self) -> BestOfNConfig:
        if self.selection == "tournament" and self.scorer.kind != "annotator":
            raise ValueError('selection "tournament" needs scorer.kind "annotator"')
        if self.n > 1 and self.generation.temperature == 0:
            raise ValueError("generation.temperature 0 makes all n samples identical")
        return self


@dataclass
class Selection:
    """Best-of-n for one prompt."""

    instruction: str
    input: str
    samples: list[str]
    scores: list[float]
    """Per sample: the absolute score, or rounds survived in the tournament."""
    chosen_index: int
    truncated: list[bool] | None = None
    """Per sample: cut off by ``max_new_tokens`` (None: not known, taken as not cut)."""

    @property
    def chosen(self) -> str:
        return self.samples[self.chosen_index]

    @property
    def chosen_truncated(self) -> bool:
        """Whether the winner was cut off by the length limit (SFT on it then gets no EOS)."""
        return bool(self.truncated and self.truncated[self.chosen_index])

    def record(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "input": self.input,
            "output": self.chosen,
            "truncated": self.chosen_truncated,
            "chosen_index": self.chosen_index,
            "scores": self.scores,
            "samples": self.samples,
            "samples_truncated": self.truncated or [False] * len(self.samples),
        }


class SelectionRunner:
    """Holds the scorer (and its persona/backend or reward model) across calls."""

    def __init__(
        self, scorer: ScorerSpec, selection: str, model_spec: Any, device: str = "cpu"
    ) -> None:
        from simfarm.training.scoring import AnnotatorScorer, build_response_scorer

        self.selection = selection
        self.scorer_spec = scorer
        if selection == "tournament":
            self.annotator = AnnotatorScorer(scorer)
            self.id = self.annotator.id
            self.usage = self.annotator.usage
        else:
            self.score, self.id, self.usage = build_response_scorer(scorer, model_spec, device)
        self.n_failed = 0

    def select(
        self,
        examples: Sequence[InstructionExample],
        samples: Sequence[Sequence[str]],
        references: Sequence[str],
    ) -> list[Selection]:
        """Pick the best sample of each prompt (ties: the lowest sample index)."""
        instructions = [e.instruction for e in examples]
        inputs = [e.input for e in examples]
        if self.selection == "tournament":
            winners, wins, failed = self.annotator.tournament(instructions, inputs, samples)
            self.n_failed += failed
            return [
                Selection(e.instruction, e.input, list(s), w, winner)
                for e, s, w, winner in zip(examples, samples, wins, winners, strict=True)
            ]
        n = len(samples[0]) if samples else 0
        flat_scored = self.score(
            [i for i in instructions for _ in range(n)],
            [x for x in inputs for _ in range(n)],
            [response for group in samples for response in group],
            [r for r in references for _ in range(n)],
        )
        self.n_failed += flat_scored.n_failed
        selections = []
        for row, (example, group) in enumerate(zip(examples, samples, strict=True)):
            scores = flat_scored.scores[row * n : (row + 1) * n]
            best = max(range(n), key=lambda k: (scores[k], -k))
            selections.append(
                Selection(example.instruction, example.input, list(group), scores, best)
            )
        return selections


def references_for(
    scorer: ScorerSpec,
    examples: Sequence[InstructionExample],
    policy: Policy,
    prompts: Sequence[str],
    generation: GenerationSpec,
    out_dir: Path,
) -> list[str]:
    """What each response is judged against (empty strings when nothing is needed)."""
    if scorer.kind != "annotator":
        return [""] * len(examples)
    if scorer.reference == "initial_policy":
        from simfarm.training.ppo import initial_references

        return initial_references(policy, prompts, generation, out_dir / "references.jsonl")
    missing = [i for i, e in enumerate(examples) if not e.output]
    if missing:
        raise ValueError(
            f"scorer.reference is 'data' but record {missing[0]} has no reference output"
        )
    return [e.output or "" for e in examples]


def select_best(
    policy: Policy,
    examples: Sequence[InstructionExample],
    prompts: Sequence[str],
    references: Sequence[str],
    runner: SelectionRunner,
    *,
    n: int,
    generation: GenerationSpec,
    seed: int,
) -> list[Selection]:
    """Best-of-n for ``examples`` (``prompts`` are their formatted prompts)."""
    from simfarm.training.policy import generate_with

    samples = generate_with(policy, prompts, generation, n=n, seed=seed)
    selections = runner.select(examples, [[s.text for s in row] for row in samples], references)
    for selection, row in zip(selections, samples, strict=True):
        selection.truncated = [s.truncated for s in row]
    return selections


def _read_done(path: Path) -> list[dict[str, Any]]:
    """Complete records already written (a torn last line from a kill is dropped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def summarise(records: Sequence[dict[str, Any]], n_failed: int) -> dict[str, float]:
    """Mean score of the chosen sample and of sample 0 (what best-of-1 would have returned)."""
    count = max(len(records), 1)
    return {
        "prompts": float(len(records)),
        "mean_best_score": sum(r["scores"][r["chosen_index"]] for r in records) / count,
        "mean_sample0_score": sum(r["scores"][0] for r in records) / count,
        "mean_sample_score": sum(sum(r["scores"]) / len(r["scores"]) for r in records) / count,
        "chosen_not_sample0": sum(r["chosen_index"] != 0 for r in records) / count,
        "score_failures": float(n_failed),
    }


def run_best_of_n(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    """The ``best_of_n`` recipe: chunk by chunk, sample, select, append; then summarise."""
    from simfarm.training.data import load_instructions
    from simfarm.training.policy import format_prompt, load_policy
    from simfarm.training.run import RecipeOutcome

    assert isinstance(config, BestOfNConfig)
    examples = load_instructions(config.data.prompts)
    context.record_data("prompts", Path(config.data.prompts.path))
    policy = load_policy(config.model, lora=None)
    chat = config.model.use_chat_template
    prompts = [
        format_prompt(policy.tokenizer, e.instruction, e.input, use_chat_template=chat)
        for e in examples
    ]
    runner = SelectionRunner(config.scorer, config.selection, config.model, policy.device)
    if config.scorer.kind == "annotator":
        context.record_persona(runner.id)
    else:
        context.record_data("reward_model", config.scorer.reward_model)
    references = references_for(
        config.scorer, examples, policy, prompts, config.generation, context.out_dir
    )

    out_path = context.out_dir / OUTPUT_FILE
    done = _read_done(out_path)
    resumed = bool(done)
    chunk = config.generation.batch_size
    start = len(done) - len(done) % chunk  # redo a partial chunk (its records are rewritten)
    done = done[:start]
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in done), encoding="utf-8")
    os.replace(tmp, out_path)
    context.metrics.truncate_after(start // chunk, stage="best_of_n")
    tokens = 0
    for begin in range(start, len(examples), chunk):
        end = min(begin + chunk, len(examples))
        context.report("best-of-n", begin, len(examples))
        selections = select_best(
            policy,
            examples[begin:end],
            prompts[begin:end],
            references[begin:end],
            runner,
            n=config.n,
            generation=config.generation,
            seed=config.seed,
        )
        records = [s.record() for s in selections]
        tokens += sum(
            len(policy.tokenizer(sample, add_special_tokens=False)["input_ids"])
            for s in selections
            for sample in s.samples
        )
        with out_path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
        done.extend(records)
        context.metrics.log(begin // chunk + 1, summarise(records, 0), stage="best_of_n")
    context.report("best-of-n", len(examples), len(examples))
    return RecipeOutcome(
        final_metrics=summarise(done, runner.n_failed),
        tokens=tokens or None,
        checkpoint=out_path,
        resumed=resumed,
        judge_usage=runner.usage if config.scorer.kind == "annotator" else None,
    )


__all__ = ["BestOfNConfig", "Selection", "SelectionRunner", "run_best_of_n", "select_best"]
