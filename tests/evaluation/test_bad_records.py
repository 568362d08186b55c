"""Bad input records are named by file, record and field, and handled by an explicit policy."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from simfarm.datafiles import load_model_outputs
from simfarm.errors import ConfigError
from simfarm.evaluation.human_sets import find_human_set, load_human_set
from simfarm.evaluation.io import load_annotation_file
from simfarm.evaluation.winrate import compute_winrate

PANDALM_BOOLEANS = {
    (157, "response1"),
    (158, "response1"),
    (159, "response1"),
    (161, "response2"),
    (162, "response2"),
    (164, "response1"),
}


def _pandalm(shared_data: Path, policy: str | None):
    return load_human_set(
        find_human_set("pandalm"), data_root=shared_data, policy=policy, warn=False
    )


def test_pandalm_booleans_are_reported_and_coerced(shared_data: Path) -> None:
    loaded = _pandalm(shared_data, "coerce")
    assert len(loaded.pairs) == 999
    assert {(i.record, i.field) for i in loaded.issues} == PANDALM_BOOLEANS
    for issue in loaded.issues:
        assert issue.file.endswith("human/pandalm/testset-v1.json")
        assert issue.action == "coerced"
        assert "bool" in issue.problem
    coerced = loaded.pairs[157].item
    assert coerced.output_1 == "True" and isinstance(coerced.output_2, str)


def test_pandalm_booleans_skipped_under_skip(shared_data: Path) -> None:
    loaded = _pandalm(shared_data, "skip")
    assert len(loaded.pairs) == 993
    assert {(i.record, i.field, i.action) for i in loaded.issues} == {
        (r, f, "skipped") for r, f in PANDALM_BOOLEANS
    }


def test_pandalm_booleans_stop_the_load_under_error(shared_data: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_human_set(find_human_set("pandalm"), data_root=shared_data, policy="error")
    message = str(caught.value)
    assert "testset-v1.json: record 157: field 'response1'" in message
    assert "6 bad record(s)" in message


def test_problems_are_never_silent(shared_data: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_human_set(find_human_set("pandalm"), data_root=shared_data)
    assert any("record 164: field 'response1'" in str(w.message) for w in caught)


def _write(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _record(**changes):
    base = {
        "instruction": "Say hi",
        "output_1": "hi",
        "generator_1": "ref",
        "output_2": "hello",
        "generator_2": "model",
        "annotator": "judge",
        "preference": 2.0,
        "price_per_example": 0.01,
        "time_per_example": 0.5,
        "dataset": "x",
    }
    base.update(changes)
    return base


def test_annotation_file_policies(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "annotations.json",
        [
            _record(),
            _record(output_2=True),  # repairable: text "True"
            _record(preference="1.0"),  # repairable: the number 1.0
            _record(preference=7),  # not a preference: a failed annotation under coerce
            _record(output_1=["a", "list"]),  # not repairable: skipped
            _record(preference=None),  # a failed annotation, not a bad record
            _record(preference=0),  # alpaca_eval's legacy draw
            "not an object",
        ],
    )
    loaded = load_annotation_file(path, "coerce", warn=False)
    found = {(i.record, i.field, i.action) for i in loaded.issues}
    assert found == {
        (1, "output_2", "coerced"),
        (2, "preference", "coerced"),
        (3, "preference", "treated as failed"),
        (4, "output_1", "skipped"),
        (7, "<record>", "skipped"),
    }
    assert all(i.file == str(path) for i in loaded.issues)
    preferences = [a.preference for a in loaded.annotations]
    assert preferences == [2.0, 2.0, 1.0, None, None, 1.5]
    assert loaded.annotations[1].output_2 == "True"
    assert loaded.annotations[0].cost_usd == 0.01 and loaded.annotations[0].latency_s == 0.5
    assert loaded.ignored_fields == ["dataset"]
    metrics = compute_winrate(preferences)
    assert (metrics.n_total, metrics.n_wins, metrics.n_wins_base, metrics.n_draws) == (4, 2, 1, 1)

    skipped = load_annotation_file(path, "skip", warn=False)
    assert [a.preference for a in skipped.annotations] == [2.0, None, 1.5]
    assert {i.action for i in skipped.issues} == {"skipped"}

    with pytest.raises(ConfigError, match=r"record 3: field 'preference'"):
        load_annotation_file(path, "error")


def test_model_outputs_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "outputs.jsonl"
    rows = [
        {"instruction": "a", "output": "x", "generator": "m"},
        {"instruction": "b", "output": 3.5, "generator": "m"},
        {"instruction": None, "output": "y", "generator": "m"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    loaded = load_model_outputs(path, "coerce", warn=False)
    assert [o.output for o in loaded.outputs] == ["x", "3.5"]
    assert {(i.record, i.field, i.action) for i in loaded.issues} == {
        (1, "output", "coerced"),
        (2, "instruction", "skipped"),
    }


def test_model_outputs_from_a_datasets_folder_and_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    rows = [{"instruction": "a", "output": "x", "generator": "m", "dataset": "d"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    loaded = load_model_outputs(tmp_path / "saved", warn=False)
    assert [(o.instruction, o.output, o.generator) for o in loaded.outputs] == [("a", "x", "m")]

    calls = []

    def fake_hub(*args, **kwargs):  # no network here: stands in for the hub
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    hub = load_model_outputs("hf:tatsu-lab/alpaca_eval:alpaca_eval@eval", warn=False)
    assert len(hub.outputs) == 1
    assert calls == [(("tatsu-lab/alpaca_eval", "alpaca_eval"), {"split": "eval"})]
