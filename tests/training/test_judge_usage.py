"""Judge calls made inside recipes (best-of-n scoring, PPO rewards) are counted — requests,
cache hits, dollars — into the run's result and the experiment's cost table. The judge is a
real persona pointed at the fake OpenAI-protocol server on loopback, with a price table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simfarm.testing.openai_server import start_server
from tests.server_personas import make_persona

pytestmark = pytest.mark.slow

PRICE = {"prompt_per_million": 1_000_000.0, "completion_per_million": 2_000_000.0}
"""$1 a prompt token, $2 a completion token: any request shows up in dollars."""


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"Name thing {i}.", "output": "x" * 10} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _scorer(folder: Path, name: str) -> dict[str, Any]:
    return {"kind": "annotator", "annotator": name, "annotators_dirs": [str(folder)]}


def test_best_of_n_and_ppo_count_their_judge_requests(
    tiny_model_dir: Path, prompts_file: Path, tmp_path: Path
) -> None:
    from simfarm.training.best_of_n import BestOfNConfig
    from simfarm.training.ppo import PPOConfig
    from simfarm.training.run import run_recipe

    personas = tmp_path / "personas"
    personas.mkdir()
    model = {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu"}
    with start_server(policy="longest") as server:
        name = make_persona(personas, server, options={"price": PRICE})
        best_of_n = BestOfNConfig.model_validate(
            {
                "method": "best_of_n",
                "model": model,
                "data": {"prompts": {"path": str(prompts_file)}},
                "n": 2,
                "scorer": _scorer(personas, name),
                "generation": {"max_new_tokens": 4, "temperature": 1.0},
            }
        )
        first = run_recipe(best_of_n, tmp_path / "bon")
        sent = server.stats()["requests"]
        again = run_recipe(best_of_n, tmp_path / "bon-again")  # same samples: all cached
        assert server.stats()["requests"] == sent
        ppo = PPOConfig.model_validate(
            {
                "method": "ppo",
                "model": model,
                "data": {"prompts": {"path": str(prompts_file)}},
                "scorer": _scorer(personas, name),
                "generation": {"max_new_tokens": 4, "temperature": 1.0},
                "ppo": {"steps": 1, "batch_size": 4, "mini_batch_size": 4, "ppo_epochs": 1},
            }
        )
        trained = run_recipe(ppo, tmp_path / "ppo")
        ppo_sent = server.stats()["requests"] - sent

    assert first.judge_usage is not None and again.judge_usage is not None
    assert first.judge_usage.annotations == 8  # 4 prompts x 2 samples vs the reference
    assert first.judge_usage.requests == sent > 0
    assert first.judge_usage.cache_hits == 0
    assert first.judge_usage.cost_usd > sent  # at least a prompt token per request
    assert again.judge_usage.requests == 0
    assert again.judge_usage.cache_hits == 8
    assert again.judge_usage.cost_usd == 0.0
    # What the cached verdicts cost when the first run paid for them is still reported.
    assert first.judge_usage.cost_usd_total == pytest.approx(first.judge_usage.cost_usd)
    assert again.judge_usage.cost_usd_total == pytest.approx(first.judge_usage.cost_usd)
    assert trained.judge_usage is not None
    assert trained.judge_usage.annotations == 4
    assert trained.judge_usage.requests + trained.judge_usage.cache_hits >= 4
    assert trained.judge_usage.requests == ppo_sent
    assert trained.judge_usage.cost_usd > 0
    saved = json.loads((tmp_path / "ppo" / "result.json").read_text(encoding="utf-8"))
    assert saved["judge_usage"]["requests"] == ppo_sent


def test_a_recipe_stage_charges_its_judge_usage_to_the_cost_table() -> None:
    from simfarm.experiment.report import _cost_table
    from simfarm.experiment.run import _charge_judge
    from simfarm.experiment.stages import StageContext, StageRecord
    from simfarm.training.scoring import JudgeUsage

    ctx = StageContext("method_ppo", lambda *_: None)
    ctx.cost.tokens = 500
    _charge_judge(ctx, JudgeUsage(annotations=40, requests=31, cache_hits=9, cost_usd=0.125))
    record = StageRecord(
        name="method_ppo",
        input_digest="d",
        outputs=[],
        wall_time_s=1.0,
        finished_at="now",
        cost=ctx.cost,
        details=ctx.details,
    )
    assert (record.cost.requests, record.cost.cache_hits, record.cost.tokens) == (31, 9, 500)
    assert record.details["judge_usage"]["annotations"] == 40
    table = _cost_table({"method_ppo": record})
    assert "<td>31</td><td>9</td><td>500</td><td>0.1250</td>" in table


def test_simfarm_train_shows_the_judge_usage(tmp_path: Path) -> None:
    from rich.console import Console

    from simfarm.cli.train import _summary
    from simfarm.training.run import RecipeResult
    from simfarm.training.scoring import JudgeUsage

    def shown(usage: JudgeUsage | None) -> str:
        result = RecipeResult(
            out_dir=tmp_path,
            checkpoint=tmp_path / "checkpoint",
            final_metrics={"mean_score": 0.5},
            wall_time_s=3.0,
            tokens_per_s=None,
            judge_usage=usage,
        )
        console = Console(record=True, width=200)
        console.print(_summary(result, "ppo"))
        return console.export_text()

    usage = JudgeUsage(
        annotations=40, requests=31, cache_hits=9, cost_usd=0.125, cost_usd_total=0.5
    )
    said = "31 requests, 9 cache hits, $0.1250 this run, $0.5000 in all (40 verdicts)"
    assert said in shown(usage)
    assert "judge" not in shown(None)
