"""The ``distilled_judge`` recipe: reading a judge's verdicts (alpaca_eval and simfarm
formats, soft labels, bad records), the Bradley–Terry rows, folds by system, the head file's
feature list, and end to end: a head trained here from real GPT-4 verdicts, run by a user's
persona through ``simfarm validate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from simfarm.annotation.distilled import DistilledHead, save_head
from simfarm.annotation.distilled_features import DENSE_FEATURES, FEATURE_NAMES, NGRAM_BUCKETS
from simfarm.cli import app
from simfarm.errors import ConfigError
from simfarm.training.config import load_recipe_config
from simfarm.training.distilled_judge import (
    both_orders,
    figures_by_source,
    fit_head,
    predict,
    system_folds,
)
from simfarm.training.verdicts import annotation_files, read_verdicts
from tests.conftest import SHARED_DATA

GPT4 = SHARED_DATA / "alpaca_eval" / "annotations_alpaca_eval_gpt4"
TURBO = SHARED_DATA / "alpaca_eval" / "annotations"
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "distilled_judge.yaml"
needs_gpt4 = pytest.mark.skipif(not GPT4.is_dir(), reason=f"no GPT-4 annotations in {GPT4}")


def _record(output_1: str, output_2: str, preference: object, generator: str) -> dict:
    return {
        "instruction": "Say something useful.",
        "output_1": output_1,
        "generator_1": "reference",
        "output_2": output_2,
        "generator_2": generator,
        "annotator": "judge",
        "preference": preference,
    }


def test_both_orders_weights_soft_labels_and_reduces_to_the_decisive_scheme() -> None:
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    rows, labels, weights = both_orders(x[:2], np.array([1.0, 0.0]))
    assert weights is None  # decisive: one row per order, as the shipped head was fitted
    np.testing.assert_array_equal(rows, np.vstack([x[:2], -x[:2]]))
    np.testing.assert_array_equal(labels, [1, 0, 0, 1])
    rows, labels, weights = both_orders(x[2:], np.array([0.3]))
    # forwards: label 1 weighted p, label 0 weighted 1-p; backwards the reverse.
    np.testing.assert_array_equal(rows, [x[2], x[2], -x[2], -x[2]])
    np.testing.assert_array_equal(labels, [1, 0, 1, 0])
    np.testing.assert_allclose(weights, [0.3, 0.7, 0.7, 0.3])


def test_a_soft_label_is_what_the_fit_learns() -> None:
    """Pairs whose output 2 wins with probability 0.8 (a weighted annotator's 1.8): the
    nearly unregularised Bradley-Terry fit predicts 0.8, and the reverse order 0.2."""
    features = np.ones((50, 1))
    fitted = fit_head(features, np.full(50, 0.8), C=1e6, max_iter=200)
    assert predict(fitted, np.array([[1.0], [-1.0]])) == pytest.approx([0.8, 0.2], abs=1e-3)


def test_reads_alpaca_eval_and_simfarm_annotations_with_soft_labels(tmp_path: Path) -> None:
    folder = tmp_path / "annotations"
    folder.mkdir()
    alpaca = [
        _record("a", "bb", 2, "sys_a"),
        _record("a", "cc", 1.0, "sys_a"),
        _record("a", "dd", 0, "sys_a"),  # legacy draw
        _record("a", "ee", None, "sys_a"),  # failed
        _record("a", "ff", 1.25, "sys_a"),  # weighted annotator
    ]
    (folder / "sys_a.json").write_text(json.dumps(alpaca))
    ours = [_record("x", "yy", 1.7, "sys_b") | {"failure": None, "item_id": "1"}]
    (folder / "sys_b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ours))
    (folder / "README.md").write_text("not annotations")
    files = annotation_files(folder)
    assert [f.name for f in files] == ["sys_a.json", "sys_b.jsonl"]
    soft = read_verdicts(files, "soft")
    assert [v.p_second for v in soft.verdicts] == pytest.approx([1.0, 0.0, 0.5, 0.25, 0.7])
    assert soft.failed == 1 and soft.systems == ["sys_a", "sys_b"]
    decisive = read_verdicts(files, "decisive")
    assert [v.p_second for v in decisive.verdicts] == [1.0, 0.0]
    assert decisive.not_decisive == 3


def test_auto_labels_drop_ties_and_failures_and_keep_soft_values(tmp_path: Path) -> None:
    """`labels: auto` for a pool mixing a discrete and a weighted judge: 1/2 stay hard,
    weighted preferences stay soft (not rounded), exact ties (1.5 and the legacy 0) and
    failures are dropped; each verdict's source is its annotator, else its folder."""
    discrete = tmp_path / "gpt4_pool"
    weighted = tmp_path / "turbo_pool"
    discrete.mkdir()
    weighted.mkdir()
    records = [
        _record("a", "bb", 2, "sys_a"),
        _record("a", "cc", 1, "sys_a"),
        _record("a", "dd", 0, "sys_a"),  # legacy draw
        _record("a", "ee", 1.5, "sys_a"),  # tie
        _record("a", "ff", None, "sys_a"),  # failed
    ]
    (discrete / "sys_a.json").write_text(json.dumps(records))
    soft = [_record("a", "gg", 1.8, "sys_b"), _record("a", "hh", 1.0001, "sys_b")]
    for record in soft:
        del record["annotator"]
    (weighted / "sys_b.json").write_text(json.dumps(soft))
    verdicts = read_verdicts(annotation_files([discrete, weighted]), "auto")
    assert [v.p_second for v in verdicts.verdicts] == pytest.approx([1.0, 0.0, 0.8, 0.0001])
    assert verdicts.verdicts[3].p_second != 0.0  # soft, not rounded to a hard label
    assert verdicts.ties == 2 and verdicts.failed == 1 and verdicts.not_decisive == 0
    assert [v.source for v in verdicts.verdicts] == ["judge", "judge", "turbo_pool", "turbo_pool"]
    assert [f.kept for f in verdicts.files] == [2, 2]
    # Anything that is not a preference stops the read, naming file, record and field.
    (weighted / "sys_b.json").write_text(json.dumps([*soft, _record("a", "ii", 2.5, "sys_b")]))
    with pytest.raises(ConfigError, match=r"sys_b\.json: record 2: field 'preference'"):
        read_verdicts(annotation_files([discrete, weighted]), "auto")


def test_heldout_figures_are_broken_down_by_source() -> None:
    """Each source's figures are computed on its own pairs only: counts, agreement and
    `longest` on the same pairs, Spearman over that source's systems."""
    p_second = np.array([1.0, 0.0, 1.0, 0.0, 0.9, 0.2, 0.7, 0.1, 0.8])
    prob = np.array([0.9, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.4, 0.55])
    len_1 = np.array([10, 10, 10, 10, 10, 10, 10, 10, 10], dtype=float)
    len_2 = np.array([20, 9, 5, 30, 9, 12, 11, 40, 2], dtype=float)
    systems = np.array(["s1", "s1", "s2", "s2", "t1", "t1", "t2", "t2", "t3"])
    sources = np.array(["gpt4"] * 4 + ["turbo"] * 5)
    by_source = figures_by_source(prob, p_second, len_1, len_2, systems, sources, 0.8)
    assert sorted(by_source) == ["gpt4", "turbo"]
    gpt4, turbo = by_source["gpt4"], by_source["turbo"]
    assert (gpt4["distilled"]["n_decisive"], gpt4["distilled"]["n_systems"]) == (4, 2)
    assert (turbo["distilled"]["n_decisive"], turbo["distilled"]["n_systems"]) == (5, 3)
    # balanced (shorter >= 0.8 x longer): gpt4 pair 1; turbo pairs 4, 5, 6.
    assert gpt4["distilled"]["n_balanced"] == 1 and turbo["distilled"]["n_balanced"] == 3
    assert gpt4["distilled"]["agreement"] == pytest.approx(3 / 4)
    assert turbo["distilled"]["agreement"] == pytest.approx(4 / 5)
    assert turbo["distilled"]["agreement_balanced"] == pytest.approx(2 / 3)
    assert gpt4["longest"]["agreement"] == pytest.approx(2 / 4)
    assert turbo["longest"]["agreement"] == pytest.approx(1 / 5)
    # turbo systems: ours t1 0.65, t2 0.6, t3 0.55; theirs t1 0.55, t2 0.4, t3 0.8.
    assert turbo["distilled"]["spearman_systems"] == pytest.approx(-0.5)


def _one_bad_record(tmp_path: Path) -> Path:
    folder = tmp_path / "annotations"
    folder.mkdir()
    records = [_record("a", "bb", 2, "s"), _record("a", {"not": "text"}, 1, "s")]
    (folder / "s.json").write_text(json.dumps(records))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({"method": "distilled_judge", "data": {"annotations": "annotations"}})
    )
    return recipe


