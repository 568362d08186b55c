"""The JSON schema of recipe files (``recipes/recipe.schema.json``), for editors.

Regenerate after changing a config model (a test checks the committed file is current)::

    python -m simfarm.training.schema
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from simfarm.errors import ConfigError
from simfarm.paths import bundled_data_dir
from simfarm.training.registry import RECIPES, config_class

SCHEMA_FILE = "recipe.schema.json"


def recipe_json_schema() -> dict[str, Any]:
    """One schema for every available method's config, chosen by ``method``."""
    classes = []
    for method in sorted(RECIPES):
        try:
            classes.append(config_class(method))
        except ConfigError:  # a method whose module is not present in this checkout
            continue
    union: Any = Annotated[Union[tuple(classes)], Field(discriminator="method")]  # noqa: UP007
    schema: dict[str, Any] = TypeAdapter(union).json_schema()
    schema["title"] = "simfarm recipe"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text() -> str:
    return json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    path = Path(bundled_data_dir("recipes")) / SCHEMA_FILE
    path.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
