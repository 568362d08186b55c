"""Label noise, position bias, length bias and per-member temperature: drawn from seeded,
content-keyed randomness before any request, through the real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from simfarm.annotation import LoadedPool, annotate, load_annotator
from simfarm.testing.openai_server import start_server
from simfarm.types import PairwiseItem
from tests.server_personas import make_persona

N = 10_000


def items(n: int) -> list[PairwiseItem]:
    """Pairs whose longer output alternates between the slots, lengths differing."""
    return [
        PairwiseItem(
            instruction=f"Task {i}: say something.",
            output_1=f"answer {i}" + (" with more words" if i % 2 else ""),
            output_2=f"reply {i}" + ("" if i % 2 else " with more words"),
        )
        for i in range(n)
    ]


def longer(item: PairwiseItem) -> float:
    return 2.0 if len(item.output_2) > len(item.output_1) else 1.0


def rule_persona(folder: Path, name: str, **fields: object) -> str:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"rule": "longest", **fields}))
    return name


def test_label_noise_flips_a_quarter_of_ten_thousand_labels(tmp_path: Path) -> None:
    pairs = items(N)
    name = rule_persona(tmp_path, "noisy", label_noise=0.25)
    result = annotate(pairs, name, annotators_dirs=[tmp_path], use_cache=False)
    flipped = sum(a.preference != longer(i) for a, i in zip(result.annotations, pairs, strict=True))
    assert abs(flipped / N - 0.25) <= 0.02, flipped / N
    assert result.summary.requests_sent == 0


def test_noised_items_never_reach_the_backend(tmp_path: Path) -> None:
    pairs = items(300)
    with start_server(policy="longest") as server:
        name = make_persona(tmp_path, server, label_noise=0.25)
        result = annotate(pairs, name, annotators_dirs=[tmp_path])
        sent = server.requests()
        stats = server.stats()
    seen = "\n".join(json.dumps(request) for request in sent)
    noised = [(a.raw_completion or "").startswith("<label noise") for a in result.annotations]
    assert 100 < sum(noised) < 200
    assert stats["requests"] == len(sent) == 300 - sum(noised)
    for item, was_noised in zip(pairs, noised, strict=True):
        assert (item.instruction in seen) is not was_noised


def test_position_bias_forces_the_first_shown_slot_at_the_configured_rate(tmp_path: Path) -> None:
    pairs = items(N)
    name = rule_persona(tmp_path, "clicker", position_bias=0.3)
    result = annotate(pairs, name, annotators_dirs=[tmp_path], use_cache=False)
    forced = [a for a in result.annotations if a.raw_completion == "<position bias: first shown>"]
    assert abs(len(forced) / N - 0.3) <= 0.02, len(forced) / N
    # Each forced verdict is the slot shown first, mapped back to the item's order.
    for annotation in forced:
        assert annotation.preference == (2.0 if annotation.swapped else 1.0)
    # The shown order is itself a fair seeded coin, so forced verdicts are not all output_1.
    assert 0.45 < sum(a.swapped for a in forced) / len(forced) < 0.55
    # Unforced items keep the rule's verdict.
    for annotation, item in zip(result.annotations, pairs, strict=True):
        if annotation.raw_completion is None:
            assert annotation.preference == longer(item)


def test_length_bias_tilts_towards_the_longer_output(tmp_path: Path) -> None:
    pairs = items(N)
    (tmp_path / "terse.yaml").write_text(yaml.safe_dump({"rule": "shortest", "length_bias": 0.4}))
    result = annotate(pairs, "terse", annotators_dirs=[tmp_path], use_cache=False)
    chose_longer = sum(
        a.preference == longer(i) for a, i in zip(result.annotations, pairs, strict=True)
    )
    assert abs(chose_longer / N - 0.4) <= 0.02, chose_longer / N


def test_bias_draws_do_not_depend_on_each_other(tmp_path: Path) -> None:
    """Adding a length bias leaves the position-biased items exactly where they were, and
    draws its own coin (not the position draw again)."""
    pairs = items(2000)
    rule_persona(tmp_path, "p", position_bias=0.2)
    rule_persona(tmp_path, "p2", id="p", position_bias=0.2, length_bias=0.5)
    only = annotate(pairs, "p", annotators_dirs=[tmp_path], use_cache=False).annotations
    both = annotate(pairs, "p2", annotators_dirs=[tmp_path], use_cache=False).annotations
    forced = [a.raw_completion == "<position bias: first shown>" for a in only]
    assert forced == [a.raw_completion == "<position bias: first shown>" for a in both]
    # Among the rest, the length bias has its own draw: still its configured rate.
    rest = [a for a, was_forced in zip(both, forced, strict=True) if not was_forced]
    tilted = sum(a.raw_completion == "<length bias: longer>" for a in rest)
    assert 0.45 < tilted / len(rest) < 0.55, tilted / len(rest)


def test_pool_member_knobs_override_the_persona(tmp_path: Path) -> None:
    with start_server(policy="longest") as server:
        make_persona(tmp_path, server, name="judge")
    pool = {
        "kind": "pool",
        "members": [
            {"persona": "judge", "temperature": 0.7},
            {"persona": "judge", "weight": 2, "label_noise": 0.1, "position_bias": 0.2},
        ],
    }
    (tmp_path / "crowd.yaml").write_text(yaml.safe_dump(pool))
    loaded = load_annotator("crowd", [tmp_path])
    assert isinstance(loaded, LoadedPool)
    (hot, _), (biased, weight) = loaded.members
    assert hot.spec.decoding.temperature == 0.7 and hot.spec.label_noise == 0.0
    assert biased.spec.decoding.temperature == 0.0 and weight == 2
    assert biased.spec.label_noise == 0.1 and biased.spec.position_bias == 0.2


_ASSIGN = """
import json, sys
from simfarm.annotation import judges_for, load_annotator
from simfarm.types import PairwiseItem
pool = judges_for(load_annotator(sys.argv[1], [sys.argv[2]]))
items = [PairwiseItem(instruction=f"q{i}", output_1=f"a{i}", output_2=f"b {i}") for i in range(300)]
print(json.dumps([(j.id, j.spec.decoding.temperature) for j in pool.assign(items)]))
"""


def test_pool_assignment_is_identical_across_hash_seeds(tmp_path: Path) -> None:
    for name, temperature in (("cold", 0.0), ("warm", 1.0)):
        spec = {"rule": "longest", "decoding": {"temperature": temperature}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    pool = {
        "kind": "pool",
        "members": [
            {"persona": "cold"},
            {"persona": "warm", "weight": 2, "temperature": 0.5},
        ],
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(pool))
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _ASSIGN, "mix", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1]
    ids = [member for member, _ in runs[0]]
    assert 0.55 < ids.count("warm") / len(ids) < 0.78
    assert {tuple(pair) for pair in runs[0]} == {("cold", 0.0), ("warm", 0.5)}