def test_reads_what_simfarm_annotate_writes(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"instruction": f"q{i}", "output_1": "x" * (i + 1), "output_2": "yy", "generator_2": "m"}
        for i in range(3)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ann.jsonl"
    args = ["annotate", "--persona", "longest", "--pairs", str(pairs), "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    verdicts = read_verdicts([out], "soft")
    assert [v.p_second for v in verdicts.verdicts] == [1.0, 0.5, 0.0]  # 2 wins, tie, 1 wins
    assert verdicts.systems == ["m"] and not verdicts.issues


def test_a_bad_record_stops_training_naming_file_record_and_field(tmp_path: Path) -> None:
    recipe = _one_bad_record(tmp_path)
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "s.json: record 1: field 'output_2'" in " ".join(result.output.split())
    assert not (tmp_path / "run" / "head.npz").exists()


@pytest.mark.slow
def test_on_bad_record_skip_trains_on_the_rest_and_lists_it(tmp_path: Path) -> None:
    recipe = _one_bad_record(tmp_path)
    args = ["train", str(recipe), "--out", str(tmp_path / "skipped")]
    args += ["--set", "data.on_bad_record=skip", "--set", "heldout.enabled=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "skipped" / "manifest.json").read_text())
    assert manifest["training_data"]["n_pairs"] == 1
    [listed] = manifest["training_data"]["bad_records"]
    assert "s.json: record 1: field 'output_2'" in listed and listed.endswith("-> skipped")


def test_recipe_paths_are_relative_to_the_recipe_and_checked(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"method": "distilled_judge", "data": {"annotations": ["a.json", "missing.json"]}}
        )
    )
    with pytest.raises(ConfigError, match=r"data\.annotations\.1: data file not found"):
        load_recipe_config(recipe)
    config = load_recipe_config(recipe, ["data.annotations=a.json"])
    assert config.data.annotations == [tmp_path / "a.json"]
    with pytest.raises(ConfigError, match='only "embedded" is supported'):
        load_recipe_config(recipe, ["data.annotations=a.json", "model.name_or_path=gpt2"])


