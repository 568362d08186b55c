"""``DIR/report.html``: one self-contained page (figures embedded as base64 data URIs, no
external asset) with the leaderboard, the evaluation judge's measured human agreement beside
it, the figures, what each stage cost (requests, tokens, $, wall time) and the setup.

Every string that came from a model, a dataset or a file is HTML-escaped: it is data.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from simfarm.evaluation.leaderboard import Leaderboard
from simfarm.experiment.config import ExperimentConfig
from simfarm.experiment.stages import StageRecord, atomic_write_text

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
.row{display:flex;gap:1.5rem;align-items:flex-start;flex-wrap:wrap}
.judge{border-left:4px solid #e0a030;background:#fff8e8;padding:.6rem .9rem;max-width:380px;
font-size:.9rem}
figure{margin:1rem 0} img{max-width:100%;border:1px solid #eee}
code{background:#f4f4f4;padding:0 .2rem}
"""


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _leaderboard_table(board: Leaderboard) -> str:
    head = (
        "<tr><th>method</th><th>win rate %</th><th>SE</th><th>LC win rate %</th><th>LC SE</th>"
        "<th>wins</th><th>losses</th><th>draws</th><th>n</th><th>avg length</th></tr>"
    )
    rows = [
        f"<tr><td>{escape(r.generator_2)}</td><td>{_num(r.win_rate)}</td>"
        f"<td>{_num(r.standard_error)}</td><td>{_num(r.length_controlled_winrate)}</td>"
        f"<td>{_num(r.lc_standard_error)}</td><td>{r.n_wins}</td><td>{r.n_wins_base}</td>"
        f"<td>{r.n_draws}</td><td>{r.n_total}</td><td>{r.avg_length}</td></tr>"
        for r in board.rows
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _cost_table(records: Mapping[str, StageRecord]) -> str:
    head = (
        "<tr><th>stage</th><th>wall time s</th><th>judge requests</th><th>cache hits</th>"
        "<th>tokens</th><th>$</th><th>this run</th></tr>"
    )
    rows = []
    for name, r in records.items():
        status = "reused (done earlier)" if r.skipped else "ran"
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{r.wall_time_s:.1f}</td><td>{r.cost.requests}</td>"
            f"<td>{r.cost.cache_hits}</td><td>{r.cost.tokens}</td>"
            f"<td>{r.cost.cost_usd:.4f}</td><td>{status}</td></tr>"
        )
    total_time = sum(r.wall_time_s for r in records.values())
    rows.append(
        f"<tr><th>total</th><th>{total_time:.1f}</th>"
        f"<th>{sum(r.cost.requests for r in records.values())}</th>"
        f"<th>{sum(r.cost.cache_hits for r in records.values())}</th>"
        f"<th>{sum(r.cost.tokens for r in records.values())}</th>"
        f"<th>{sum(r.cost.cost_usd for r in records.values()):.4f}</th><th></th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _final_metrics(records: Mapping[str, StageRecord]) -> str:
    rows = []
    for name, r in records.items():
        metrics = r.details.get("final_metrics")
        if not metrics:
            continue
        shown = ", ".join(f"{escape(k)}={_num(v, 4)}" for k, v in sorted(metrics.items()))
        rows.append(f"<tr><td>{escape(name)}</td><td style='text-align:left'>{shown}</td></tr>")
    if not rows:
        return ""
    return (
        "<h2>Final training metrics</h2><table><tr><th>stage</th><th>metrics</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _setup(config: ExperimentConfig) -> str:
    reference = config.evaluation.reference
    shown_reference = (
        f"outputs file <code>{escape(str(reference.outputs))}</code>"
        if reference.outputs
        else f"method <code>{escape(str(reference.method))}</code>'s eval outputs"
    )
    noise = config.feedback.label_noise
    methods = "".join(
        f"<li><code>{escape(m.name)}</code>: {escape(m.method)} from "
        f"<code>{escape(str(m.recipe))}</code>"
        + (f", overrides <code>{escape(json.dumps(m.overrides))}</code>" if m.overrides else "")
        + "</li>"
        for m in config.methods
    )
    return (
        "<h2>Setup</h2><ul>"
        f"<li>policy: <code>{escape(config.policy.name_or_path)}</code>, seed {config.seed}, "
        f"executor {escape(config.executor)}</li>"
        f"<li>training feedback: <code>{escape(config.feedback.annotator)}</code>"
        f"{'' if noise is None else f', label noise {noise}'}</li>"
        f"<li>evaluation judge: <code>{escape(config.evaluation.annotator)}</code> "
        f"(no label noise); reference: {shown_reference}</li>"
        f"<li>methods:<ul>{methods}</ul></li></ul>"
    )


def render_report(
    config: ExperimentConfig,
    board: Leaderboard,
    figures: Mapping[str, Path],
    records: Mapping[str, StageRecord],
) -> str:
    """The report page as one HTML string."""
    notes = board.judge_agreement or [
        f"judge `{config.evaluation.annotator}` has no measured human agreement: "
        "treat its verdicts as unvalidated"
    ]
    judge = "".join(f"<p>{escape(note)}</p>" for note in notes)
    images = "".join(
        f"<figure><img alt='{escape(title)}' src='{_image(path)}'>"
        f"<figcaption>{escape(title)}</figcaption></figure>"
        for title, path in figures.items()
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(config.name)} - simfarm experiment</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{escape(config.name)}</h1><p class='sub'>{escape(config.description)} "
        f"(simfarm, {generated})</p>"
        f"<h2>Leaderboard: win rate against <code>{escape(board.reference)}</code></h2>"
        f"<div class='row'><div>{_leaderboard_table(board)}</div>"
        f"<div class='judge'><b>Judge quality</b>{judge}</div></div>"
        f"<h2>Figures</h2>{images}"
        f"<h2>Cost and time per stage</h2>{_cost_table(records)}"
        f"{_final_metrics(records)}{_setup(config)}"
        "<p class='sub'>Everything this run used is in <code>manifest.json</code>; "
        "the leaderboard files are under <code>evaluation/</code>.</p>"
        "</body></html>\n"
    )


def read_leaderboard(path: Path) -> Leaderboard:
    """A written ``leaderboard.json`` back as a :class:`Leaderboard`.

    The file stores NaN as null (standard JSON): a win rate without valid verdicts, or the
    GLM weights of a model that only ties (the reference against itself), come back as NaN.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    data["glm_weights"] = {}  # not shown in the report; may hold nulls for degenerate fits
    for row in data.get("rows", []):
        for key in ("win_rate", "standard_error", "discrete_win_rate"):
            if row.get(key) is None:
                row[key] = math.nan
    return Leaderboard.model_validate(data)


def write_report(
    config: ExperimentConfig,
    out_dir: Path,
    records: Mapping[str, StageRecord],
    target: Path,
) -> Path:
    """Draw the figures (under ``DIR/plots/``) and write the report page."""
    from simfarm.experiment.plots import write_plots

    board = read_leaderboard(out_dir / "evaluation" / "leaderboard.json")
    run_dirs = {"sft": out_dir / "sft"}
    if config.reward_model is not None:
        run_dirs["reward_model"] = out_dir / "reward_model"
    run_dirs.update({m.name: out_dir / "methods" / m.name for m in config.methods})
    ppo = {m.name for m in config.methods if m.method == "ppo"}
    figures = write_plots(board, run_dirs, ppo, out_dir / "plots")
    atomic_write_text(target, render_report(config, board, figures, records))
    return target
