"""``simfarm cache where|size|clear``: where simfarm keeps what it has paid for, and how big.

Two stores, kept apart on purpose: the annotation cache (``completions.sqlite`` under
``$SIMFARM_CACHE_DIR``, default the platform's user cache dir) holds every judge answer
received, so reruns and resumes cost nothing; the model store (``$SIMFARM_MODEL_DIR``,
default ``<user cache>/models``) holds converted model weights (~790 MB for the embedded
Gemma judge). ``clear`` removes the annotation cache only, unless ``--models`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simfarm.cli.common import console, err_console

app = typer.Typer(help="Where the annotation cache and model store are, their size, clearing.")

CACHE_FILE = "completions.sqlite"


def _cache_files(cache_dir: Path) -> list[Path]:
    """The annotation cache: the SQLite file, its WAL/shared-memory companions and the
    ``.unsaved/`` journals (answers not yet committed, which a later open would commit)."""
    files = [
        cache_dir / f"{CACHE_FILE}{suffix}"
        for suffix in ("", "-wal", "-shm")
        if (cache_dir / f"{CACHE_FILE}{suffix}").is_file()
    ]
    journals = cache_dir / f"{CACHE_FILE}.unsaved"
    if journals.is_dir():
        files += [p for p in journals.rglob("*") if p.is_file()]
    return files


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _human(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


@app.command("where")
def where() -> None:
    """Print the annotation cache file and the model store folder."""
    from simfarm.paths import model_store_dir, user_cache_dir

    console.print(f"annotation cache: {user_cache_dir() / CACHE_FILE}", highlight=False)
    console.print(f"model store:      {model_store_dir()}", highlight=False)


@app.command("size")
def size() -> None:
    """Entries and bytes of the annotation cache; bytes of the model store."""
    from simfarm.cache import CompletionCache
    from simfarm.paths import model_store_dir, user_cache_dir

    cache_dir = user_cache_dir()
    files = _cache_files(cache_dir)
    entries = 0
    if files:
        with CompletionCache(cache_dir / CACHE_FILE) as cache:
            entries = len(cache)
    cache_bytes = sum(p.stat().st_size for p in _cache_files(cache_dir))
    console.print(
        f"annotation cache: {entries} answers, {_human(cache_bytes)} ({cache_dir / CACHE_FILE})",
        highlight=False,
    )
    models = model_store_dir()
    console.print(f"model store:      {_human(_tree_bytes(models))} ({models})", highlight=False)


@app.command("clear")
def clear(
    models: Annotated[
        bool, typer.Option("--models", help="Also delete converted models (re-converted on use).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete the annotation cache (every answer received: reruns pay again), and with
    --models the model store. Do not run it while an annotation run is in progress."""
    import shutil

    from simfarm.paths import model_store_dir, user_cache_dir

    cache_dir = user_cache_dir()
    targets: list[Path] = _cache_files(cache_dir)
    store = model_store_dir()
    what = f"the annotation cache ({cache_dir / CACHE_FILE})"
    if models:
        what += f" and the model store ({store})"
    if not yes and not typer.confirm(f"Delete {what}?", default=False):
        err_console.print("nothing deleted")
        raise typer.Exit(1)
    for path in targets:
        path.unlink(missing_ok=True)
    shutil.rmtree(cache_dir / f"{CACHE_FILE}.unsaved", ignore_errors=True)
    if models and store.exists():
        shutil.rmtree(store)
    console.print(f"deleted {what}", highlight=False)
