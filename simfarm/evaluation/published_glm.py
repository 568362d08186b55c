"""alpaca_eval's published LC inputs, read from the Hugging Face hub: so that a user with
network gets alpaca_eval's length-controlled win rate exactly.

alpaca_eval's ``get_length_controlled_winrate`` (``length_controlled_v1``) needs two files of
the dataset repo ``tatsu-lab/alpaca_eval`` that are not in its package:

``df_gamed.csv``
    GPT-4-turbo annotations of two "gamed" variants of the reference
    (``gpt4_1106_preview_verbose`` / ``_concise``, prompted to be long or short), with their
    standardised length difference, and the per-instruction difficulty every LC fit uses
    (alpaca_eval reads the model's difficulty from this file: first row of each ``index``).
    Each model's GLM is regularised towards these rows (``regularize_to_baseline_lambda=0.2``,
    split over the two variants), which pins the length weight down for models whose outputs
    are uniformly short or long.
``instruction_difficulty.csv``
    The same difficulty values, one per instruction (``index`` → value), which alpaca_eval
    uses to swap baselines; read here to fill instructions the gamed file lacks and to check
    the two agree.

Both key instructions by their position (``index``) in the AlpacaEval set; the set itself
(``alpaca_eval.json`` of the same repo) maps them to instruction text, so annotations can come
in any order (alpaca_eval itself takes the position of each row in the annotation file).

Files are fetched with ``huggingface_hub.hf_hub_download`` into the usual hub cache, so later
runs (and runs with ``HF_HUB_OFFLINE=1`` or ``local_files_only``) read the cached copies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from simfarm.errors import ConfigError
from simfarm.evaluation.difficulty import (
    REGULARIZE_TO_BASELINE_LAMBDA,
    DifficultyEntry,
    GamedBaselines,
    InstructionDifficulty,
)

HUB_REPO = "tatsu-lab/alpaca_eval"
GAMED_FILE = "df_gamed.csv"
DIFFICULTY_FILE = "instruction_difficulty.csv"
EVAL_SET_FILE = "alpaca_eval.json"
_AGREEMENT_TOLERANCE = 1e-9
_GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty")


def _download(filename: str, cache_dir: Path | None, local_files_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo_id=HUB_REPO,
                filename=filename,
                repo_type="dataset",
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        )
    except Exception as error:  # network, missing cache entry, auth: one clear sentence
        where = f" (cache {cache_dir})" if cache_dir else ""
        raise ConfigError(
            f"could not read {filename} of the hub dataset {HUB_REPO}{where}: "
            f"{type(error).__name__}: {error}. Without network, run once with network or "
            "estimate difficulty offline (the default)"
        ) from None


def _read_gamed(path: Path) -> tuple[GamedBaselines, dict[int, float]]:
    import pandas as pd

    frame = pd.read_csv(path)
    missing = [c for c in _GAMED_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}")
    if "not_gamed_baseline" in frame.columns and frame["not_gamed_baseline"].astype(bool).any():
        bad = int(np.flatnonzero(frame["not_gamed_baseline"].astype(bool).to_numpy())[0])
        raise ConfigError(
            f"{path}: record {bad}: field 'not_gamed_baseline' is true; expected only gamed rows"
        )
    columns: dict[str, np.ndarray] = {}
    for column in _GAMED_COLUMNS:
        try:
            columns[column] = frame[column].astype(float).to_numpy()
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{path}: field {column!r}: {error}") from None
    for column in ("index", "std_delta_len", "instruction_difficulty"):
        bad_rows = np.flatnonzero(~np.isfinite(columns[column]))
        if bad_rows.size:
            raise ConfigError(f"{path}: record {int(bad_rows[0])}: field {column!r} is not finite")
    preference = columns["preference"]
    outside = np.flatnonzero((preference < 0) | (preference > 1))
    if outside.size:
        raise ConfigError(
            f"{path}: record {int(outside[0])}: field 'preference' must lie in [0, 1]"
        )
    first: dict[int, float] = {}
    for index, value in zip(columns["index"], columns["instruction_difficulty"], strict=True):
        first.setdefault(int(index), float(value))
    gamed = GamedBaselines(
        std_delta_len=columns["std_delta_len"].tolist(),
        instruction_difficulty=columns["instruction_difficulty"].tolist(),
        preference=preference.tolist(),
    )
    return gamed, first


def _read_difficulty(path: Path) -> dict[int, float]:
    import pandas as pd

    frame = pd.read_csv(path, index_col=0)
    if frame.shape[1] != 1:
        raise ConfigError(f"{path}: expected one value column beside the index")
    values: dict[int, float] = {}
    for index, value in frame.iloc[:, 0].items():
        try:
            number = float(value)
            key = int(index)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: record {index!r}: not an (index, value) pair") from None
        if not math.isfinite(number):
            raise ConfigError(f"{path}: record {key}: field 'instruction_difficulty' not finite")
        values[key] = number
    return values


def _read_eval_set(path: Path) -> list[tuple[str, str]]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not a JSON list of AlpacaEval records: {error}") from None
    if not isinstance(records, list):
        raise ConfigError(f"{path}: expected a JSON list of AlpacaEval records")
    keys: list[tuple[str, str]] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str):
            raise ConfigError(f"{path}: record {index}: field 'instruction' missing or not text")
        keys.append((record["instruction"], str(record.get("input") or "")))
    return keys


def published_difficulty(
    cache_dir: Path | None = None, *, local_files_only: bool = False
) -> InstructionDifficulty:
    """alpaca_eval's published difficulty and gamed-baseline annotations, from the hub (or its
    cache): LC fitted with it is alpaca_eval's ``length_controlled_v1`` exactly."""
    gamed_path = _download(GAMED_FILE, cache_dir, local_files_only)
    difficulty_path = _download(DIFFICULTY_FILE, cache_dir, local_files_only)
    eval_set_path = _download(EVAL_SET_FILE, cache_dir, local_files_only)
    gamed, gamed_difficulty = _read_gamed(gamed_path)
    table = _read_difficulty(difficulty_path)
    disagree = [
        i
        for i, value in gamed_difficulty.items()
        if i in table and abs(table[i] - value) > _AGREEMENT_TOLERANCE
    ]
    if disagree:
        raise ConfigError(
            f"{gamed_path} and {difficulty_path} disagree on the difficulty of instruction "
            f"index {disagree[0]} ({len(disagree)} in all); the hub files are out of sync"
        )
    keys = _read_eval_set(eval_set_path)
    # alpaca_eval's LC reads the model's difficulty from the gamed file; the table fills gaps.
    values = {**table, **gamed_difficulty}
    outside = [i for i in values if not 0 <= i < len(keys)]
    if outside:
        raise ConfigError(
            f"{difficulty_path}: index {outside[0]} is outside the {len(keys)} instructions "
            f"of {eval_set_path}"
        )
    entries = [
        DifficultyEntry(
            instruction=keys[i][0], input=keys[i][1], instruction_difficulty=v, n_models=0
        )
        for i, v in sorted(values.items())
    ]
    return InstructionDifficulty(
        method=(
            f"published (hub {HUB_REPO}: {DIFFICULTY_FILE} + {GAMED_FILE}, "
            f"regularize_to_baseline_lambda={REGULARIZE_TO_BASELINE_LAMBDA})"
        ),
        models=[],
        entries=entries,
        gamed=gamed,
    )
