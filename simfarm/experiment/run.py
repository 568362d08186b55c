"""One experiment, end to end, as cached stages (see :mod:`.stages`).

SFT -> sample pairs on the preference split -> the feedback annotator judges them -> (reward
model) -> train each method -> every method answers the eval split -> the evaluation
annotator judges each against the reference -> leaderboard -> plots and report.

Layout of the run folder ``DIR``::

    experiment.yaml            the config as validated (paths resolved)
    manifest.json              everything the run used (configs, versions, seeds, digests)
    stages.jsonl               every stage start / skip / finish, oldest first
    stages/<stage>.done.json   done-markers (input digest, outputs, wall time, cost)
    sft/                       the SFT baseline's recipe run (checkpoint/, metrics.jsonl)
    feedback/pairs.jsonl       the SFT policy's sample pairs
    feedback/preferences.jsonl the feedback annotator's verdicts (training data)
    reward_model/              the reward model's recipe run, when one is configured
    methods/<name>/            each method's recipe run and its eval_outputs.json
    evaluation/                annotations per method, leaderboard.{csv,md,json,png}
    plots/                     win rate, training loss, PPO reward and KL curves
    report.html                one self-contained page with all of the above
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simfarm.experiment.config import ExperimentConfig, MethodSpec
from simfarm.experiment.executors import JudgeExecutors
from simfarm.experiment.recipes import Injected, build_recipe_config
from simfarm.experiment.stages import (
    ExperimentProgress,
    StageContext,
    StageRecord,
    StageRunner,
    atomic_write_text,
)
from simfarm.types import PairwiseItem, stable_digest


@dataclass
class ExperimentResult:
    """What a run produced and where."""

    out_dir: Path
    stages: list[StageRecord]
    leaderboard_path: Path
    report_path: Path
    manifest_path: Path
    wall_time_s: float
    judge_agreement: list[str] = field(default_factory=list)


SFT_STAGE = "sft"


def _is_sft_baseline(config: ExperimentConfig, spec: MethodSpec) -> bool:
    """A ``method: sft`` entry without its own recipe/overrides is the SFT stage itself."""
    return (
        spec.method == "sft"
        and spec.recipe == config.sft.recipe
        and spec.overrides == config.sft.overrides
    )


def _write_records(path: Path, records: Sequence[Any]) -> None:
    lines = "".join(r.model_dump_json() + "\n" for r in records)
    atomic_write_text(path, lines)


STAGE_DIGEST_FILE = "experiment_stage.digest"
"""Written into a recipe's run folder: the input digest of the stage that owns it."""


def _claim_run_dir(run_dir: Path, digest: str) -> None:
    """Make ``run_dir`` this stage's: a folder left by the same stage (same input digest:
    a crash mid-training) is kept so the recipe resumes; one left for other inputs (an
    edited config, a retrained upstream stage) is moved aside, never deleted, so the recipe
    neither refuses it nor returns its stale result."""
    marker = run_dir / STAGE_DIGEST_FILE
    if run_dir.exists():
        previous = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if previous == digest:
            return
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{int(time.time())}")
        run_dir.rename(aside)
    run_dir.mkdir(parents=True)
    atomic_write_text(marker, digest + "\n")


