"""Content-addressed completion cache in SQLite.

Why this shape:
- The key is a sha256 over the canonical JSON of an explicit list of fields (backend
  identity, the request content, the prompt-template digest, the parser, the cache version),
  never ``str(model_dump())`` of a whole object, so a field that does not change the answer
  (a message id, a timestamp) cannot silently break hits.
- Only successful, parseable completions are stored. A failure is never cached, so a rerun
  retries rate-limited or garbled items instead of replaying the failure.
- Each result is committed the moment it arrives (WAL journal, autocommit), so a run killed
  with Ctrl-C or ``kill -9`` keeps everything it paid for, and a rerun asks only for the rest.
- WAL plus a busy timeout lets several processes read and write the same file at once.
- The file lives under the user cache dir (``$SIMFARM_CACHE_DIR``), never in the package.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from simfarm.paths import user_cache_dir
from simfarm.types import Completion, CompletionRequest, stable_digest

CACHE_VERSION = 1
"""Bump when the meaning of a cached value changes; old entries then simply stop matching."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def cache_key(
    backend_identity: Mapping[str, Any],
    request: CompletionRequest,
    template_digest: str | None = None,
    parser: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one request: sha256 over exactly these fields.

    ``backend_identity`` is backend name, model and base URL (never a key); the request
    contributes its messages or prompt and the decoding parameters (seed included).
    """
    return stable_digest(
        {
            "cache_version": CACHE_VERSION,
            "backend": dict(backend_identity),
            "request": request.content_fields(),
            "template_digest": template_digest,
            "parser": dict(parser) if parser is not None else None,
        }
    )


class CompletionCache:
    """Completions by key in one SQLite file; safe across processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else user_cache_dir() / "completions.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): every put is its own committed transaction.
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes; only an OS crash could lose the tail.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> Completion | None:
        row = self._db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        return _load(row[0]) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """Look up many keys at once (chunked under SQLite's parameter limit)."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, value FROM completions WHERE key IN ({marks})", chunk
            )
            for key, value in rows:
                found[key] = _load(value)
        return found

    def put(self, key: str, completion: Completion) -> None:
        """Store a successful completion, committed at once. Failures are refused."""
        if completion.failure is not None:
            raise ValueError("failures are never cached")
        value = completion.model_dump_json(exclude={"cached"})
        self._db.execute(
            "INSERT OR REPLACE INTO completions (key, value, created_at) VALUES (?, ?, ?)",
            (key, value, time.time()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load(value: str) -> Completion:
    completion = Completion.model_validate_json(value)
    completion.cached = True
    return completion
