"""``data.test_leaderboard`` of the ``distilled_judge`` recipe: reading a published board and
the outputs of the systems it ranks (bad input named by file, row and field), and, through
the real ``simfarm train`` on real GPT-4 verdicts, that a training system's board score comes
from a head that never trained on it: flipping every verdict of that system leaves its score
unchanged, while the shipped head (which scores a system it never trained on) moves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.errors import ConfigError
from simfarm.training.distilled_board import (
    BoardPairs,
    LeaderboardSpec,
    PublishedBoard,
    board_figures,
    read_board,
    read_published,
)
from simfarm.training.distilled_unseen import shared_outputs
from simfarm.training.verdicts import Verdict
from tests.conftest import SHARED_DATA

ALPACA = SHARED_DATA / "alpaca_eval"
GPT4 = ALPACA / "annotations_alpaca_eval_gpt4"
BOARD = ALPACA / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"
REFERENCE = ALPACA / "model_outputs" / "gpt4_1106_preview.json"
needs_data = pytest.mark.skipif(not GPT4.is_dir(), reason=f"no GPT-4 annotations in {GPT4}")
SYSTEMS = ("alpaca-7b", "claude-2", "cohere", "gpt4")


def _outputs(path: Path, generator: str, texts: list[tuple[str, str]]) -> Path:
    path.write_text(
        json.dumps([{"instruction": i, "output": o, "generator": generator} for i, o in texts])
    )
    return path


def test_a_board_without_the_column_or_with_text_for_a_number_is_refused(tmp_path: Path) -> None:
    board = tmp_path / "board.csv"
    board.write_text(",win_rate,avg_length\nsys_a,10.5,100\nsys_b,,200\nsys_c,n/a,300\n,,\n")
    with pytest.raises(ConfigError) as missing:
        read_published(board, "length_controlled_winrate")
    said = str(missing.value)
    assert f"data.test_leaderboard.boards: {board}: no column 'length_controlled_winrate'" in said
    assert "'win_rate', 'avg_length'" in said
    with pytest.raises(ConfigError) as text:
        read_published(board, "win_rate")
    assert f"{board}: row 2 (sys_c): field 'win_rate' is not a number: 'n/a'" in str(text.value)
    # An empty cell leaves that system out of this board (listed); a row with no name is none.
    board.write_text(",win_rate,avg_length\nsys_a,10.5,100\nsys_b,,200\n,,\n")
    assert read_published(board, "win_rate") == ({"sys_a": 10.5}, ["sys_b"])
    assert read_published(board, "avg_length") == ({"sys_a": 100.0, "sys_b": 200.0}, [])
    # Whitespace and case aside, as `simfarm correlate` matches a column (Arena's header).
    board.write_text(',"Arena Elo\n[Feb 2, 2024]"\nsys_a,1100\n')
    assert read_published(board, "arena elo [Feb 2, 2024]") == ({"sys_a": 1100.0}, [])


def test_board_pairs_each_ranked_system_with_the_reference(tmp_path: Path) -> None:
    """Systems come from model outputs and from pairs files; one in both counts once; the
    reference and systems the board does not rank are left out (the latter listed), and an
    output whose instruction the reference lacks is counted, not paired."""
    board = tmp_path / "board.csv"
    board.write_text(",win_rate\nref,50\nsys_a,10\nsys_b,20\nsys_c,30\n")
    arena = tmp_path / "arena.csv"
    arena.write_text("Model,Elo\nsys_c,1100\nsys_a,1050\nsys_b,1000\nsys_z,\n")
    questions = [("Q1", ""), ("Q2", ""), ("Q3", "")]
    reference = _outputs(tmp_path / "ref.json", "ref", [(q, f"ref {q}") for q, _ in questions])
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    _outputs(outputs / "a.json", "sys_a", [("Q1", "a1"), ("Q2", "a2"), ("Q9", "a9")])
    _outputs(outputs / "other.json", "unranked", [("Q1", "u1")])
    _outputs(outputs / "ref.json", "ref", [("Q1", "ref Q1")])
    pairs = tmp_path / "pairs.json"
    pairs.write_text(
        json.dumps(
            [
                {"instruction": q, "output_1": "x", "output_2": f"{s}{q}", "generator_2": s}
                for s in ("sys_b", "sys_c")
                for q in ("Q1", "Q3")
            ]
            + [{"instruction": "Q1", "output_1": "x", "output_2": "a1", "generator_2": "sys_a"}]
        )
    )
    spec = LeaderboardSpec(
        boards=[
            PublishedBoard(name="judge", path=board),
            PublishedBoard(name="humans", path=arena, column="Elo"),
        ],
        reference=reference,
        outputs=[outputs],
        pair_outputs=[pairs],
    )
    read = read_board(spec, "error")
    got = sorted(zip(read.systems, read.references, read.outputs, strict=True))
    assert got == [
        ("sys_a", "ref Q1", "a1"),
        ("sys_a", "ref Q2", "a2"),
        ("sys_b", "ref Q1", "sys_bQ1"),
        ("sys_b", "ref Q3", "sys_bQ3"),
        ("sys_c", "ref Q1", "sys_cQ1"),
        ("sys_c", "ref Q3", "sys_cQ3"),
    ]
    assert read.reference_generator == "ref"
    assert read.not_on_board == ["unranked"]
    assert read.unpaired == {"sys_a": 1}
    assert read.published["humans"] == {"sys_c": 1100.0, "sys_a": 1050.0, "sys_b": 1000.0}
    assert read.no_value == {"judge": [], "humans": ["sys_z"]}
    assert len(read.sha256) == 64 and len(read.files) == 7

    # A board with fewer than three of its systems with outputs has no rank correlation.
    arena.write_text("Model,Elo\nsys_c,1100\nsys_a,\nsys_b,1000\nsys_z,900\n")
    with pytest.raises(ConfigError) as few:
        read_board(spec, "error")
    assert f"{arena}: data.test_leaderboard.boards (humans): 2 of its systems" in str(few.value)


def _run(tmp_path: Path, name: str, flip: str | None = None) -> dict[str, Any]:
    """A tiny real run: 4 GPT-4 systems x 40 verdicts (``flip``'s verdicts reversed), and a
    board of those 4 plus vicuna-7b-v1.5 (not a training system) against gpt4_1106_preview."""
    data = tmp_path / name / "data"
    data.mkdir(parents=True)
    for system in SYSTEMS:
        records = json.loads((GPT4 / f"{system}.json").read_text(encoding="utf-8"))[:40]
        if system == flip:
            for record in records:
                if record["preference"] in (1, 2):
                    record["preference"] = 3 - record["preference"]
        (data / f"{system}.json").write_text(json.dumps(records))
    vicuna = json.loads((ALPACA / "model_outputs" / "vicuna-7b-v1.5.json").read_text())[:40]
    (tmp_path / name / "vicuna.json").write_text(json.dumps(vicuna))
    recipe = tmp_path / name / "judge.yaml"
    body = {
        "method": "distilled_judge",
        "data": {
            "annotations": "data",
            "labels": "decisive",
            "test_leaderboard": {
                "boards": [{"name": "alpaca_eval_2", "path": str(BOARD)}],
                "reference": str(REFERENCE),
                "outputs": "vicuna.json",
                "pair_outputs": "data",
            },
        },
        "heldout": {"folds": 4},
    }
    recipe.write_text(yaml.safe_dump(body))
    out = tmp_path / name / "run"
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["data"]["test_leaderboard"]["pair_outputs"] == ["data"]
    files = [f["path"] for f in manifest["data"]["test_leaderboard"]["files"]]
    assert files[2:] == ["vicuna.json", *(f"data/{s}.json" for s in SYSTEMS)], files
    metrics = json.loads((out / "result.json").read_text())["final_metrics"]
    assert metrics["test_leaderboard_alpaca_eval_2_n_systems"] == 5.0
    return manifest["test_leaderboard"]  # type: ignore[no-any-return]


@needs_data
@pytest.mark.slow
def test_a_training_systems_board_score_never_saw_its_own_verdicts(tmp_path: Path) -> None:
    board = _run(tmp_path, "plain")
    systems = board["systems"]
    assert sorted(systems) == sorted((*SYSTEMS, "vicuna-7b-v1.5"))
    assert systems["vicuna-7b-v1.5"]["scored_by"] == "shipped head"
    assert {systems[s]["scored_by"] for s in SYSTEMS} == {f"held-out fold {k}" for k in range(4)}
    assert all(systems[s]["n_pairs"] == 40 for s in systems)
    assert board["boards"]["alpaca_eval_2"]["n_held_out_by_fold"] == 4
    assert board["reference"] == "gpt4_1106_preview"
    for name in ("alpaca-7b", "gpt4"):
        assert systems[name]["published"]["alpaca_eval_2"] == pytest.approx(
            {"alpaca-7b": 2.591450540223603, "gpt4": 23.576789}[name], abs=1e-5
        )

    flipped = _run(tmp_path, "flipped", flip="cohere")["systems"]
    # cohere's score comes from the fold head that did not see cohere: unchanged.
    assert flipped["cohere"]["distilled"] == systems["cohere"]["distilled"]
    # The shipped head did see cohere's (now reversed) verdicts, so vicuna's score moves.
    assert flipped["vicuna-7b-v1.5"]["distilled"] != systems["vicuna-7b-v1.5"]["distilled"]


def test_outputs_a_system_shares_with_other_systems_training_pairs_are_counted() -> None:
    """A board system's output found in another system's training pair (as its reference or
    its answer) is counted once per distinct text; its own pairs and empty outputs are not."""
    board = BoardPairs(
        systems=["a", "a", "a", "b", "b"],
        outputs=["Yes.", "Yes.", "long a", "b own", ""],
    )
    training = [
        Verdict(output_1="Yes.", output_2="x", generator_2="c", p_second=1.0),
        Verdict(output_1="r", output_2="long a", generator_2="a", p_second=0.0),
        Verdict(output_1="b own", output_2="", generator_2="b", p_second=1.0),
        Verdict(output_1="", output_2="z", generator_2="c", p_second=1.0),
    ]
    assert shared_outputs(zip(board.systems, board.outputs, strict=True), training) == {"a": 1}


@needs_data
def test_training_systems_on_the_board_need_the_heldout_folds(tmp_path: Path) -> None:
    """With heldout disabled, a training system on the board has no head that never saw it:
    refused before anything loads, naming the setting."""
    data = tmp_path / "data"
    data.mkdir()
    for system in SYSTEMS[:2]:
        records = json.loads((GPT4 / f"{system}.json").read_text(encoding="utf-8"))[:5]
        (data / f"{system}.json").write_text(json.dumps(records))
    board = tmp_path / "board.csv"
    board.write_text(",win_rate\nalpaca-7b,1\nclaude-2,2\nvicuna-7b-v1.5,3\n")
    vicuna = json.loads((ALPACA / "model_outputs" / "vicuna-7b-v1.5.json").read_text())[:5]
    (tmp_path / "vicuna.json").write_text(json.dumps(vicuna))
    recipe = tmp_path / "judge.yaml"
    body = {
        "method": "distilled_judge",
        "data": {
            "annotations": "data",
            "test_leaderboard": {
                "boards": [{"name": "b", "path": "board.csv"}],
                "reference": str(REFERENCE),
                "outputs": "vicuna.json",
                "pair_outputs": "data",
            },
        },
        "heldout": {"enabled": False},
    }
    recipe.write_text(yaml.safe_dump(body))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(out)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "data.test_leaderboard: 2 of its systems are training systems" in said
    assert "set heldout.enabled=true" in said


def test_board_figures_rank_each_scorer_against_each_board() -> None:
    """Two pairs per system: the head's mean P ranks the judge's board backwards, the
    reference similarity ranks it exactly, `longest` by length; a second board that rates
    three of the systems is ranked over those three; the shipped head's system is left out of
    the held-out-by-fold figures."""
    systems = ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s4"]
    board = BoardPairs(
        prompts=["p"] * 8,
        references=["r" * 10] * 8,
        outputs=["x" * n for n in (1, 2, 30, 30, 5, 5, 40, 40)],
        systems=systems,
        published={
            "judge": {"s1": 1.0, "s2": 2.0, "s3": 3.0, "s4": 4.0},
            "humans": {"s1": 10.0, "s3": 30.0, "s4": 20.0},
        },
        no_value={"judge": [], "humans": ["s2"]},
        reference_generator="ref",
    )
    prob = np.array([0.9, 0.9, 0.7, 0.7, 0.5, 0.5, 0.1, 0.3])
    similarity = np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4])
    scored_by = {"s1": "held-out fold 0", "s2": "held-out fold 1", "s3": "held-out fold 0"}
    figures = board_figures(prob, board, {**scored_by, "s4": "shipped head"}, [], similarity)
    assert figures["systems"]["s4"]["distilled"] == pytest.approx(0.2)
    assert figures["systems"]["s2"]["reference_similarity"] == pytest.approx(0.2)
    assert figures["systems"]["s3"]["published"] == {"judge": 3.0, "humans": 30.0}
    judge, humans = figures["boards"]["judge"], figures["boards"]["humans"]
    assert judge["distilled"]["spearman"] == pytest.approx(-1.0)
    assert judge["reference_similarity"]["spearman"] == pytest.approx(1.0)
    # s1 and s3 never longer than the reference, s2 and s4 always: two tied pairs.
    assert judge["longest"]["spearman"] == pytest.approx(0.4472135955)
    assert judge["n_held_out_by_fold"] == 3
    assert judge["distilled_held_out_by_fold"]["spearman"] == pytest.approx(-1.0)
    assert humans["n_systems"] == 3 and humans["no_value"] == ["s2"]
    assert humans["reference_similarity"]["spearman"] == pytest.approx(0.5)
    assert humans["distilled_held_out_by_fold"] is None  # 2 held-out systems: no figure
