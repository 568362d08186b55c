"""With alpaca_eval's published inputs (difficulty + gamed-baseline annotations, read through
the real hub client from a local folder in hub-cache layout), simfarm's LC equals alpaca_eval's
own ``get_length_controlled_winrate``, regularisation included.

alpaca_eval itself is the oracle (the ``bench`` extra installs it); its hub downloads are
pointed at the same local cache, so both sides read the same files through
``huggingface_hub``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simfarm.errors import ConfigError
from simfarm.evaluation.length_controlled import length_controlled_winrate
from simfarm.evaluation.published_glm import (
    DIFFICULTY_FILE,
    EVAL_SET_FILE,
    GAMED_FILE,
    HUB_REPO,
    published_difficulty,
)
from simfarm.testing.alpaca_eval_shim import provide_pkg_resources
from simfarm.types import PairwiseAnnotation

pd = pytest.importorskip("pandas")
N = 120
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _alpaca_eval_glm() -> Any:
    """alpaca_eval's glm_winrate module (alpaca_eval 0.6 imports ``pkg_resources``, gone from
    setuptools >= 81: a two-function stand-in is enough for it to import)."""
    provide_pkg_resources()
    return pytest.importorskip("alpaca_eval.metrics.glm_winrate")


def _synthetic_benchmark(seed: int = 0) -> tuple[list[str], np.ndarray, Any]:
    """Instructions, their difficulty and alpaca_eval's gamed rows for two gamed variants."""
    rng = np.random.default_rng(seed)
    instructions = [f"synthetic instruction {i}: {rng.integers(1 << 30)}" for i in range(N)]
    gamma = rng.normal(0.0, 1.0, N)
    frames = []
    for name, factor, theta in (("verbose", 2.5, 0.8), ("concise", 0.4, -1.2)):
        len_1 = rng.integers(200, 2000, N)
        len_2 = (len_1 * factor * rng.uniform(0.7, 1.3, N)).astype(int)
        delta = (len_1 - len_2).astype(float)
        std_delta = delta / pd.Series(delta).std()  # alpaca_eval's standardisation
        p = 1 / (1 + np.exp(-(theta - 1.0 * np.tanh(std_delta) + gamma)))
        preference = np.round(p, 3)
        preference[rng.integers(N)] = np.nan  # a failed gamed annotation
        frames.append(
            pd.DataFrame(
                {
                    "model": f"gpt4_1106_preview_{name}",
                    "index": np.arange(N),
                    "preference": preference,
                    "std_delta_len": std_delta,
                    "instruction_difficulty": gamma,
                    "not_gamed_baseline": False,
                }
            )
        )
    return instructions, gamma, pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """A hub cache (``datasets--tatsu-lab--alpaca_eval/{refs,snapshots}``) holding the three
    files, as ``hf_hub_download`` leaves them after a download."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / f"datasets--{HUB_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    instructions, gamma, gamed = _synthetic_benchmark()
    gamed.to_csv(snapshot / GAMED_FILE, index=False)
    table = pd.Series(gamma, name="instruction_difficulty")
    table.index.name = "index"
    table.to_csv(snapshot / DIFFICULTY_FILE)
    records = [{"instruction": i, "output": "", "generator": "x"} for i in instructions]
    (snapshot / EVAL_SET_FILE).write_text(json.dumps(records))
    yield root, instructions


def _model_annotations(
    instructions: list[str], theta: float, factor: float, seed: int
) -> list[PairwiseAnnotation]:
    rng = np.random.default_rng(seed)
    n = len(instructions)
    len_1 = rng.integers(300, 1500, n)
    len_2 = (len_1 * factor * rng.uniform(0.5, 1.5, n)).astype(int) + 1
    p = 1 / (1 + np.exp(-(theta - 0.8 * np.tanh((len_1 - len_2) / 500) + rng.normal(0, 1, n))))
    preference = np.where(rng.uniform(size=n) < 0.5, np.round(p, 2) + 1, np.round(p) + 1)
    out = []
    for i, instruction in enumerate(instructions):
        value: float | None = float(preference[i])
        if i == 7:
            value = None  # a failed annotation: in the benchmark, out of the fit
        elif i == 9:
            value = 0.0  # alpaca_eval's legacy draw
        out.append(
            PairwiseAnnotation(
                instruction=instruction,
                output_1="r" * int(len_1[i]),
                output_2="m" * int(len_2[i]),
                generator_1="gpt4_1106_preview",
                generator_2=f"model_{seed}",
                preference=value,
                annotator="weighted_alpaca_eval_gpt4_turbo",
            )
        )
    return out


def _alpaca_eval_lc(glm: Any, annotations: list[PairwiseAnnotation], cache: Path) -> float:
    from huggingface_hub import hf_hub_download

    def from_cache(**kwargs: Any) -> str:
        # alpaca_eval's own call, read from the local hub cache (no network here).
        kwargs.update(cache_dir=cache, local_files_only=True, force_download=False)
        return str(hf_hub_download(**kwargs))

    frame = pd.DataFrame(
        [
            {
                "instruction": a.instruction,
                "output_1": a.output_1,
                "output_2": a.output_2,
                "generator_1": a.generator_1,
                "generator_2": a.generator_2,
                "annotator": a.annotator,
                "preference": np.nan if a.preference is None else a.preference,
            }
            for a in annotations
        ]
    )
    import sklearn

    original = glm.hf_hub_download
    glm.hf_hub_download = from_cache
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = glm.get_length_controlled_winrate(
                frame, save_weights_dir=None, is_warn_extreme_changes=False
            )
    finally:
        glm.hf_hub_download = original
        sklearn.set_config(enable_metadata_routing=False)  # alpaca_eval switches it on
    return float(metrics["length_controlled_winrate"])


@pytest.mark.parametrize(("theta", "factor", "seed"), [(-0.5, 1.8, 1), (0.4, 0.6, 2)])
def test_lc_equals_alpaca_eval_with_published_inputs(
    hub_cache: tuple[Path, list[str]], theta: float, factor: float, seed: int
) -> None:
    glm = _alpaca_eval_glm()
    cache, instructions = hub_cache
    annotations = _model_annotations(instructions, theta, factor, seed)
    difficulty = published_difficulty(cache, local_files_only=True)
    assert difficulty.gamed is not None and "published" in difficulty.method
    ours = length_controlled_winrate(annotations, difficulty).length_controlled_winrate
    theirs = _alpaca_eval_lc(glm, annotations, cache)
    assert ours == pytest.approx(theirs, abs=1e-6)
    # The regularisation matters here: without the gamed rows the value moves.
    plain = difficulty.model_copy(update={"gamed": None})
    assert abs(length_controlled_winrate(annotations, plain).length_controlled_winrate - ours) > 0.1


def test_annotations_in_another_order_give_the_same_lc(hub_cache: tuple[Path, list[str]]) -> None:
    cache, instructions = hub_cache
    annotations = _model_annotations(instructions, 0.1, 1.2, 3)
    difficulty = published_difficulty(cache, local_files_only=True)
    ours = length_controlled_winrate(annotations, difficulty).length_controlled_winrate
    shuffled = length_controlled_winrate(annotations[::-1], difficulty).length_controlled_winrate
    assert shuffled == pytest.approx(ours, abs=0.5)  # keyed by instruction, not position


def test_missing_hub_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"df_gamed\.csv of the hub dataset tatsu-lab/alpaca_eval"
    ):
        published_difficulty(tmp_path, local_files_only=True)


def test_out_of_sync_hub_files_are_an_error(
    hub_cache: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import shutil

    source, _ = hub_cache
    shutil.copytree(source, tmp_path / "hub")
    snapshot = next((tmp_path / "hub").glob("datasets--*/snapshots/*"))
    table = pd.read_csv(snapshot / DIFFICULTY_FILE, index_col=0)
    table.iloc[3, 0] += 0.5
    table.to_csv(snapshot / DIFFICULTY_FILE)
    with pytest.raises(ConfigError, match="disagree on the difficulty of instruction index 3"):
        published_difficulty(tmp_path / "hub", local_files_only=True)


def test_evaluate_cli_uses_published_difficulty(
    hub_cache: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """`simfarm evaluate --published-difficulty` through the real hub client, offline, from
    the hub cache (HF_HUB_CACHE / HF_HUB_OFFLINE are huggingface_hub's own switches)."""
    import os
    import subprocess

    cache, instructions = hub_cache
    annotations = _model_annotations(instructions, 0.2, 1.4, 4)
    path = tmp_path / "model.jsonl"
    path.write_text("".join(a.model_dump_json() + "\n" for a in annotations))
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "board"
    command = [sys.executable, "-m", "simfarm.cli", "evaluate", "--annotations", str(path)]
    command += ["--published-difficulty", "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["difficulty_method"].startswith("published (hub tatsu-lab/alpaca_eval")
    difficulty = published_difficulty(cache, local_files_only=True)
    expected = length_controlled_winrate(annotations, difficulty).length_controlled_winrate
    row = next(r for r in board["rows"] if r["generator_2"] == "model_4")
    assert row["length_controlled_winrate"] == pytest.approx(expected, abs=1e-9)
