"""Run a recipe into an output folder: manifest, metrics, checkpoints, resume, result.

Layout of ``out_dir``::

    manifest.json        config, seeds, package versions, data digests, persona ids
    metrics.jsonl        one JSON object per logged step ({"step": ..., "stage": ..., ...})
    checkpoints/         intermediate resumable checkpoints (HF Trainer's checkpoint-N)
    checkpoint/          the final LoRA adapter or full weights (load_policy loads it)
    result.json          written last: its presence means the run finished

Running again with the same ``out_dir`` resumes from the last checkpoint; a finished run
returns its result at once. A different config for the same folder is refused rather than
silently mixed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from simfarm.errors import ConfigError
from simfarm.training.config import RecipeConfig, load_recipe_config
from simfarm.training.manifest import config_digest, file_digest, read_manifest, write_manifest
from simfarm.training.metrics import MetricsLogger
from simfarm.training.scoring import JudgeUsage

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``(stage description, done, total)``; a new description starts a new stage."""

RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINTS_DIR = "checkpoints"


class RecipeResult(BaseModel):
    """What a finished run produced."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path
    checkpoint: Path
    """The final checkpoint (LoRA adapter or full weights), loadable by load_policy."""
    final_metrics: dict[str, float]
    wall_time_s: float
    """Wall time of the run that finished it (a resumed run counts only its own time)."""
    tokens_per_s: float | None
    """Training tokens processed per second of wall time (None when not measured)."""
    resumed: bool = False
    """True when this run continued from a checkpoint left by an interrupted one."""
    judge_usage: JudgeUsage | None = None
    """Judge calls made while the recipe ran (PPO rewards, best-of-n and expert-iteration
    scoring, collected feedback) by the run that finished it: requests, cache hits, dollars.
    None when the recipe asked no judge."""


@dataclass
class RecipeOutcome:
    """What a method's runner returns to :func:`run_recipe`."""

    final_metrics: dict[str, float]
    tokens: int | None = None
    """Tokens processed (for tokens/s), None when not counted."""
    checkpoint: Path | None = None
    """Defaults to ``out_dir/checkpoint``."""
    resumed: bool = False
    judge_usage: JudgeUsage | None = None
    """The recipe's own judge calls (None when it asked no judge)."""


@dataclass
class RunContext:
    """Everything a runner needs besides its config: where to write, how to report."""

    out_dir: Path
    progress: ProgressCallback | None = None
    config: RecipeConfig | None = None
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    judge_usage: JudgeUsage | None = None
    """Judge calls made outside a runner's scorer (simulated feedback collection)."""
    metrics: MetricsLogger = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = MetricsLogger(self.out_dir)

    @property
    def checkpoint_dir(self) -> Path:
        """Where the final checkpoint goes."""
        return self.out_dir / CHECKPOINT_DIR

    @property
    def checkpoints_dir(self) -> Path:
        """Where intermediate checkpoints go (``checkpoint-N`` folders)."""
        return self.out_dir / CHECKPOINTS_DIR

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def record_data(self, name: str, path: Path | None = None, digest: str | None = None) -> None:
        """Note an input in the manifest (``path`` is digested unless ``digest`` is given)."""
        entry: dict[str, Any] = {}
        if path is not None:
            entry["path"] = str(path)
            if digest is None and Path(path).exists():
                digest = file_digest(Path(path))
        entry["sha256"] = digest
        self.manifest_extra.setdefault("data", {})[name] = entry

    def count_judge(self, summary: Any) -> None:
        """Add one annotation run's requests, cache hits and cost to the run's judge usage."""
        if self.judge_usage is None:
            self.judge_usage = JudgeUsage()
        self.judge_usage.add(summary)

    def record_persona(self, persona_id: str) -> None:
        personas = self.manifest_extra.setdefault("persona_ids", [])
        if persona_id not in personas:
            personas.append(persona_id)

    def record(self, key: str, value: Any) -> None:
        self.manifest_extra[key] = value

    def write_manifest(self) -> None:
        """Rewrite manifest.json now with what has been recorded so far."""
        if self.config is not None:
            write_manifest(self.out_dir, self.config, self.manifest_extra)


def _finished(out_dir: Path) -> RecipeResult | None:
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    return RecipeResult.model_validate_json(path.read_text(encoding="utf-8"))


def run_recipe(
    config: RecipeConfig | Path,
    out_dir: Path,
    overrides: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> RecipeResult:
    """Run (or resume, or just return) the recipe ``config`` in ``out_dir``."""
    if not isinstance(config, RecipeConfig):
        config = load_recipe_config(Path(config), overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe file; pass a Path, or edit the config")
    out_dir = Path(out_dir)
    previous = read_manifest(out_dir)
    if previous is not None and previous.get("config_digest") != config_digest(config):
        raise ConfigError(
            f"{out_dir}: holds a run of a different config (manifest.json); "
            "use a new --out folder, or the same config to resume"
        )
    done = _finished(out_dir)
    if done is not None:
        return done
    from simfarm.training.registry import runner
    from simfarm.training.vllm_generation import require_installed_engines

    require_installed_engines(config)

    out_dir.mkdir(parents=True, exist_ok=True)
    context = RunContext(out_dir=out_dir, progress=progress, config=config)
    if previous is not None:
        context.manifest_extra.update(
            {k: previous[k] for k in ("data", "persona_ids", "attempts") if k in previous}
        )
    write_manifest(out_dir, config, context.manifest_extra)
    started = time.perf_counter()
    outcome = runner(config.method)(config, context)
    wall = time.perf_counter() - started
    write_manifest(out_dir, config, context.manifest_extra)
    result = RecipeResult(
        out_dir=out_dir,
        checkpoint=outcome.checkpoint or context.checkpoint_dir,
        final_metrics=outcome.final_metrics,
        wall_time_s=round(wall, 3),
        tokens_per_s=round(outcome.tokens / wall, 2) if outcome.tokens and wall > 0 else None,
        resumed=outcome.resumed,
        judge_usage=_total_usage(outcome.judge_usage, context.judge_usage),
    )
    tmp = out_dir / f"{RESULT_FILE}.tmp"
    tmp.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / RESULT_FILE)
    return result


def _total_usage(*parts: JudgeUsage | None) -> JudgeUsage | None:
    present = [part for part in parts if part is not None]
    if not present:
        return None
    return JudgeUsage(
        annotations=sum(p.annotations for p in present),
        requests=sum(p.requests for p in present),
        cache_hits=sum(p.cache_hits for p in present),
        cost_usd=sum(p.cost_usd for p in present),
        cost_usd_total=sum(p.cost_usd_total for p in present),
    )


def read_result(out_dir: Path) -> RecipeResult | None:
    """The result of a finished run in ``out_dir`` (None when it has not finished)."""
    return _finished(Path(out_dir))


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