@needs_gpt4
def test_shipped_recipe_validates_without_importing_torch_or_sklearn() -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from simfarm.training import load_recipe_config; "
        f"c = load_recipe_config(Path({str(RECIPE)!r})); "
        "print(c.data.labels, c.C, c.data.annotations[0].name, c.data.test_annotations[0].name); "
        "print(sorted(m for m in ('torch', 'sklearn', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [
        "decisive 0.01 annotations_alpaca_eval_gpt4 annotations",
        "[]",
    ]


@needs_gpt4
def test_alpaca_eval2_recipe_trains_on_both_pools_with_auto_labels() -> None:
    config = load_recipe_config(RECIPE.with_name("distilled_judge_alpaca_eval2.yaml"))
    assert config.data.labels == "auto" and config.data.test_annotations is None
    assert [p.resolve() for p in config.data.annotations] == [GPT4.resolve(), TURBO.resolve()]
    assert config.heldout.enabled and config.heldout.folds == 7


def test_heldout_needs_two_systems(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(json.dumps([_record("a", "bb", 2, "only")]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"method": "distilled_judge", "data": {"annotations": "one.json"}})
    )
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "holds out whole systems" in " ".join(result.output.split())


def test_folds_never_split_a_system() -> None:
    systems = np.array([f"s{i % 7}" for i in range(140)])
    folds = system_folds(systems, 5)
    assert len(folds) == 5
    for train, test in folds:
        assert not set(systems[train]) & set(systems[test])
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(140))


