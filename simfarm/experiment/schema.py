"""Write ``recipes/experiments/experiment.schema.json`` (``python -m simfarm.experiment.schema``),
the JSON schema of experiment files, for editors; a test keeps the committed copy current."""

from __future__ import annotations

import json
from pathlib import Path

from simfarm.experiment.config import experiment_json_schema
from simfarm.paths import bundled_data_dir


def schema_text() -> str:
    return json.dumps(experiment_json_schema(), indent=2) + "\n"


def schema_path() -> Path:
    return bundled_data_dir("recipes") / "experiments" / "experiment.schema.json"


if __name__ == "__main__":
    schema_path().write_text(schema_text(), encoding="utf-8")
    print(schema_path())
