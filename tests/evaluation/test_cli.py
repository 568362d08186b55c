"""The ``evaluate``, ``validate`` and ``correlate`` commands, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simfarm.cli import app

from ._shared import ALPACA, annotation_files, published_rows

runner = CliRunner()
ALPACA_COLUMNS = (
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
    "length_controlled_winrate",
)


def test_evaluate_annotations_form_through_the_installed_cli(tmp_path: Path) -> None:
    # The exact form scripts rely on, through `simfarm`'s own entry module.
    files = annotation_files()
    out = tmp_path / "board"
    command = [sys.executable, "-m", "simfarm.cli", "evaluate", "--annotations"]
    command += [str(files["claude-2"]), str(files["alpaca-7b"]), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "leaderboard.csv")
    assert frame.columns[0] == "generator_2"
    assert set(ALPACA_COLUMNS) <= set(frame.columns)
    board = frame.set_index("generator_2")
    assert set(board.index) == {"claude-2", "alpaca-7b"}
    published = published_rows()
    for model in board.index:
        for column in ("win_rate", "standard_error", "discrete_win_rate"):
            assert board.loc[model, column] == pytest.approx(
                float(published[model][column]), abs=1e-6
            )
        assert board.loc[model, "n_total"] == int(published[model]["n_total"])
    for name in ("leaderboard.json", "leaderboard.md", "leaderboard.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "instruction_difficulty.csv").is_file()
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["reference"] == "gpt4_1106_preview"
    assert "claude-2" in (out / "leaderboard.md").read_text()


def test_evaluate_reuses_stored_difficulty(tmp_path: Path) -> None:
    files = annotation_files()
    first, second = tmp_path / "a", tmp_path / "b"
    args = ["evaluate", "--annotations", str(files["gemma-7b-it"]), str(files["claude-2"])]
    assert runner.invoke(app, [*args, "--out", str(first)]).exit_code == 0
    stored = first / "instruction_difficulty.csv"
    result = runner.invoke(
        app,
        ["evaluate", "--annotations", str(files["gemma-7b-it"]), "--out", str(second),
         "--difficulty", str(stored)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    a = pd.read_csv(first / "leaderboard.csv", index_col=0)
    b = pd.read_csv(second / "leaderboard.csv", index_col=0)
    assert b.loc["gemma-7b-it", "length_controlled_winrate"] == pytest.approx(
        a.loc["gemma-7b-it", "length_controlled_winrate"], abs=1e-12
    )


def test_evaluate_from_model_outputs_with_an_annotator(tmp_path: Path) -> None:
    outputs = ALPACA / "model_outputs"
    out = tmp_path / "board"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model-outputs",
            str(outputs / "alpaca-7b.json"),
            str(outputs / "claude-2.json"),
            "--reference-outputs",
            str(outputs / "gpt4_1106_preview.json"),
            "--annotator",
            "longest",
            "--limit",
            "60",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv", index_col=0)
    assert set(board.index) == {"alpaca-7b", "claude-2"}
    assert (board["n_total"] == 60).all()
    saved = (out / "annotations" / "claude-2.jsonl").read_text().splitlines()
    assert len(saved) == 60 and json.loads(saved[0])["annotator"] == "longest"
    # `longest` prefers claude-2's longer outputs far more often than alpaca-7b's short ones
    assert board.loc["claude-2", "win_rate"] > board.loc["alpaca-7b", "win_rate"]
    # simfarm's own annotation JSONL reads back into the same leaderboard
    again = tmp_path / "again"
    jsonl = sorted(str(p) for p in (out / "annotations").glob("*.jsonl"))
    result = runner.invoke(app, ["evaluate", "--annotations", *jsonl, "--out", str(again)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_csv(again / "leaderboard.csv", index_col=0), board)


def test_judge_agreement_comes_from_the_persona_that_judged(tmp_path: Path) -> None:
    # A persona only in --annotators-dir: its measured agreement must reach the board, both
    # when it judges and when its annotation files are evaluated later.
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "my_judge.yaml").write_text(
        "rule: longest\n"
        "measured_agreement: {human_set: my hand-labelled pairs, n: 40, agreement: 0.625}\n"
    )
    note = "judge `my_judge`: human agreement 0.625 on my hand-labelled pairs (n=40)"
    outputs = ALPACA / "model_outputs"
    out = tmp_path / "board"
    result = runner.invoke(
        app,
        ["evaluate", "--model-outputs", str(outputs / "alpaca-7b.json"),
         "--reference-outputs", str(outputs / "gpt4_1106_preview.json"),
         "--annotator", "my_judge", "--annotators-dir", str(personas), "--limit", "20",
         "--no-lc", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "leaderboard.json").read_text())["judge_agreement"] == [note]
    assert note in (out / "leaderboard.md").read_text()
    assert "human agreement 0.625" in result.output

    saved = str(out / "annotations" / "alpaca-7b.jsonl")
    again = tmp_path / "again"
    args = ["evaluate", "--annotations", saved, "--no-lc", "--out", str(again)]
    result = runner.invoke(app, [*args, "--annotators-dir", str(personas)])
    assert result.exit_code == 0, result.output
    assert json.loads((again / "leaderboard.json").read_text())["judge_agreement"] == [note]
    # Without the folder, `my_judge` is no persona here: nothing is claimed about it.
    unknown = tmp_path / "unknown"
    result = runner.invoke(
        app, ["evaluate", "--annotations", saved, "--no-lc", "--out", str(unknown)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((unknown / "leaderboard.json").read_text())["judge_agreement"] == []


def test_evaluate_reports_usage_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--annotations" in result.output
    missing = runner.invoke(app, ["evaluate", "--annotations", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "nope.json" in missing.output


def test_validate_longest_on_pandalm(shared_data: Path, tmp_path: Path) -> None:
    # Calls the real annotation engine (`simfarm.annotation.annotate_pairs`, persona
    # `longest`): three-way agreement with the human majority and the human ceiling.
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["validate", "--annotator", "longest", "--data-dir", str(shared_data), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["set"] == "pandalm" and report["annotator"] == "longest"
    overall = report["overall"]
    assert round(overall["accuracy_with_ties"], 1) == 61.1
    assert round(overall["human_loo_ceiling"], 1) == 92.0
    assert overall["n_items"] == 999 and overall["n_failed"] == 0
    assert {(i["record"], i["field"]) for i in report["issues"]} >= {(157, "response1")}
    markdown = (out / "report.md").read_text()
    assert "61.1" in markdown and "92.0" in markdown
    assert "record 157: field 'response1'" in markdown
    assert report["systems"]["spearman"] is not None


def test_validate_llmbar_breaks_down_by_group(shared_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["validate", "--annotator", "longest", "--set", "llmbar", "--single-order",
         "--data-dir", str(shared_data), "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"Natural", "Adversarial"} <= set(report["groups"])
    assert report["subsets"]["Natural"]["n_items"] == 100
    # Adversarial pairs are built so that the worse output looks better (often longer)
    natural = report["groups"]["Natural"]["accuracy_with_ties"]
    assert report["groups"]["Adversarial"]["accuracy_with_ties"] < natural


def test_validate_topical_chat_correlates_per_aspect(shared_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["validate", "--annotator", "longest", "--set", "topical_chat", "--limit", "20",
         "--data-dir", str(shared_data), "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    aspects = {a["aspect"]: a for a in report["rating"]["aspects"]}
    assert set(aspects) >= {"overall", "engagingness", "groundedness"}
    assert aspects["overall"]["n"] == 120
    assert all(-1 <= a["spearman"] <= 1 for a in aspects.values())


def test_validate_precomputed_annotations_with_ratings(shared_data: Path, tmp_path: Path) -> None:
    from simfarm.evaluation.human_sets import find_human_set, load_human_set

    loaded = load_human_set(find_human_set("topical_chat"), data_root=shared_data, limit=5)
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text(
        "\n".join(
            json.dumps({"item_id": r.item_id, "score": r.scores["overall"]}) for r in loaded.ratings
        ),
        encoding="utf-8",
    )
    # A "perfect" rating annotator: its scores are the human overall scores.
    annotations = tmp_path / "a.jsonl"
    from simfarm.evaluation.human_sets import rating_pairs
    from simfarm.types import PairwiseAnnotation

    pairs = rating_pairs(find_human_set("topical_chat"), loaded.ratings)
    annotations.write_text(
        "\n".join(
            PairwiseAnnotation(
                **p.item.model_dump(), annotator="oracle", preference=p.human[0]
            ).model_dump_json()
            for p in pairs
        ),
        encoding="utf-8",
    )
    result = runner.invoke(
        app,
        ["validate", "--set", "topical_chat", "--limit", "5", "--annotations", str(annotations),
         "--ratings", str(ratings), "--data-dir", str(shared_data), "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["annotator"] == "oracle"
    assert report["overall"]["accuracy_with_ties"] == 100.0
    overall = next(a for a in report["rating"]["aspects"] if a["aspect"] == "overall")
    assert overall["spearman"] == pytest.approx(1.0)


def test_correlate_published_lc_with_arena(shared_data: Path, tmp_path: Path) -> None:
    board = ALPACA / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"
    result = runner.invoke(
        app, ["correlate", str(board), "--data-dir", str(shared_data), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "correlation.json").read_text())
    assert "length_controlled_winrate" in data["simulated_label"]
    assert "Arena Elo" in data["human_label"]
    assert len(data["systems"]) >= 30
    low, high = data["spearman_ci"]
    assert low <= data["spearman"] <= high
    assert data["spearman"] > 0.8  # the LC paper reports 0.98 on its board
    assert (tmp_path / "correlation.png").stat().st_size > 0
    assert "Spearman" in (tmp_path / "correlation.md").read_text()


def _persona_on_fake_server(folder: Path, base_url: str) -> str:
    """A copy of a bundled LLM persona whose backend is the loopback fake server."""
    import shutil

    import yaml

    from simfarm.paths import bundled_data_dir

    spec = yaml.safe_load((bundled_data_dir("annotators") / "alpaca_farm_greedy.yaml").read_text())
    spec["backend"]["options"] = {"base_url": base_url, "timeout_s": 5.0}
    shutil.copytree(bundled_data_dir("annotators") / "prompts", folder / "prompts")
    (folder / "fake_judge.yaml").write_text(yaml.safe_dump(spec))
    return "fake_judge"


@pytest.mark.parametrize(("policy", "consistency"), [("first", 0.0), ("longest", 100.0)])
def test_validate_a_model_judge_in_both_orders(
    shared_data: Path, tmp_path: Path, policy: str, consistency: float
) -> None:
    # A real LLM persona through the real engine and HTTP client, answered by the fake
    # server: a judge that always picks the output shown first is never position-consistent.
    from simfarm.testing.openai_server import start_server

    with start_server(policy=policy) as server:
        name = _persona_on_fake_server(tmp_path, server.base_url)
        result = runner.invoke(
            app,
            ["validate", "--annotator", name, "--annotators-dir", str(tmp_path),
             "--set", "llmbar", "--subset", "Natural", "--limit", "12", "--samples", "2",
             "--quiet", "--data-dir", str(shared_data), "--out", str(tmp_path / "r")],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    overall = json.loads((tmp_path / "r" / "report.json").read_text())["overall"]
    assert overall["n_items"] == 12 and overall["n_failed"] == 0
    assert overall["n_position_checked"] == 24  # 12 pairs x 2 samples
    assert overall["position_consistency"] == consistency
    assert overall["variance"] == 0.0  # the fake judge is deterministic