def _head_file(path: Path, features: tuple[str, ...]) -> Path:
    np.savez(
        path,
        token_scores=np.zeros(16, dtype=np.float32),
        dense_weights=np.zeros(len(DENSE_FEATURES)),
        ngram_idf=np.ones(NGRAM_BUCKETS, dtype=np.float32),
        ngram_weights=np.zeros(NGRAM_BUCKETS, dtype=np.float32),
        bias=0.0,
        delta_len_std=1.0,
        features=np.array(features),
    )
    return path


def test_a_head_trained_on_other_features_is_refused(tmp_path: Path) -> None:
    good = save_head(
        tmp_path / "good.npz",
        token_scores=np.zeros(16),
        dense_weights=np.zeros(len(DENSE_FEATURES)),
        ngram_idf=np.ones(NGRAM_BUCKETS),
        ngram_weights=np.zeros(NGRAM_BUCKETS),
        bias=0.0,
        delta_len_std=1.0,
    )
    assert DistilledHead(good).features == FEATURE_NAMES
    other = _head_file(tmp_path / "other.npz", (*DENSE_FEATURES, "gemma_hidden_state"))
    with pytest.raises(ConfigError, match=r"other\.npz: field 'features'.*gemma_hidden_state"):
        DistilledHead(other)
    old = tmp_path / "old.npz"
    np.savez(old, token_scores=np.zeros(4), style_weights=np.zeros(8), bias=0.0, delta_len_std=1.0)
    with pytest.raises(ConfigError, match="'features' missing"):
        DistilledHead(old)
    # A persona naming such a head fails when loaded, naming the persona file and field.
    persona = tmp_path / "mine.yaml"
    persona.write_text("rule: distilled\nhead: other.npz\n")
    from simfarm.annotation.loader import load_annotator

    with pytest.raises(ConfigError, match=r"mine\.yaml: head: .*field 'features'"):
        load_annotator(str(persona))
    persona.write_text("rule: distilled\nhead: nowhere.npz\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: head: no head file"):
        load_annotator(str(persona))


def _tiny_gpt4_set(folder: Path, systems: tuple[str, ...], pairs: int) -> Path:
    folder.mkdir(parents=True)
    for system in systems:
        records = json.loads((GPT4 / f"{system}.json").read_text(encoding="utf-8"))[:pairs]
        (folder / f"{system}.json").write_text(json.dumps(records))
    return folder


