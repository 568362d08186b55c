"""Recipe configs: validation errors name the file and the key, fail before torch is
imported, overrides apply, and the committed JSON schema is current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simfarm.errors import ConfigError
from simfarm.training.config import DPOConfig, SFTConfig, load_recipe_config
from simfarm.training.schema import SCHEMA_FILE, schema_text

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "recipes"


def _write(folder: Path, data: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _sft(train: str = "data.jsonl") -> dict:
    return {"method": "sft", "data": {"train": {"path": train}}}


@pytest.mark.parametrize("name", ["sft", "reward_model", "dpo"])
def test_bundled_recipes_validate(name: str) -> None:
    config = load_recipe_config(RECIPES / f"{name}.yaml")
    assert config.method == name
    assert config.model.name_or_path == "embedded" and config.lora.enabled


def test_paths_resolve_against_the_recipe_file(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    config = load_recipe_config(_write(tmp_path, _sft()))
    assert isinstance(config, SFTConfig)
    assert config.data.train.path == str(tmp_path / "data.jsonl")


def test_hub_ids_are_kept(tmp_path: Path) -> None:
    config = load_recipe_config(_write(tmp_path, _sft("tatsu-lab/alpaca_farm")))
    assert isinstance(config, SFTConfig)
    assert config.data.train.path == "tatsu-lab/alpaca_farm"


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    config = load_recipe_config(
        _write(tmp_path, _sft()),
        ["training.max_steps=3", "lora.enabled=false", "model.dtype=float32", "seed=7"],
    )
    assert isinstance(config, SFTConfig)
    assert config.training.max_steps == 3 and config.lora.enabled is False
    assert config.model.dtype == "float32" and config.seed == 7


def test_dpo_loss_family_is_one_field_away() -> None:
    config = load_recipe_config(RECIPES / "dpo.yaml", ["loss_type=ipo", "beta=0.5"])
    assert isinstance(config, DPOConfig) and config.loss_type == "ipo" and config.beta == 0.5


@pytest.mark.parametrize(
    ("data", "overrides", "expected"),
    [
        (_sft(), ["training.bogus=1"], ["training.bogus", "Extra inputs"]),
        ({**_sft(), "method": "sfft"}, [], ["method", "sfft", "known", "dpo"]),
        (_sft("missing.jsonl"), [], ["data.train.path", "missing.jsonl", "not found"]),
        (
            {"method": "dpo", "data": {"annotations": "nope.jsonl"}},
            [],
            ["data.annotations", "nope.jsonl"],
        ),
        ({"method": "dpo", "data": {}}, [], ["data", "exactly one of"]),
        (_sft(), ["training.max_steps=zero"], ["training.max_steps", "integer"]),
    ],
)
def test_bad_configs_name_file_and_key(
    tmp_path: Path, data: dict, overrides: list[str], expected: list[str]
) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_recipe_config(path, overrides)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_validation_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from simfarm.training import load_recipe_config; "
        f"load_recipe_config(Path({str(RECIPES / 'dpo.yaml')!r})); "
        "print(sorted(m for m in ('torch', 'trl', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "[]"


def test_committed_schema_is_current() -> None:
    committed = (RECIPES / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == schema_text(), "run: python -m simfarm.training.schema"
    schema = json.loads(committed)
    for name in ("SFTConfig", "RewardConfig", "DPOConfig"):
        definition = schema["$defs"][name]
        assert definition["additionalProperties"] is False
        assert all("description" in field for field in definition["properties"].values())
