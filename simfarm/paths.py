"""Where simfarm finds its data folders and keeps its cache.

The data folders (``annotators/``, ``evals/``, ``recipes/``) live at the top of the repository.
A source checkout or editable install reads them there; a wheel carries a copy under
``simfarm/_data``. A source checkout is recognised by a marker (``pyproject.toml`` naming the
``simfarm`` project next to the package), never by a folder name: in a wheel install the
package's parent is ``site-packages``, where any distribution may have put a top-level
``evals`` or ``annotators`` package. A user folder given explicitly (flag or environment
variable) is searched first, so personal personas can shadow or extend the bundled ones.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

import platformdirs

_PACKAGE_DIR = Path(__file__).resolve().parent
DATA_FOLDERS = ("annotators", "evals", "recipes")
_ENV_VARS = {name: f"SIMFARM_{name.upper()}_DIR" for name in DATA_FOLDERS}


def _is_source_checkout(root: Path) -> bool:
    """Whether ``root`` is simfarm's own source tree: its pyproject.toml names simfarm."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return bool(project.get("project", {}).get("name") == "simfarm")


@functools.cache
def _bundled_root() -> Path:
    """The folder holding the bundled data folders: the checkout, else the wheel's copy."""
    if _is_source_checkout(_PACKAGE_DIR.parent):
        return _PACKAGE_DIR.parent
    return _PACKAGE_DIR / "_data"


def bundled_data_dir(name: str) -> Path:
    """The bundled copy of one data folder: the checkout's, else the wheel's."""
    if name not in DATA_FOLDERS:
        raise ValueError(f"unknown data folder {name!r}; expected one of {DATA_FOLDERS}")
    return _bundled_root() / name


def data_search_path(name: str, extra: list[Path] | None = None) -> list[Path]:
    """Folders to search for one kind of data, most specific first.

    Order: folders passed by the caller, then ``$SIMFARM_<NAME>_DIR`` (``os.pathsep``
    separated), then the bundled folder.
    """
    folders: list[Path] = [Path(p) for p in (extra or [])]
    env_value = os.environ.get(_ENV_VARS[name], "")
    folders.extend(Path(p) for p in env_value.split(os.pathsep) if p)
    folders.append(bundled_data_dir(name))
    return folders


def user_cache_dir() -> Path:
    """simfarm's cache root (``$SIMFARM_CACHE_DIR`` or the platform's user cache dir).

    Never inside the installed package: a read-only or shared site-packages must not break
    caching, and upgrading the package must not drop paid-for annotations.
    """
    override = os.environ.get("SIMFARM_CACHE_DIR")
    path = Path(override) if override else Path(platformdirs.user_cache_dir("simfarm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_store_dir() -> Path:
    """Where converted model weights live (``$SIMFARM_MODEL_DIR`` or the user cache dir).

    Kept apart from the annotation cache so clearing (or isolating) annotations never forces
    a model to be converted again.
    """
    override = os.environ.get("SIMFARM_MODEL_DIR")
    path = Path(override) if override else Path(platformdirs.user_cache_dir("simfarm")) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