@needs_gpt4
@pytest.mark.slow
def test_train_then_validate_a_users_own_head(tmp_path: Path, shared_data: Path) -> None:
    """`simfarm train` on real GPT-4 verdicts (3 systems x 60 pairs) and GPT-4-turbo's soft
    ones (1 system x 40 pairs, `labels: auto`) writes a head, its manifest and held-out
    figures, overall and per verdict source; a persona beside it names the head by a relative
    path, and `simfarm validate` runs it on real PandaLM pairs with the head's own
    probabilities."""
    _tiny_gpt4_set(tmp_path / "verdicts", ("alpaca-7b", "claude-2", "cohere"), 60)
    turbo = tmp_path / "turbo" / "gemma-7b-it.json"
    turbo.parent.mkdir()
    turbo_records = json.loads((TURBO / turbo.name).read_text(encoding="utf-8"))[:40]
    turbo.write_text(json.dumps(turbo_records))
    turbo_ties = sum(r["preference"] in (0, 1.5) for r in turbo_records)
    _tiny_gpt4_set(tmp_path / "unseen", ("cohere", "gpt4", "guanaco-65b"), 40)
    recipe = tmp_path / "judge.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": "distilled_judge",
                "data": {
                    "annotations": ["verdicts", "turbo/gemma-7b-it.json"],
                    "labels": "auto",
                    "test_annotations": "unseen",
                },
                "heldout": {"folds": 3},
            }
        )
    )
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "heldout_distilled_agreement" in result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["features"] == list(FEATURE_NAMES)
    assert manifest["hyper_parameters"]["C"] == 0.01
    assert manifest["data"]["annotations"]["files"][0]["path"] == "verdicts/alpaca-7b.json"
    assert manifest["training_data"]["systems"] == [
        "alpaca-7b",
        "claude-2",
        "cohere",
        "gemma-7b-it",
    ]
    assert manifest["head"]["folded_vs_fitted_max_abs_diff"] < 1e-4
    assert manifest["packages"]["scikit-learn"] is not None
    heldout = manifest["heldout"]
    assert heldout["folds"] == 3 and heldout["distilled"]["n_systems"] == 4
    n = manifest["training_data"]["n_pairs"]
    assert heldout["distilled"]["n_decisive"] == heldout["longest"]["n_decisive"] == n
    # Per verdict source: GPT-4's records name their annotator; the turbo ones too.
    gpt4_kept = sum(f["kept"] for f in manifest["data"]["annotations"]["files"][:3])
    assert manifest["training_data"]["sources"] == {
        "alpaca_eval_gpt4": {"n_pairs": gpt4_kept, "n_systems": 3},
        "weighted_alpaca_eval_gpt4_turbo": {"n_pairs": 40 - turbo_ties, "n_systems": 1},
    }
    assert manifest["training_data"]["ties_left_out"] >= turbo_ties
    by_source = heldout["by_source"]
    assert sorted(by_source) == ["alpaca_eval_gpt4", "weighted_alpaca_eval_gpt4_turbo"]
    assert by_source["alpaca_eval_gpt4"]["distilled"]["n_decisive"] == gpt4_kept
    assert by_source["alpaca_eval_gpt4"]["longest"]["n_systems"] == 3
    turbo_figures = by_source["weighted_alpaca_eval_gpt4_turbo"]["distilled"]
    assert turbo_figures["n_decisive"] == 40 - turbo_ties and turbo_figures["n_systems"] == 1
    assert (
        sum(s["distilled"]["n_balanced"] for s in by_source.values())
        == (heldout["distilled"]["n_balanced"])
    )
    metrics = json.loads((run / "result.json").read_text())["final_metrics"]
    assert metrics["heldout_distilled_agreement"] == heldout["distilled"]["agreement"]
    key = "heldout_source_weighted_alpaca_eval_gpt4_turbo"
    assert metrics[f"{key}_distilled_agreement"] == turbo_figures["agreement"]
    assert metrics[f"{key}_n_decisive"] == 40 - turbo_ties
    # Printed in full: a long name wraps in the summary table's first column, not cut short.
    names = "".join(
        line.split("│")[1].strip()
        for line in result.output.splitlines()[:-1]
        if line.count("│") == 3
    )
    assert f"{key}_distilled_agreementheldout_source_" in names
    assert 0 <= metrics["heldout_longest_agreement_balanced"] <= 1
    # The unseen systems, scored by the shipped (folded) head after training.
    test = manifest["test"]
    assert test["distilled"]["n_systems"] == 3 and test["labels"] == "soft"
    assert test["distilled"]["n_decisive"] == test["longest"]["n_decisive"] > 0
    assert metrics["test_distilled_agreement"] == test["distilled"]["agreement"]
    assert metrics["test_longest_spearman_systems"] == test["longest"]["spearman_systems"]
    # cohere is a training system too: it is scored by a head refitted without its pairs, the
    # two never-seen systems by the shipped head (their win rates are the shipped head's).
    assert test["refitted_without"] == ["cohere"]
    rates = test["win_rates"]
    assert sorted(rates) == ["cohere", "gpt4", "guanaco-65b"]
    for unseen in ("gpt4", "guanaco-65b"):
        assert rates[unseen]["distilled"] == rates[unseen]["shipped_head"]
    assert abs(rates["cohere"]["distilled"] - rates["cohere"]["shipped_head"]) > 1e-6
    assert metrics["test_shipped_head_agreement"] == test["shipped_head"]["agreement"]
    # Every pool here judges against text_davinci_003: its outputs are in every pair, but it
    # is not a test system, so no test system's outputs sit in other systems' pairs.
    assert test["outputs_in_training"] == {}
    folds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(s for f in folds for s in f["test_systems"]) == [
        "alpaca-7b",
        "claude-2",
        "cohere",
        "gemma-7b-it",
    ]

    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "my_distilled.yaml").write_text("rule: distilled\nhead: ../run/head.npz\n")
    args = ["validate", "--annotator", str(personas / "my_distilled.yaml"), "--set", "pandalm"]
    args += ["--limit", "30", "--data-dir", str(shared_data), "--out", str(tmp_path / "report")]
    validated = CliRunner().invoke(app, [*args, "--quiet"])
    assert validated.exit_code == 0, validated.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["overall"]["n_items"] == 30 and report["overall"]["n_failed"] == 0

    from simfarm.annotation import annotate, load_annotator
    from simfarm.annotation.distilled import embedded_tokenizer
    from simfarm.types import PairwiseItem

    mine = load_annotator(str(personas / "my_distilled.yaml"))
    item = PairwiseItem(instruction="Hi", output_1="Hello.", output_2="Hello! How can I help?")
    verdict = annotate([item], mine).annotations[0]
    expected = DistilledHead(run / "head.npz").probability(
        embedded_tokenizer(), "Hi", item.output_1, item.output_2
    )
    assert verdict.preference == pytest.approx(1 + expected)