class ExperimentRun:
    """The state of one :func:`run_experiment` call; one method per stage."""

    def __init__(
        self, config: ExperimentConfig, out_dir: Path, progress: ExperimentProgress | None
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir).resolve()
        self.stages = StageRunner(self.out_dir, progress)
        self.config_digest = stable_digest(config.model_dump(mode="json"))
        self.checkpoints: dict[str, tuple[Any, Path | None]] = {}
        """method name -> (its recipe's ModelSpec, checkpoint) to sample from."""
        self.eval_outputs: dict[str, Path] = {}
        self.judge_executors = JudgeExecutors(config.executor)
        """Where the judge stages send requests (``executor``); closed by run_experiment."""

    # -- helpers ----------------------------------------------------------------------

    def _examples(self, split: str) -> list[Any]:
        from simfarm.training.data import load_instructions

        return list(load_instructions(getattr(self.config.data, split)))

    def _split_digest(self, split: str) -> str:
        """Digest of a split's content (what the run actually read)."""
        return stable_digest([e.model_dump(mode="json") for e in self._examples(split)])

    def _train(self, stage: str, spec: MethodSpec, run_dir: Path, after: Sequence[str]) -> None:
        """A recipe run as a stage (the recipe resumes from its own checkpoints)."""
        from simfarm.training.run import run_recipe

        injected = self._injected()
        recipe = build_recipe_config(self.config, spec, injected)
        inputs = recipe.model_dump(mode="json")

        def body(ctx: StageContext) -> None:
            _claim_run_dir(run_dir, self.stages.digest(stage, inputs, after))
            result = run_recipe(recipe, run_dir, progress=ctx.progress)
            ctx.details["final_metrics"] = result.final_metrics
            ctx.details["checkpoint"] = str(result.checkpoint)
            if result.tokens_per_s:
                ctx.cost.tokens = int(result.tokens_per_s * result.wall_time_s)
            if result.judge_usage is not None:
                # The recipe's own judge calls (PPO rewards, best-of-n scoring, ...).
                _charge_judge(ctx, result.judge_usage)

        record = self.stages.run(stage, inputs, [run_dir / "result.json"], body, after=after)
        self.checkpoints[spec.name] = (recipe.model, Path(record.details["checkpoint"]))

    def _note_ray(self, ctx: StageContext) -> None:
        """Ray actors' deaths, restarts and retries so far, in the stage record."""
        stats = self.judge_executors.stats()
        if stats is not None:
            ctx.details["ray"] = dataclasses.asdict(stats)

    def _injected(self) -> Injected:
        return injected_paths(self.config, self.out_dir)

    # -- stages -----------------------------------------------------------------------

    def sft(self) -> None:
        self._train(SFT_STAGE, self.config.sft, self.out_dir / "sft", after=())

    def feedback_pairs(self) -> None:
        from simfarm.experiment.generation import sample

        spec = self.config.feedback.generation
        model, checkpoint = self.checkpoints[SFT_STAGE]
        target = self.out_dir / "feedback" / "pairs.jsonl"

        def body(ctx: StageContext) -> None:
            examples = self._examples("preference")
            generated = sample(
                model,
                checkpoint,
                examples,
                spec,
                n=2,
                seed=self.config.seed,
                progress=lambda done, total: ctx.progress("sampling pairs", done, total),
            )
            items = [
                PairwiseItem(
                    instruction=ex.instruction,
                    input=ex.input,
                    output_1=texts[0],
                    output_2=texts[1],
                    generator_1="sft#0",
                    generator_2="sft#1",
                    item_id=str(index),
                )
                for index, (ex, texts) in enumerate(zip(examples, generated.texts, strict=True))
            ]
            _write_records(target, items)
            ctx.cost.tokens = generated.tokens
            ctx.details["pairs"] = len(items)

        inputs = {"generation": spec.model_dump(), "split": self._split_digest("preference")}
        self.stages.run("feedback.sample", inputs, [target], body, after=[SFT_STAGE])

    def feedback_annotations(self) -> None:
        from simfarm.experiment.judges import load_judge

        source = self.out_dir / "feedback" / "pairs.jsonl"
        target = self.out_dir / "feedback" / "preferences.jsonl"
        feedback = self.config.feedback

        def body(ctx: StageContext) -> None:
            from simfarm.annotation import annotate

            items = [
                PairwiseItem.model_validate_json(line)
                for line in source.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
            judge = load_judge(feedback.annotator, feedback.label_noise)
            result = annotate(
                items,
                judge,
                progress=lambda done, total, _cost: ctx.progress("judging pairs", done, total),
                executor_factory=self.judge_executors.factory(),
            )
            _write_records(target, result.annotations)
            _charge(ctx, result.summary)
            self._note_ray(ctx)
            ctx.details["preferences"] = {
                "output_1": result.summary.n_output_1_wins,
                "output_2": result.summary.n_output_2_wins,
                "ties": result.summary.n_ties,
                "failed": result.summary.n_failed,
            }

        inputs = {"annotator": _annotator_identity(feedback.annotator, feedback.label_noise)}
        self.stages.run("feedback.annotate", inputs, [target], body, after=["feedback.sample"])

    def reward_model(self) -> None:
        if self.config.reward_model is None:
            return
        self._train(
            "reward_model",
            self.config.reward_model,
            self.out_dir / "reward_model",
            after=[SFT_STAGE, "feedback.annotate"],
        )

    def train_methods(self) -> list[str]:
        """Train every method (the SFT baseline entry reuses the SFT stage)."""
        trained = []
        for spec in self.config.methods:
            if _is_sft_baseline(self.config, spec):
                self.checkpoints[spec.name] = self.checkpoints[SFT_STAGE]
                continue
            after = [SFT_STAGE, "feedback.annotate"]
            if self.config.reward_model is not None:
                after.append("reward_model")
            stage = f"train.{spec.name}"
            self._train(stage, spec, self.out_dir / "methods" / spec.name, after=after)
            trained.append(stage)
        return trained

    def _train_stage_of(self, name: str) -> str:
        spec = next((s for s in self.config.methods if s.name == name), None)
        if spec is None or _is_sft_baseline(self.config, spec):
            return SFT_STAGE
        return f"train.{name}"

    def eval_generation(self) -> None:
        from simfarm.experiment.generation import sample

        spec = self.config.evaluation.generation
        names = [m.name for m in self.config.methods]
        reference = self.config.evaluation.reference.method
        if reference is not None and reference not in names:
            names.append(reference)  # the SFT stage as reference, not on the board
            self.checkpoints.setdefault(reference, self.checkpoints[SFT_STAGE])
        split = self._split_digest("eval")
        methods = {m.name: m.method for m in self.config.methods}
        for name in names:
            model, checkpoint = self.checkpoints[name]
            target = self.out_dir / "methods" / name / "eval_outputs.json"
            if methods.get(name) == "best_of_n":
                self._selected_outputs(name, checkpoint, target)
                continue

            def body(
                ctx: StageContext,
                name: str = name,
                model: Any = model,
                checkpoint: Path | None = checkpoint,
                target: Path = target,
            ) -> None:
                examples = self._examples("eval")
                generated = sample(
                    model,
                    checkpoint,
                    examples,
                    spec,
                    n=1,
                    seed=self.config.seed,
                    progress=lambda done, total: ctx.progress("answering", done, total),
                )
                outputs = [
                    {
                        "instruction": ex.instruction,
                        "input": ex.input,
                        "output": texts[0],
                        "generator": name,
                    }
                    for ex, texts in zip(examples, generated.texts, strict=True)
                ]
                atomic_write_text(target, json.dumps(outputs, indent=1, ensure_ascii=False))
                ctx.cost.tokens = generated.tokens

            self.stages.run(
                f"generate.{name}",
                {"generation": spec.model_dump(), "split": split, "method": name},
                [target],
                body,
                after=[self._train_stage_of(name)],
            )
            self.eval_outputs[name] = target

    def _selected_outputs(self, name: str, selections: Path | None, target: Path) -> None:
        """Best-of-n is inference-time: its recipe run already answered the eval prompts
        (``best_of_n.jsonl``); this stage turns its picks into eval outputs."""
        assert selections is not None

        def body(ctx: StageContext) -> None:
            records = [
                json.loads(line)
                for line in selections.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
            outputs = [
                {
                    "instruction": r["instruction"],
                    "input": r.get("input", ""),
                    "output": r["output"],
                    "generator": name,
                }
                for r in records
            ]
            atomic_write_text(target, json.dumps(outputs, indent=1, ensure_ascii=False))
            ctx.details["answers"] = len(outputs)

        self.stages.run(
            f"generate.{name}",
            {"method": name, "from": "best_of_n selections"},
            [target],
            body,
            after=[f"train.{name}"],
        )
        self.eval_outputs[name] = target

    def evaluate(self) -> None:
        from simfarm.experiment.evaluate import evaluate_methods

        evaluation = self.config.evaluation
        out = self.out_dir / "evaluation"
        reference = evaluation.reference
        reference_path = (
            reference.outputs
            if reference.outputs is not None
            else self.eval_outputs[reference.method or SFT_STAGE]
        )
        methods = {m.name: self.eval_outputs[m.name] for m in self.config.methods}

        def body(ctx: StageContext) -> None:
            summaries = evaluate_methods(
                methods,
                reference_path,
                evaluation.annotator,
                out,
                length_controlled=evaluation.length_controlled,
                progress=lambda desc, done, total: ctx.progress(desc, done, total),
                executor_factory=self.judge_executors.factory(),
            )
            for summary in summaries:
                _charge(ctx, summary)
            self._note_ray(ctx)

        after = [f"generate.{name}" for name in self.eval_outputs]
        inputs = {
            "annotator": _annotator_identity(evaluation.annotator, 0.0),
            "reference": _file_digest(reference_path) if reference.outputs else reference.method,
            "length_controlled": evaluation.length_controlled,
        }
        self.stages.run(
            "evaluate",
            inputs,
            [out / "leaderboard.csv", out / "leaderboard.json"],
            body,
            after=after,
        )

    def report(self, started: float) -> Path:
        from simfarm.experiment.report import write_report

        target = self.out_dir / "report.html"

        def body(ctx: StageContext) -> None:
            write_report(self.config, self.out_dir, self.stages.records, target)

        self.stages.run(
            "report",
            {"config": self.config_digest},
            [target],
            body,
            after=list(self.stages.records),
        )
        return target


def injected_paths(config: ExperimentConfig, out_dir: Path) -> Injected:
    """Where a run keeps what the recipes are pointed at (see :class:`Injected`)."""
    from simfarm.experiment.judges import materialize_judge

    reward = out_dir / "reward_model" / "checkpoint"
    judge = materialize_judge(
        config.feedback.annotator, config.feedback.label_noise, out_dir / "annotators"
    )
    return Injected(
        sft_checkpoint=out_dir / "sft" / "checkpoint",
        preferences=out_dir / "feedback" / "preferences.jsonl",
        reward_model=reward if config.reward_model is not None else None,
        feedback_judge=str(judge),
    )


def _charge(ctx: StageContext, summary: Any) -> None:
    ctx.cost.requests += summary.requests_sent
    ctx.cost.cost_usd += summary.cost_usd
    ctx.cost.cache_hits += summary.cache_hits


def _charge_judge(ctx: StageContext, usage: Any) -> None:
    """Charge a recipe's judge usage to its stage (requests, cache hits, dollars), and keep
    it among the stage's details for the report."""
    ctx.cost.requests += usage.requests
    ctx.cost.cache_hits += usage.cache_hits
    ctx.cost.cost_usd += usage.cost_usd
    ctx.details["judge_usage"] = usage.model_dump(mode="json")


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _annotator_identity(name: str, label_noise: float | None) -> dict[str, Any]:
    """The annotator's full definition (persona files, templates), so editing one redoes
    the stages it judged."""
    from simfarm.experiment.judges import judge_definition

    return {"definition": judge_definition(name), "label_noise": label_noise}


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    progress: ExperimentProgress | None = None,
    config_source: Path | None = None,
) -> ExperimentResult:
    """Run (or resume) an experiment in ``out_dir``; finished stages are not redone."""
    from simfarm.experiment.manifest import write_manifest

    started = time.perf_counter()
    run = ExperimentRun(config, out_dir, progress)
    atomic_write_text(run.out_dir / "experiment.json", config.model_dump_json(indent=2) + "\n")
    try:
        run.sft()
        run.feedback_pairs()
        run.feedback_annotations()
        run.reward_model()
        run.train_methods()
        run.eval_generation()
        run.evaluate()
    finally:
        run.judge_executors.close()
    report = run.report(started)
    manifest = write_manifest(config, run.out_dir, run.stages.records, config_source)
    board = json.loads((run.out_dir / "evaluation" / "leaderboard.json").read_text())
    return ExperimentResult(
        out_dir=run.out_dir,
        stages=list(run.stages.records.values()),
        leaderboard_path=run.out_dir / "evaluation" / "leaderboard.csv",
        report_path=report,
        manifest_path=manifest,
        wall_time_s=time.perf_counter() - started,
        judge_agreement=board.get("judge_agreement", []),
    )
