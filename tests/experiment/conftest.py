"""Fixtures for the experiment tests: a tiny model (the training tests' builder), small
instruction splits, tiny recipes and an experiment file wiring them together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.training.conftest import build_tiny_model

_TOPICS = [
    ("Name a colour of the sky.", "Blue."),
    ("Give a synonym for happy.", "Glad."),
    ("What is two plus two?", "Four."),
    ("Name a fruit that is yellow.", "A banana."),
    ("Say hello in French.", "Bonjour."),
    ("Name an animal that barks.", "A dog."),
    ("What do bees make?", "Honey."),
    ("Name a planet near the Sun.", "Mercury."),
    ("What is the opposite of cold?", "Hot."),
    ("Name a shape with three sides.", "A triangle."),
    ("What do you call frozen water?", "Ice."),
    ("Name a month in winter.", "January."),
]


def write_splits(folder: Path) -> dict[str, Path]:
    """sft / preference / unlabeled / eval JSONL files (instruction, input, output)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": q, "input": "", "output": a} for q, a in _TOPICS]
    splits = {"sft": rows, "preference": rows[:6], "unlabeled": rows[6:10], "eval": rows[8:]}
    paths = {}
    for name, records in splits.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


TRAINING = {"max_steps": 2, "batch_size": 2, "save_steps": 1, "logging_steps": 1, "max_length": 256}


def write_recipes(folder: Path, data: dict[str, Path]) -> dict[str, Path]:
    """Tiny SFT and DPO recipes (the experiment replaces model, seed and data)."""
    sft = {"method": "sft", "data": {"train": {"path": str(data["sft"])}}, "training": TRAINING}
    dpo = {"method": "dpo", "data": {"annotations": str(data["sft"])}, "training": TRAINING}
    best_of_n = {
        "method": "best_of_n",
        "data": {"prompts": {"path": str(data["eval"])}},
        "n": 2,
        "generation": {"max_new_tokens": 8, "temperature": 1.0},
    }
    ppo = {
        "method": "ppo",
        "data": {"prompts": {"path": str(data["unlabeled"])}},
        "generation": {"max_new_tokens": 8, "temperature": 1.0},
        "ppo": {
            "steps": 2,
            "batch_size": 2,
            "mini_batch_size": 2,
            "ppo_epochs": 1,
            "learning_rate": 0.01,
        },
        "save_steps": 1,
    }
    return {
        "sft": write_yaml(folder / "sft.yaml", sft),
        "dpo": write_yaml(folder / "dpo.yaml", dpo),
        "best_of_n": write_yaml(folder / "best_of_n.yaml", best_of_n),
        "ppo": write_yaml(folder / "ppo.yaml", ppo),
    }


def experiment_dict(
    model: Path,
    data: dict[str, Path],
    recipes: dict[str, Path],
    methods: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    generation = {"max_new_tokens": 8, "temperature": 1.0, "batch_size": 8}
    return {
        "name": "tiny experiment",
        "seed": 7,
        "policy": {"name_or_path": str(model), "dtype": "float32", "device": "cpu"},
        "data": {split: {"path": str(path)} for split, path in data.items()},
        "sft": {"method": "sft", "recipe": str(recipes["sft"])},
        "feedback": {"annotator": "longest", "label_noise": 0.1, "generation": generation},
        # sampled: a tiny random model's greedy answer is often empty, which would tie everything
        "evaluation": {"annotator": "longest", "generation": generation},
        "methods": methods
        or [
            {"method": "sft"},
            {
                "method": "dpo",
                "recipe": str(recipes["dpo"]),
                "overrides": {"training.max_steps": 4},
            },
        ],
    }


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_setup(tmp_path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    data = write_splits(tmp_path / "data")
    return data, write_recipes(tmp_path / "recipes", data)