@needs_gpt4
@pytest.mark.slow
def test_the_folded_head_check_stops_a_head_that_does_not_match(tmp_path: Path) -> None:
    data = _tiny_gpt4_set(tmp_path / "verdicts", ("alpaca-7b", "cohere"), 30)
    recipe = tmp_path / "judge.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": "distilled_judge",
                "data": {"annotations": str(data)},
                "heldout": {"enabled": False},
                "check_tolerance": 1e-12,
            }
        )
    )
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "folded head differs from the fitted one" in " ".join(result.output.split())
    assert not (tmp_path / "run" / "head.npz").exists()


def test_test_systems_that_are_training_systems_are_found_with_their_shared_outputs() -> None:
    """Overlap is by judged system (generator_2); a test system's outputs sitting in other
    systems' training pairs (as a pool's reference does) are counted, empty outputs never."""
    from simfarm.training.distilled_unseen import outputs_in_training, overlapping_systems
    from simfarm.training.verdicts import Verdict

    training = [
        Verdict("ref a", "x a", "x", 1.0),
        Verdict("ref b", "y b", "y", 0.0),
        Verdict("ref a", "", "y", 0.0),
        Verdict("", "z", "z", 1.0),
    ]
    test = [
        Verdict("base a", "ref a", "ref", 0.0),
        Verdict("base b", "ref b", "ref", 1.0),
        Verdict("base a", "x a", "x", 1.0),
        Verdict("base a", "", "w", 1.0),
    ]
    assert overlapping_systems(test, ["x", "y", "z"]) == ["x"]
    # Both "ref" outputs are the reference side of training pairs (one of them twice: counted
    # once); "x a" is only in x's own pair (which the refit leaves out), "" never counts.
    assert outputs_in_training(test, training) == {"ref": 2}
