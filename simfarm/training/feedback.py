"""Simulated feedback for a recipe: the policy samples two responses per prompt (sample indices
0 and 1), a simfarm persona or pool says which is better, the records go to
``out_dir/feedback.jsonl``.

Nothing is paid for twice: samples are appended to ``feedback_samples.jsonl`` batch by batch
(a killed run regenerates only the missing prompts), annotations go through simfarm's
completion cache, and a finished ``feedback.jsonl`` whose inputs match is reused as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simfarm.training.config import FeedbackSpec, RecipeConfig
from simfarm.training.data import load_instructions, write_jsonl
from simfarm.training.run import RunContext
from simfarm.types import PairwiseItem, stable_digest

FEEDBACK_FILE = "feedback.jsonl"
SAMPLES_FILE = "feedback_samples.jsonl"
META_FILE = "feedback.meta.json"


def _read_samples(path: Path, key: str) -> dict[int, list[str]]:
    """Samples already generated for this input key (a torn last line is ignored)."""
    done: dict[int, list[str]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("key") == key:
            done[int(row["index"])] = list(row["samples"])
    return done


def collect_feedback(config: RecipeConfig, spec: FeedbackSpec, context: RunContext) -> Path:
    """Generate, annotate and write the feedback records; returns the feedback.jsonl path."""
    from simfarm.annotation.loader import load_annotator
    from simfarm.annotation.run import BackendOverrides, annotate

    out = context.out_dir
    prompts = load_instructions(spec.prompts)
    context.record_data(
        "feedback_prompts", Path(spec.prompts.path) if Path(spec.prompts.path).exists() else None
    )
    annotator = load_annotator(spec.annotator, [Path(p) for p in spec.annotators_dirs] or None)
    key = stable_digest(
        {
            "prompts": [p.model_dump() for p in prompts],
            "model": config.model.model_dump(mode="json"),
            "generation": spec.generation.model_dump(),
            "seed": config.seed,
        }
    )
    meta = {
        "samples_key": key,
        "annotator": annotator.spec.id,
        "base_url": spec.base_url,
        "backend_model": spec.backend_model,
    }
    feedback_path = out / FEEDBACK_FILE
    meta_path = out / META_FILE
    if (
        feedback_path.is_file()
        and meta_path.is_file()
        and json.loads(meta_path.read_text(encoding="utf-8")) == meta
    ):
        context.record_data("feedback", feedback_path)
        return feedback_path

    samples = _read_samples(out / SAMPLES_FILE, key)
    missing = [i for i in range(len(prompts)) if i not in samples]
    if missing:
        samples.update(_generate(config, spec, context, prompts, missing, key))

    items = [
        PairwiseItem(
            instruction=p.instruction,
            input=p.input,
            output_1=samples[i][0],
            output_2=samples[i][1],
            generator_1="policy-sample-0",
            generator_2="policy-sample-1",
            item_id=str(i),
        )
        for i, p in enumerate(prompts)
    ]
    overrides = BackendOverrides(
        model=spec.backend_model,
        options={"base_url": spec.base_url} if spec.base_url else {},
    )
    stage = f"annotating with {annotator.spec.id}"

    def progress(done: int, total: int, _cost: float) -> None:
        context.report(stage, done, total)

    result = annotate(items, annotator, backend_overrides=overrides, progress=progress)
    context.count_judge(result.summary)
    write_jsonl(feedback_path, result.annotations)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    context.record_data("feedback", feedback_path)
    context.record("feedback_summary", result.summary.model_dump(mode="json"))
    return feedback_path


def _generate(
    config: RecipeConfig,
    spec: FeedbackSpec,
    context: RunContext,
    prompts: list[Any],
    missing: list[int],
    key: str,
) -> dict[int, list[str]]:
    """Two samples for each missing prompt, appended to the samples file batch by batch."""
    from simfarm.training.policy import format_prompt, generate_with, load_policy

    policy = load_policy(config.model, lora=None)
    texts = {
        i: format_prompt(
            policy.tokenizer,
            prompts[i].instruction,
            prompts[i].input,
            use_chat_template=config.model.use_chat_template,
        )
        for i in missing
    }
    stage = "sampling response pairs"
    done: dict[int, list[str]] = {}
    step = spec.generation.batch_size
    context.report(stage, 0, len(missing))
    with (context.out_dir / SAMPLES_FILE).open("a", encoding="utf-8") as handle:
        for start in range(0, len(missing), max(1, step // 2)):
            chunk = missing[start : start + max(1, step // 2)]
            outputs = generate_with(
                policy, [texts[i] for i in chunk], spec.generation, n=2, seed=config.seed
            )
            for i, samples in zip(chunk, outputs, strict=True):
                pair = [sample.text for sample in samples]
                done[i] = pair
                handle.write(json.dumps({"key": key, "index": i, "samples": pair}) + "\n")
            handle.flush()
            context.report(stage, start + len(chunk), len(missing))
    del policy
    from simfarm.training.vllm_generation import release_engine

    release_engine()  # training comes next: give a vLLM engine's GPU memory back
    return done
