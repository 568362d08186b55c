"""HH-RLHF and the ``transcript`` format: conversations kept as turns, read from gzipped files
in the public repository's layout (written here: the real files are not in the shared data)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.datafiles import write_records
from simfarm.errors import ConfigError
from simfarm.evaluation.human_sets import find_human_set, load_human_set
from simfarm.types import ChatMessage, PairwiseAnnotation
from tests.conftest import REPO_ROOT

runner = CliRunner()
SUBSETS = ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]


def transcript(*turns: str) -> str:
    """HH-RLHF text: turns alternate Human, Assistant, starting with Human."""
    roles = ("Human", "Assistant")
    return "".join(f"\n\n{roles[i % 2]}: {text}" for i, text in enumerate(turns))


def write_subset(root: Path, subset: str, rows: list[dict[str, object]]) -> Path:
    path = root / "human" / "hh-rlhf" / subset / "test.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def pair(context: list[str], chosen: str, rejected: str) -> dict[str, object]:
    return {"chosen": transcript(*context, chosen), "rejected": transcript(*context, rejected)}


CONTEXT = ["How do I bake bread?", "Mix flour, water, yeast and salt.", "How long to knead?"]


def test_shipped_config_names_the_hub_and_the_public_layout() -> None:
    config = find_human_set("hh_rlhf")
    assert config.format == "transcript"
    assert [s.name for s in config.subsets] == SUBSETS
    for subset in config.subsets:
        assert subset.path == f"human/hh-rlhf/{subset.name}/test.jsonl.gz"
        assert (subset.hub_id, subset.hub_data_dir, subset.hub_split) == (
            "Anthropic/hh-rlhf",
            subset.name,
            "test",
        )


def test_transcripts_become_turns_and_two_last_assistant_turns(tmp_path: Path) -> None:
    rows = [
        pair(CONTEXT, "About ten minutes, until smooth.", "Forever."),
        pair(["Hi"], "Hello! How can I help?", "Go away."),
    ]
    write_subset(tmp_path, "helpful-base", rows)
    loaded = load_human_set(find_human_set("hh_rlhf"), data_root=tmp_path, subsets=["helpful-base"])
    assert loaded.issues == [] and len(loaded.pairs) == 2
    first = loaded.pairs[0]
    assert first.item.conversation == [
        ChatMessage(role="user", content=CONTEXT[0]),
        ChatMessage(role="assistant", content=CONTEXT[1]),
        ChatMessage(role="user", content=CONTEXT[2]),
    ]
    assert first.item.instruction == CONTEXT[2]
    for p, (chosen, rejected) in zip(
        loaded.pairs, [("About ten minutes, until smooth.", "Forever."),
                       ("Hello! How can I help?", "Go away.")], strict=True
    ):  # fmt: skip
        better = p.item.output_1 if p.human == [1.0] else p.item.output_2
        worse = p.item.output_2 if p.human == [1.0] else p.item.output_1
        assert (better, worse) == (chosen, rejected)
        assert p.subset == "helpful-base" and p.group == "helpful"
    assert loaded.sources == [str(tmp_path / "human/hh-rlhf/helpful-base/test.jsonl.gz")]


def test_marker_quirks_are_read_and_outputs_stay_verbatim(tmp_path: Path) -> None:
    # No leading newlines; an empty last turn ("Assistant:" with nothing after it); a reply
    # that mentions "Human:" mid-line is text, not a turn.
    rows = [
        {
            "chosen": 'Human: hi\n\nAssistant: Say "Human: hello" to greet.',
            "rejected": "Human: hi\n\nAssistant:",
        }
    ]
    write_subset(tmp_path, "harmless-base", rows)
    loaded = load_human_set(
        find_human_set("hh_rlhf"), data_root=tmp_path, subsets=["harmless-base"]
    )
    assert loaded.issues == []
    item = loaded.pairs[0].item
    assert item.conversation == [ChatMessage(role="user", content="hi")]
    assert {item.output_1, item.output_2} == {'Say "Human: hello" to greet.', ""}


def test_pairs_whose_conversations_differ_are_reported_not_kept(tmp_path: Path) -> None:
    rows = [
        pair(CONTEXT, "Ten minutes.", "Forever."),
        {"chosen": transcript("A?", "yes", "B?", "ok"),
         "rejected": transcript("A?", "no", "B?", "k")},
        pair(["Same?"], "Same.", "Same."),
        pair(["Q"], "good", "bad"),
    ]  # fmt: skip
    path = write_subset(tmp_path, "harmless-base", rows)
    loaded = load_human_set(
        find_human_set("hh_rlhf"), data_root=tmp_path, subsets=["harmless-base"], warn=False
    )
    assert len(loaded.pairs) == 2
    assert [(i.file, i.record, i.field, i.action) for i in loaded.issues] == [
        (str(path), 1, "rejected", "skipped"),
        (str(path), 2, "rejected", "skipped"),
    ]
    assert "conversation differs" in loaded.issues[0].problem
    assert "turn 1 (assistant vs assistant)" in loaded.issues[0].problem
    assert "is the chosen one's" in loaded.issues[1].problem


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"chosen": "just text", "rejected": transcript("q", "a")}, "chosen", "no turn markers"),
        ({"chosen": "preface" + transcript("q", "a"), "rejected": transcript("q", "b")},
         "chosen", "text before the first turn marker"),
        ({"chosen": transcript("q", "a"), "rejected": transcript("q", "b", "more?")},
         "rejected", "ends with a user turn"),
        ({"chosen": "\n\nAssistant: a", "rejected": "\n\nAssistant: b"},
         "chosen", "does not answer a human turn"),
        ({"chosen": transcript("q", "a"), "rejected": transcript("q", "a") + "\n\nAssistant: b"},
         "rejected", "does not answer a human turn"),
        ({"chosen": transcript("q", "a")}, "rejected", "missing"),
        ({"chosen": ["q", "a"], "rejected": transcript("q", "b")}, "chosen", "expected text"),
        ({"chosen": 5, "rejected": transcript("q", "b")}, "chosen", "no turn markers"),
        ({"chosen": float("nan"), "rejected": transcript("q", "b")}, "chosen", "missing"),
    ],
)  # fmt: skip
def test_malformed_transcripts_name_file_record_and_field(
    tmp_path: Path, record: dict[str, object], field: str, problem: str
) -> None:
    path = write_subset(tmp_path, "helpful-online", [pair(["q"], "a", "b"), record])
    with pytest.raises(ConfigError) as caught:
        load_human_set(
            find_human_set("hh_rlhf"),
            data_root=tmp_path,
            subsets=["helpful-online"],
            policy="error",
        )
    message = str(caught.value)
    assert f"{path}: record 1: field {field!r}: " in message
    assert problem in message
    assert "record 0" not in message
    # The set's own policy (coerce) reports the record and goes on with the others.
    loaded = load_human_set(
        find_human_set("hh_rlhf"), data_root=tmp_path, subsets=["helpful-online"], warn=False
    )
    assert len(loaded.pairs) == 1
    assert {i.record for i in loaded.issues} == {1}
    assert field in {i.field for i in loaded.issues}


def test_validate_longest_on_one_subset_reports_agreement(tmp_path: Path) -> None:
    # The data root holds only harmless-base; the chosen reply is the longer one in 4 of 6
    # pairs, so the length rule agrees with the humans on exactly those 4.
    rows = [pair(["q1", "a1", f"q{i}"], "a considerably longer reply", "short") for i in range(4)]
    rows += [pair([f"p{i}"], "no", "a much longer rejected reply") for i in range(2)]
    rows.append(
        {
            "chosen": transcript("A?", "y", "ok?", "yes"),
            "rejected": transcript("B?", "y", "ok?", "no"),
        }
    )
    path = write_subset(tmp_path, "harmless-base", rows)
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["validate", "--annotator", "longest", "--set", "hh_rlhf", "--subset", "harmless-base",
         "--data-dir", str(tmp_path), "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["set"] == "hh_rlhf" and report["annotator"] == "longest"
    overall = report["overall"]
    assert overall["n_items"] == 6 and overall["n_failed"] == 0
    assert overall["accuracy_with_ties"] == pytest.approx(100 * 4 / 6)
    assert list(report["subsets"]) == ["harmless-base"]
    # The pair whose conversations differ is counted and named, in the report and on screen.
    assert [(i["file"], i["record"], i["field"]) for i in report["issues"]] == [
        (str(path), 6, "rejected")
    ]
    assert "## Bad input records (1)" in (out / "report.md").read_text()
    assert "record 6: field 'rejected'" in " ".join(result.output.split())


def test_the_hub_path_loads_each_data_dir_through_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network here: offline, the hub id is tried and named; a local folder in the hub
    # repository's layout (the four data_dirs) loads through the same load_dataset call.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"hub Anthropic/hh-rlhf") as caught:
        load_human_set(find_human_set("hh_rlhf"), data_root=empty, subsets=["helpful-online"])
    assert "human/hh-rlhf/helpful-online/test.jsonl.gz" in str(caught.value)

    repo = tmp_path / "hub_repo"
    for n, subset in enumerate(SUBSETS):
        write_subset(repo, subset, [pair(["q"], f"good {subset}", "bad")] * (n + 1))
    evals = tmp_path / "evals"
    evals.mkdir()
    config = (REPO_ROOT / "evals" / "hh_rlhf.yaml").read_text()
    (evals / "hh_local_hub.yaml").write_text(
        config.replace("Anthropic/hh-rlhf", str(repo / "human" / "hh-rlhf")).replace(
            "name: hh_rlhf", "name: hh_local_hub"
        )
    )
    monkeypatch.setenv("SIMFARM_EVALS_DIR", str(evals))
    loaded = load_human_set(
        find_human_set("hh_local_hub"), data_root=empty, subsets=["helpful-online", "harmless-base"]
    )
    assert [p.subset for p in loaded.pairs] == ["harmless-base"] + ["helpful-online"] * 3
    assert loaded.pairs[-1].item.conversation == [ChatMessage(role="user", content="q")]
    assert loaded.sources[1] == f"hf:{repo / 'human' / 'hh-rlhf'}:@test data_dir=helpful-online"


def test_precomputed_judgements_match_the_whole_conversation(tmp_path: Path) -> None:
    # Two pairs that end alike (same last question, same two replies) but differ in an
    # earlier turn, with opposite human labels: each judgement must match its own pair only.
    rows = [
        pair(["Plan A?", "Sure.", "Go on?"], "a long and careful reply", "ok"),
        pair(["Plan B?", "Sure.", "Go on?"], "ok", "a long and careful reply"),
    ]
    write_subset(tmp_path, "harmless-base", rows)
    loaded = load_human_set(
        find_human_set("hh_rlhf"), data_root=tmp_path, subsets=["harmless-base"]
    )
    agreeing = [
        PairwiseAnnotation(**p.item.model_dump(), annotator="oracle", preference=p.human[0])
        for p in loaded.pairs
    ]
    write_records(tmp_path / "ann.jsonl", agreeing)
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["validate", "--set", "hh_rlhf", "--subset", "harmless-base", "--data-dir",
         str(tmp_path), "--annotations", str(tmp_path / "ann.jsonl"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    overall = json.loads((out / "report.json").read_text())["overall"]
    assert overall["n_items"] == 2 and overall["accuracy_with_ties"] == 100.0
