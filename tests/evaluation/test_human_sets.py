"""Human-set configs and loaders: the shipped sets, and a user's set added without code."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from simfarm.errors import ConfigError
from simfarm.evaluation.human_sets import (
    find_human_set,
    list_human_sets,
    load_human_set,
    rating_pairs,
    read_set_config,
)
from simfarm.evaluation.validation import system_ranking
from simfarm.types import PairwiseAnnotation
from tests.conftest import REPO_ROOT


def test_shipped_configs_are_valid() -> None:
    names = set(list_human_sets())
    assert {"pandalm", "llmbar", "hhh", "hhh_hub", "topical_chat"} <= names
    for name in names:
        config = find_human_set(name)
        for subset in config.subsets:  # each names a local file, a hub id or a URL
            assert subset.path or subset.hub_id or subset.url


def test_pandalm_human_majority_win_rates(shared_data: Path) -> None:
    # The data README's facts, recomputed from the loader (ties = 1/2, majority of 3).
    loaded = load_human_set(find_human_set("pandalm"), data_root=shared_data, warn=False)
    assert all(len(p.human) == 3 for p in loaded.pairs)
    assert sum(len(set(p.human)) == 1 for p in loaded.pairs) == 879
    placeholder = [
        PairwiseAnnotation(**p.item.model_dump(), annotator="x", preference=1.5)
        for p in loaded.pairs
    ]
    ranking = system_ranking(loaded.pairs, [placeholder])
    assert ranking is not None
    expected = {
        "llama-7b": 71.1,
        "pythia-6.9b": 52.3,
        "bloom-7b": 48.9,
        "opt-7b": 42.2,
        "cerebras-gpt-6.7B": 33.8,
    }
    assert {k: round(v, 1) for k, v in ranking.human_win_rate.items()} == expected


def test_llmbar_subsets_and_groups(shared_data: Path) -> None:
    loaded = load_human_set(find_human_set("llmbar"), data_root=shared_data, warn=False)
    groups = Counter(p.group for p in loaded.pairs)
    assert groups["Natural"] == 100
    assert groups["Adversarial"] == 134 + 92 + 47 + 46
    assert all(p.human in ([1.0], [2.0]) for p in loaded.pairs)
    natural = load_human_set(
        find_human_set("llmbar"), data_root=shared_data, subsets=["Natural"], limit=10
    )
    assert len(natural.pairs) == 10
    with pytest.raises(ConfigError, match="unknown subset"):
        load_human_set(find_human_set("llmbar"), data_root=shared_data, subsets=["Nope"])


def test_hhh_pairs_are_extracted_and_order_balanced(shared_data: Path) -> None:
    loaded = load_human_set(find_human_set("hhh"), data_root=shared_data)
    assert len(loaded.pairs) == 221
    assert Counter(p.subset for p in loaded.pairs) == {
        "honest": 61,
        "helpful": 59,
        "harmless": 58,
        "other": 43,
    }
    first = Counter(p.human[0] for p in loaded.pairs)
    assert 90 < first[1.0] < 131  # content-seeded order: neither position always wins
    for pair in loaded.pairs:
        for text in (pair.item.instruction, pair.item.output_1, pair.item.output_2):
            assert "###" not in text and text.strip()


def test_topical_chat_ratings_and_pairs(shared_data: Path) -> None:
    config = find_human_set("topical_chat")
    loaded = load_human_set(config, data_root=shared_data)
    assert len(loaded.ratings) == 360
    assert len({r.group_id for r in loaded.ratings}) == 60
    assert set(loaded.ratings[0].scores) == set(config.aspects)
    pairs = rating_pairs(config, loaded.ratings)
    assert len(pairs) == 60 * 15
    limited = load_human_set(config, data_root=shared_data, limit=2)
    assert len(limited.ratings) == 12


def test_a_user_set_needs_only_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"q": "2+2?", "a": "4", "b": "5", "votes": ["A", "A", "tie"]},
        {"q": "Capital of France?", "a": "Lyon", "b": "Paris", "votes": ["B", "B", "B"]},
    ]
    (data / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "mine.yaml").write_text(
        "kind: human_set\n"
        "description: my own set\n"
        "format: pairwise\n"
        "fields: {instruction: q, output_1: a, output_2: b, labels: [v1, v2, v3]}\n"
        "label_map: {A: 1, B: 2, tie: 1.5}\n"
        "subsets: [{name: all, path: mine.jsonl}]\n",
        encoding="utf-8",
    )
    # flatten the votes list into v1..v3, as a user would in their file
    flat = [{**r, **{f"v{i + 1}": v for i, v in enumerate(r["votes"])}} for r in rows]
    (data / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in flat), encoding="utf-8")
    monkeypatch.setenv("SIMFARM_EVALS_DIR", str(evals))
    monkeypatch.setenv("SIMFARM_DATA_DIR", str(data))
    loaded = load_human_set(find_human_set("mine"))
    assert [p.human for p in loaded.pairs] == [[1.0, 1.0, 1.5], [2.0, 2.0, 2.0]]
    assert loaded.pairs[1].item.output_2 == "Paris"


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: human_set\ndescription: x\nformat: pairwise\n"
        "fields: {instruction: q, output_1: a, output_2: b, labels: [l]}\n"
        "label_map: {A: 3}\nsubsets: [{name: s, path: f.json}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n.*label_map"):
        read_set_config(bad)


def test_hub_sets_load_through_the_real_datasets_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network here, so the real `datasets.load_dataset` is exercised twice: offline, the
    # hub id fails and the error names it; pointed at a local folder laid out like a hub
    # repository (configs declared in its README), the same call loads the rows.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"hub HuggingFaceH4/hhh_alignment"):
        load_human_set(find_human_set("hhh_hub"), data_root=tmp_path, subsets=["harmless"])

    repo = tmp_path / "hub_repo"
    (repo / "harmless").mkdir(parents=True)
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: harmless\n  data_files:\n"
        "  - split: test\n    path: harmless/test.jsonl\n---\n"
    )
    row = {"input": "q", "targets": {"choices": ["good", "bad"], "labels": [1, 0]}}
    (repo / "harmless" / "test.jsonl").write_text((json.dumps(row) + "\n") * 2)
    config = (REPO_ROOT / "evals" / "hhh_hub.yaml").read_text()
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "hhh_local_hub.yaml").write_text(
        config.replace("HuggingFaceH4/hhh_alignment", str(repo)).replace(
            "name: hhh_hub", "name: hhh_local_hub"
        )
    )
    monkeypatch.setenv("SIMFARM_EVALS_DIR", str(evals))
    loaded = load_human_set(
        find_human_set("hhh_local_hub"), data_root=tmp_path, subsets=["harmless"]
    )
    assert len(loaded.pairs) == 2
    assert loaded.sources == [f"hf:{repo}:harmless@test"]


def test_choices_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The hub's BIG-bench layout, read from a local file written in that layout.
    rows = [
        {"input": f"q{i}", "targets": {"choices": [f"good{i}", f"bad{i}"], "labels": [1, 0]}}
        for i in range(40)
    ]
    (tmp_path / "hhh.json").write_text(json.dumps(rows), encoding="utf-8")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        "kind: human_set\ndescription: x\nformat: choices\n"
        "subsets: [{name: harmless, path: hhh.json}]\n",
        encoding="utf-8",
    )
    loaded = load_human_set(read_set_config(config_path), data_root=tmp_path)
    assert len(loaded.pairs) == 40
    for pair in loaded.pairs:
        better = pair.item.output_1 if pair.human == [1.0] else pair.item.output_2
        assert better.startswith("good")
    assert 0 < sum(p.human == [1.0] for p in loaded.pairs) < 40


def test_default_data_root_is_found_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    from simfarm.evaluation.human_sets import resolve_data_root

    monkeypatch.delenv("SIMFARM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    assert resolve_data_root() == shared_data.resolve()
    monkeypatch.setenv("SIMFARM_DATA_DIR", str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()
