"""The distilled judge (``embedded_distilled``): its shipped head, its manifest, and judging
real pairs through the real pipeline with the embedded Gemma tokenizer."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from simfarm.annotation import annotate, load_annotator
from simfarm.annotation.distilled import FEATURE_NAMES, STYLE_FEATURES, DistilledHead, load_head
from simfarm.annotation.persona import PairwisePersona
from simfarm.errors import ConfigError
from simfarm.paths import bundled_data_dir
from simfarm.types import PairwiseItem

HEADS = resources.files("simfarm.annotation.distilled_heads")


def test_shipped_head_matches_its_manifest() -> None:
    """The head in the package is the one its manifest describes (same bytes), made by the
    `distilled_judge` recipe, and the manifest says how to reproduce it and what it measured."""
    npz = Path(str(HEADS / "embedded_distilled.npz"))
    manifest = json.loads(Path(str(HEADS / "embedded_distilled.json")).read_text())
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == manifest["head"]["sha256"]
    assert manifest["method"] == "distilled_judge"
    assert manifest["reproduce"].startswith("simfarm train recipes/distilled_judge.yaml --out ")
    assert manifest["features"] == list(FEATURE_NAMES)
    data = manifest["training_data"]
    assert data["n_pairs"] > 30_000 and len(data["systems"]) == 39
    assert manifest["head"]["folded_vs_fitted_max_abs_diff"] < 1e-4
    heldout = manifest["heldout"]
    assert heldout["distilled"]["agreement_balanced"] > heldout["longest"]["agreement_balanced"]
    head = load_head("embedded_distilled")
    assert head.token_scores.shape == (262_144,) and head.bias == 0.0
    assert head.features == FEATURE_NAMES
    assert npz.stat().st_size < 5_000_000
    assert head.ngram_weights.shape == head.ngram_idf.shape == (2**18,)


def test_alpaca_eval2_head_matches_its_manifest_and_persona() -> None:
    """The second shipped head: trained on both verdict pools with `labels: auto` by the
    AlpacaEval 2.0 recipe, its held-out GPT-4-turbo figures those its persona declares."""
    npz = Path(str(HEADS / "embedded_distilled_alpaca_eval2.npz"))
    manifest = json.loads(Path(str(HEADS / "embedded_distilled_alpaca_eval2.json")).read_text())
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == manifest["head"]["sha256"]
    assert manifest["reproduce"].startswith(
        "simfarm train recipes/distilled_judge_alpaca_eval2.yaml --out "
    )
    assert manifest["training_data"]["labels"] == "auto"
    turbo = manifest["heldout"]["by_source"]["weighted_alpaca_eval_gpt4_turbo"]["distilled"]
    assert manifest["training_data"]["sources"]["weighted_alpaca_eval_gpt4_turbo"] == {
        "n_pairs": turbo["n_decisive"],
        "n_systems": 7,
    }
    # The persona's comment quotes the held-out GPT-4-turbo figures of this manifest; its
    # measured_agreement is human agreement (PandaLM), like every persona's, so the quickstart's
    # choice of offline judge compares like with like.
    persona = bundled_data_dir("annotators") / "embedded_distilled_alpaca_eval2.yaml"
    persona_text = persona.read_text(encoding="utf-8")
    assert f"agreement {turbo['agreement']:.3f}" in persona_text
    assert f"{turbo['agreement_balanced']:.3f} (longest" in persona_text
    declared = load_annotator("embedded_distilled_alpaca_eval2").spec.measured_agreement
    assert declared is not None and declared.human_set.startswith("PandaLM")
    assert load_head("embedded_distilled_alpaca_eval2").features == FEATURE_NAMES


@pytest.mark.parametrize("head", ["embedded_distilled", "embedded_distilled_alpaca_eval2"])
def test_shipped_leaderboard_figures_come_from_heads_that_never_saw_the_system(head: str) -> None:
    """Each shipped manifest ranks 40 systems against the published AlpacaEval 2.0 board and
    Chatbot Arena; every one of its training systems on the board was scored by its held-out
    fold's head, never by the shipped head; the persona quotes the figures."""
    manifest = json.loads(Path(str(HEADS / f"{head}.json")).read_text())
    board = manifest["test_leaderboard"]
    trained = set(manifest["training_data"]["systems"])
    for name, figures in board["systems"].items():
        assert (figures["scored_by"] == "shipped head") == (name not in trained), name
    ae2, arena = board["boards"]["alpaca_eval_2"], board["boards"]["chatbot_arena"]
    assert ae2["n_systems"] == 40 and arena["n_systems"] == 13
    assert ae2["distilled"]["spearman"] > ae2["longest"]["spearman"]
    persona = (bundled_data_dir("annotators") / f"{head}.yaml").read_text(encoding="utf-8")
    assert f"Spearman {ae2['distilled']['spearman']:.3f}" in persona
    assert f"{arena['distilled']['spearman']:.3f}" in persona


def test_persona_declares_its_measured_agreement() -> None:
    loaded = load_annotator("embedded_distilled")
    assert "distil" in loaded.spec.id
    assert loaded.spec.rule == "distilled" and loaded.spec.head == "embedded_distilled"
    assert loaded.spec.measured_agreement is not None
    assert loaded.spec.measured_agreement.longest_agreement is not None


def test_distilled_rule_needs_a_head() -> None:
    with pytest.raises(ValueError, match="`head` goes with `rule: distilled`"):
        PairwisePersona(rule="distilled")
    with pytest.raises(ValueError, match="`head` goes with `rule: distilled`"):
        PairwisePersona(rule="longest", head="embedded_distilled")


def test_bad_head_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    np.savez(
        path,
        token_scores=np.zeros(10),
        dense_weights=np.zeros(3),
        ngram_idf=np.ones(2**18),
        ngram_weights=np.zeros(2**18),
        bias=0.0,
        delta_len_std=1.0,
        features=np.array(FEATURE_NAMES),
    )
    with pytest.raises(ConfigError, match=r"broken\.npz: field 'dense_weights' has shape"):
        DistilledHead(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a distilled judge head"):
        DistilledHead(path)
    assert len(STYLE_FEATURES) == 8


def _pair(output_1: str, output_2: str, n: int = 0) -> PairwiseItem:
    return PairwiseItem(
        instruction=f"Explain photosynthesis briefly. ({n})",
        output_1=output_1,
        output_2=output_2,
        generator_1="a",
        generator_2="b",
    )


GOOD = (
    "Photosynthesis is how plants, algae and some bacteria turn light into chemical energy: "
    "chlorophyll absorbs light, water is split releasing oxygen, and the energy is used to fix "
    "carbon dioxide into glucose in the Calvin cycle."
)
POOR = "I'm sorry, I cannot help with that. As an AI I don't know about plants."


@pytest.mark.slow
def test_judges_real_pairs_symmetrically_without_a_request() -> None:
    """Through the real pipeline and the real embedded tokenizer: a soft verdict per pair,
    swapping the outputs gives the complement, identical outputs tie, no LLM request."""
    loaded = load_annotator("embedded_distilled")
    pairs = [_pair(POOR, GOOD), _pair(GOOD, POOR), _pair(GOOD, GOOD)]
    result = annotate(pairs, loaded)
    forward, backward, same = (a.preference for a in result.annotations)
    assert forward is not None and backward is not None
    assert forward > 1.5  # the helpful answer beats the refusal
    assert forward - 1 == pytest.approx(1 - (backward - 1), abs=1e-6)
    assert same == 1.5
    assert result.summary.requests_sent == 0
