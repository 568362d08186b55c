"""A content digest of a local model folder, for cache keys.

A local folder's path says nothing about what is in it: weights fine-tuned in place, a
re-converted checkpoint or another tokenizer under the same path would otherwise be served the
old folder's cached answers. So a local model's identity carries a digest of the folder's
content, not of its location (a copied or moved folder keeps its cache).

Hashing must stay cheap on every start while being sound:

- every file's relative path and size enter the digest;
- small files (configs, tokenizers, chat templates, generation config: anything up to
  :data:`FULL_HASH_MAX_BYTES`) are hashed in full each time: they are what changes most
  often, and hashing a few tens of MB takes milliseconds;
- large files (weights) are hashed in full ONCE, and the sha256 is remembered in a small
  sidecar (``<user cache dir>/file-digests.json``) keyed by the file's resolved path, size,
  inode, mtime and ctime. Any write to the file changes its mtime and ctime, and ctime cannot
  be set back by a user (``touch -d`` sets mtime only), so a stale entry cannot match; a copy
  is a new inode with a new ctime and is hashed again (once). Names and sizes alone would not
  do: a fine-tuned checkpoint has exactly the sizes of its base.

Hidden files and folders (names starting with ``.``: ``.cache/huggingface`` download
metadata, simfarm's own conversion marker) are bookkeeping, not model content, and are left
out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from simfarm.paths import user_cache_dir

FULL_HASH_MAX_BYTES = 64 * 2**20
"""Files up to this size are hashed in full on every call; larger ones once (sidecar)."""
SIDECAR_NAME = "file-digests.json"
_CHUNK = 2**22


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


class _Sidecar:
    """Remembered sha256 of large files: ``{resolved path: [stat key, sha256]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[str]] = {}
        self.changed = False
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.entries = {
                    k: v
                    for k, v in loaded.items()
                    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                }

    def sha256(self, path: Path) -> str:
        resolved = str(path.resolve())
        key = _stat_key(path)
        known = self.entries.get(resolved)
        if known is not None and known[0] == key:
            return known[1]
        value = file_sha256(path)
        if _stat_key(path) == key:  # not written to while we read it
            self.entries[resolved] = [key, value]
            self.changed = True
        return value

    def save(self) -> None:
        """Write atomically; a failure only means hashing again next time."""
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(self.entries, handle)
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _content_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def folder_digest(folder: Path, sidecar: Path | None = None) -> str:
    """sha256 over every (relative path, size, content sha256) of the folder's files.

    ``sidecar`` (default ``<user cache dir>/file-digests.json``) remembers the large files'
    hashes; see the module docstring for why that is sound.
    """
    folder = Path(folder)
    remembered = _Sidecar(sidecar if sidecar is not None else user_cache_dir() / SIDECAR_NAME)
    digest = hashlib.sha256()
    for path in _content_files(folder):
        size = path.stat().st_size
        content = file_sha256(path) if size <= FULL_HASH_MAX_BYTES else remembered.sha256(path)
        entry = [path.relative_to(folder).as_posix(), size, content]
        digest.update(json.dumps(entry).encode("utf-8") + b"\n")
    remembered.save()
    return digest.hexdigest()


def local_model_identity(
    backend: str, model: str, options: dict[str, Any], sidecar: Path | None = None
) -> dict[str, Any]:
    """A local backend's identity: ``{"backend", "model", "options"}``, and for a model that
    is an existing local folder, the folder's name as ``model`` and its content digest as
    ``content_sha256`` (its location does not change answers; its content does). A hub id
    stays as is: what it loads is pinned by ``revision`` in ``options``."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return {"backend": backend, "model": model, "options": options}
    return {
        "backend": backend,
        "model": path.resolve().name,
        "options": options,
        "content_sha256": folder_digest(path, sidecar),
    }


LOCAL_BACKENDS = ("embedded", "transformers", "vllm")
"""Backends whose weights are files on this machine, hence have a checksum to record."""


def model_checksum(backend: str, model: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """What pins a local model's weights, for provenance (None for a remote API model):

    - ``embedded``: the sha256 of the GGUF file the weights package ships, and the
      conversion's format version (the converted folder is a function of both);
    - a local folder (``transformers``, ``vllm``): its content digest (see
      :func:`folder_digest`; cheap after the first time);
    - a hub id: the ``revision`` asked for (None: the default branch, which can move).
    """
    if backend not in LOCAL_BACKENDS:
        return None
    if backend == "embedded":
        from simfarm.backends.embedded import FORMAT_VERSION, MODEL_NAME, expected_sha256

        return {
            "backend": backend,
            "model": MODEL_NAME,
            "sha256": expected_sha256(),
            "format_version": FORMAT_VERSION,
        }
    identity = local_model_identity(backend, model, {})
    del identity["options"]
    if "content_sha256" not in identity:
        identity["revision"] = options.get("revision")
    return identity
