"""The experiment file is validated up front: every mistake names the file and the key,
before any model is loaded (checked through the real command, in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simfarm.errors import ConfigError
from simfarm.experiment import load_experiment_config
from tests.experiment.conftest import experiment_dict, write_yaml


def _run(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simfarm", "run", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _config(tmp_path: Path, tiny_setup: Any, **changes: Any) -> dict[str, Any]:
    data, recipes = tiny_setup
    config = experiment_dict(Path("embedded"), data, recipes)
    config["policy"] = {"name_or_path": "embedded"}
    config.update(changes)
    return config


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"methods": [{"method": "dpp"}]}, "methods.0.method: Input should be"),
        (
            {"methods": [{"method": "dpo", "recipe": "nope.yaml"}]},
            "methods.0.recipe: recipe file not found",
        ),
        ({"methdos": []}, "methdos: Extra inputs are not permitted"),
        ({"executor": "dask"}, "executor: Input should be 'local' or 'ray'"),
        (
            {"feedback": {"annotator": "no_such_judge"}},
            "feedback.annotator: no persona or pool named",
        ),
        (
            {"methods": [{"method": "dpo", "overrides": {"training.max_stepz": 3}}]},
            "training.max_stepz: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_experiment_fails_fast_naming_file_and_key(
    tmp_path: Path, tiny_setup: Any, change: dict[str, Any], expected: str
) -> None:
    config = _config(tmp_path, tiny_setup)
    config.update(change)
    if "dpo" in str(change.get("methods", "")) and "recipe" not in str(change):
        config["methods"][0]["recipe"] = str(tiny_setup[1]["dpo"])
    path = write_yaml(tmp_path / "bad.yaml", config)
    result = _run(path, tmp_path / "out")
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert expected in message, result.stderr
    assert "bad.yaml" in message
    assert not (tmp_path / "out").exists(), "nothing runs before the config is valid"


def test_missing_data_file_names_split(tmp_path: Path, tiny_setup: Any) -> None:
    config = _config(tmp_path, tiny_setup)
    config["data"]["eval"] = {"path": "missing.jsonl"}
    path = write_yaml(tmp_path / "exp.yaml", config)
    with pytest.raises(ConfigError, match=r"exp.yaml: data.eval.path: data file not found"):
        load_experiment_config(path)


def test_reference_must_be_a_method(tmp_path: Path, tiny_setup: Any) -> None:
    config = _config(tmp_path, tiny_setup)
    config["evaluation"]["reference"] = {"method": "ppo"}
    path = write_yaml(tmp_path / "exp.yaml", config)
    with pytest.raises(ConfigError, match=r"evaluation.reference.method"):
        load_experiment_config(path)


def test_valid_config_resolves_paths_and_injects_recipe_fields(
    tmp_path: Path, tiny_setup: Any
) -> None:
    from simfarm.experiment.recipes import Injected, build_recipe_config

    config = _config(tmp_path, tiny_setup)
    config["methods"][1]["overrides"] = {"beta": 0.2, "training": {"max_steps": 3}}
    loaded = load_experiment_config(write_yaml(tmp_path / "exp.yaml", config))
    dpo = loaded.methods[1]
    assert dpo.recipe == tiny_setup[1]["dpo"]
    preferences = tmp_path / "prefs.jsonl"
    preferences.write_text("")
    recipe = build_recipe_config(
        loaded, dpo, Injected(sft_checkpoint=tmp_path, preferences=preferences)
    )
    assert recipe.seed == 7 and recipe.beta == 0.2  # type: ignore[attr-defined]
    assert recipe.training.max_steps == 3 and recipe.training.batch_size == 2  # type: ignore[attr-defined]
    assert recipe.model.adapter == tmp_path
    assert recipe.data.annotations == preferences and recipe.data.feedback is None


def test_committed_schema_is_current() -> None:
    from simfarm.experiment.schema import schema_path, schema_text

    assert schema_path().read_text() == schema_text(), (
        "run `python -m simfarm.experiment.schema` to regenerate"
    )


def test_plain_sft_entry_is_the_sft_baseline(tmp_path: Path, tiny_setup: Any) -> None:
    from simfarm.experiment.run import _is_sft_baseline

    config = _config(tmp_path, tiny_setup)
    config["sft"]["overrides"] = {"training.max_steps": 3}
    config["methods"].append(
        {"method": "sft", "name": "sft_long", "overrides": {"training.max_steps": 9}}
    )
    loaded = load_experiment_config(write_yaml(tmp_path / "exp.yaml", config))
    baseline, dpo, separate = loaded.methods
    assert _is_sft_baseline(loaded, baseline), "trained once, as the SFT stage"
    assert not _is_sft_baseline(loaded, separate)
    assert not _is_sft_baseline(loaded, dpo)
