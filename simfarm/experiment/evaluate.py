"""The evaluation stage: every method's eval outputs against the reference, judged by the
evaluation annotator (label noise forced to 0), then simfarm.evaluation's leaderboard.

The win-rate, SE and LC math is simfarm.evaluation's (alpaca_eval-exact); this module only
pairs the files, runs the judge with progress and cost accounting, and hands the annotations
to :func:`simfarm.evaluation.write_evaluation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from simfarm.annotation.run import AnnotationSummary
from simfarm.errors import ConfigError

if TYPE_CHECKING:
    from simfarm.execution import ExecutorFactory


def evaluate_methods(
    methods: Mapping[str, Path],
    reference: Path,
    annotator: str,
    out_dir: Path,
    *,
    length_controlled: bool,
    progress: Callable[[str, int, int], None],
    executor_factory: ExecutorFactory | None = None,
) -> list[AnnotationSummary]:
    """Judge each method against ``reference``, write the leaderboard; returns the judge
    summaries (requests, cost, cache hits) per method. ``executor_factory`` sends the
    judge's requests another way (Ray actors); None: in this process."""
    from simfarm.annotation import annotate
    from simfarm.annotation.loader import measured_agreement_note
    from simfarm.datafiles import load_model_outputs, pair_outputs
    from simfarm.evaluation.run_evaluation import EvaluationInputs, write_evaluation
    from simfarm.experiment.judges import load_judge

    judge = load_judge(annotator, 0.0)
    reference_outputs = load_model_outputs(reference, "error", warn=False).outputs
    note = measured_agreement_note(judge)
    inputs = EvaluationInputs(annotations={}, judge_agreement=[note] if note else [])
    summaries = []
    for name, path in methods.items():
        outputs = load_model_outputs(path, "error", warn=False, default_generator=name).outputs
        items, unpaired = pair_outputs(outputs, reference_outputs)
        if unpaired:
            raise ConfigError(
                f"{reference}: no reference output for {len(unpaired)} eval instruction(s) of "
                f"{name} (first: {unpaired[0][:80]!r}); the reference must cover the eval split"
            )
        label = f"judging {name}"

        def report(done: int, total: int, _cost: float, label: str = label) -> None:
            progress(label, done, total)

        result = annotate(items, judge, progress=report, executor_factory=executor_factory)
        inputs.annotations[name] = result.annotations
        summaries.append(result.summary)
    write_evaluation(inputs, out_dir, length_controlled=length_controlled, save_annotations=True)
    return summaries
