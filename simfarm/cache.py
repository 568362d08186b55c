"""Content-addressed completion cache in SQLite.

Why this shape:
- The key is a sha256 over the canonical JSON of an explicit list of fields: what the
  model saw (the request, the prompt-template digest, the judge stage) and the backend's
  identity (its full validated options minus operational ones, see
  :meth:`simfarm.backends.base.Backend.identity`). Never ``str(model_dump())`` of a whole
  object, so a field that does not change the answer (a message id, a timestamp) cannot
  silently break hits. The parser is *not* in the key: cached completions are re-parsed on
  every read, so changing a parser option re-reads answers for free instead of re-buying
  them (alpaca_eval's ``is_reapply_parsing``).
- Only successful, parseable completions are stored. A failure is never cached, so a rerun
  retries rate-limited or garbled items instead of replaying the failure.
- Writes go through one writer thread with its own connection, so a second process holding
  the write lock never stalls the event loop (requests keep flowing; answers queue up).
  Each answer is committed as soon as the writer reaches it (usually within milliseconds;
  ``max_pending`` measures the worst backlog). Until then it is also in this process's
  *journal* (in ``<cache file>.unsaved/``), a small append-only file written the moment the answer
  arrives (one ``write``, no lock, no fsync: it survives the process, not the OS). Ctrl-C,
  a normal exit and :meth:`close` drain the queue; after a ``kill -9`` the next process that
  opens the cache commits the dead process's journal, so only requests in flight are lost.
- WAL plus a busy timeout lets several processes read and write the same file at once;
  readers never wait for a writer.
- The file lives under the user cache dir (``$SIMFARM_CACHE_DIR``), never in the package.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import hashlib
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from simfarm.paths import user_cache_dir
from simfarm.types import (
    Completion,
    CompletionRequest,
    DecodingParams,
    PlannedContent,
    canonical_json,
)

CACHE_VERSION = 1
"""Bump when the meaning of a cached value changes; old entries then simply stop matching."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""

_BUSY_RETRY_S = 0.05
"""Pause before the writer tries again when another process holds the lock past the busy
timeout (it never gives up: an answer paid for is not dropped because of a lock)."""
_MAX_BATCH = 512
"""Rows per write transaction at most (a backlog is committed in a few transactions)."""
_LINGER_S = 0.01
"""The writer commits at most once per this interval, so answers do not wake it one by one
(each wake-up takes the GIL from the event loop). Nothing is at risk meanwhile: the
answers are in the journal already."""


def cache_key(
    backend_identity: Mapping[str, Any],
    request: CompletionRequest,
    template_digest: str | None = None,
    stage: str | None = None,
) -> str:
    """The cache key of one request: sha256 over exactly these fields.

    ``backend_identity`` comes from :meth:`~simfarm.backends.base.Backend.identity` (never
    a secret); the request contributes its messages or prompt, the decoding parameters
    (seed included) and its sample index when not 0; ``stage`` names the step of a
    multi-stage judge (critique, score, ...) and enters only when set, so single-stage
    judges keep their keys.
    """
    return RequestKeys(backend_identity, template_digest, stage).key(request)


class RequestKeys:
    """:func:`cache_key` for many requests that share a backend identity, template digest
    and stage (every request of one judge): the shared fields are encoded and hashed once.

    Canonical JSON is compositional (sorted keys, no whitespace), so the key's text is the
    shared fields' text with the request's own canonical JSON in its place; the digest is
    the same as hashing the whole dict at once (:func:`cache_key` is this class, and the
    golden-digest test guards both)."""

    _SLOT = "\x00simfarm-request\x00"

    def __init__(
        self,
        backend_identity: Mapping[str, Any],
        template_digest: str | None = None,
        stage: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "cache_version": CACHE_VERSION,
            "backend": dict(backend_identity),
            "request": self._SLOT,
            "template_digest": template_digest,
        }
        if stage is not None:
            fields["stage"] = stage
        text, slot = canonical_json(fields), canonical_json(self._SLOT)
        if text.count(slot) != 1:  # pragma: no cover - an identity holding the placeholder
            raise ValueError("a backend identity contains simfarm's request placeholder")
        before, _, after = text.partition(slot)
        self._prefix = hashlib.sha256(before.encode("utf-8"))
        self._suffix = after.encode("utf-8")
        self._params: DecodingParams | None = None
        """A snapshot of the last decoding parameters seen, and their JSON below: a judge's
        requests share them, and comparing is cheaper than encoding them again."""
        self._params_json = ""

    def key(self, request: PlannedContent) -> str:
        """The key of ``request``, or of the request a :class:`~simfarm.types.RequestDraft`
        builds (the same key: its content JSON is that request's)."""
        params = request.params
        # Same type and field values -> same JSON (it is written from the values alone);
        # comparing the dicts skips pydantic's full equality (private/extra/fields-set).
        known = self._params
        if known is None or type(params) is not type(known) or params.__dict__ != known.__dict__:
            self._params = params.model_copy(deep=True)
            self._params_json = params.json_text()
        digest = self._prefix.copy()
        digest.update(request.content_json(self._params_json).encode("utf-8"))
        digest.update(self._suffix)
        return digest.hexdigest()


_JOURNAL_RECYCLE_BYTES = 256 << 10
"""Once the writer has caught up and the journal is past this size, answers go to a fresh
journal and the old one (all committed) is deleted."""
_JOURNAL_ROTATE_BYTES = 16 << 20
"""Past this size (the writer lagging: another process holding the lock) the journal is
replaced even if not caught up; the old one goes once all its rows are committed."""


class _Journal:
    """One process's append-only file of answers not yet committed (``key\tcreated\tvalue``
    lines; ``value`` is JSON, whose strings escape tabs and newlines).

    The file is held under an exclusive ``flock`` for its whole life: another process that
    can take the lock knows its owner died, and commits the rows itself. POSIX only; where
    ``fcntl`` is missing there is no journal (a ``kill -9`` then loses what was queued).
    """

    def __init__(self, folder: Path) -> None:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        temporary = folder / f".{name}.tmp"
        self.fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Locked before it carries a journal's name, so no scan can take it for an orphan.
        self.path = folder / f"{name}.journal"
        os.replace(temporary, self.path)
        self.size = 0

    @staticmethod
    def folder_for(cache_path: Path) -> Path:
        # Not ``<db>-journal``: that name is SQLite's own rollback journal.
        return cache_path.with_name(cache_path.name + ".unsaved")

    @staticmethod
    def open(cache_path: Path) -> _Journal | None:
        try:
            return _Journal(_Journal.folder_for(cache_path))
        except ImportError:  # no fcntl (Windows)
            return None

    def append(self, key: str, value: str, created: float) -> None:
        line = f"{key}\t{created!r}\t{value}\n".encode()
        os.write(self.fd, line)
        self.size += len(line)

    def delete(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)

    @staticmethod
    def orphans(cache_path: Path) -> list[tuple[Path, int]]:
        """Journals of dead processes, each locked now by this one: (path, fd)."""
        try:
            import fcntl
        except ImportError:
            return []
        folder = _Journal.folder_for(cache_path)
        found = []
        for path in sorted(folder.glob("*.journal")) if folder.is_dir() else []:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its owner is alive
                os.close(fd)
                continue
            found.append((path, fd))
        return found

    @staticmethod
    def read_rows(fd: int) -> list[tuple[str, str, float]]:
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        rows = []
        for line in data.decode("utf-8", errors="replace").split("\n"):
            parts = line.split("\t", 2)
            if len(parts) != 3:
                continue  # the last line, cut short by the kill
            key, created, value = parts
            try:
                Completion.model_validate_json(value)
                rows.append((key, value, float(created)))
            except ValueError:
                continue
        return rows


class CompletionCache:
    """Completions by key in one SQLite file; safe across processes and threads.

    Reads happen on the caller's thread (WAL readers never wait for a writer); writes are
    journaled by the caller and committed by one writer thread (see the module docstring).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else user_cache_dir() / "completions.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Used from whichever thread runs the event loop (a session's loop thread, say);
        # only reads go through it.
        self._db = _connect(self.path)
        self._db.execute(_SCHEMA)
        self._rows: collections.deque[tuple[str, str, float]] = collections.deque()
        """Serialised answers waiting for the writer (deque appends need no lock)."""
        self._writer_idle = False
        self._wake = threading.Event()
        """Set by :meth:`put` only when the writer sleeps with nothing to do."""
        self._stopping = False
        self._state = threading.Condition(threading.Lock())
        self._enqueued = 0
        self._committed = 0
        self.max_pending = 0
        """The largest number of answers ever waiting for the writer in this process (held
        meanwhile in memory and in the journal): how far the database lagged."""
        self._error: BaseException | None = None
        self._closed = False
        self._journal = _Journal.open(self.path)
        self._retired: tuple[_Journal, int] | None = None
        """A rotated journal and how many answers had been queued when it was retired."""
        self._recovered = self._adopt_orphans()
        """Answers that processes which died (``kill -9``) received but never committed:
        served from memory until the writer has committed them here."""
        self._writer = threading.Thread(
            target=self._write_loop, name=f"simfarm-cache-writer:{self.path.name}", daemon=True
        )
        self._writer.start()
        # A daemon thread dies at interpreter exit; drain it first.
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def get(self, key: str) -> Completion | None:
        if key in self._recovered:
            return _load(self._recovered[key])
        row = self._db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        return _load(row[0]) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """Look up many keys at once (chunked under SQLite's parameter limit)."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        if self._recovered:
            found = {k: _load(self._recovered[k]) for k in unique if k in self._recovered}
            unique = [k for k in unique if k not in found]
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
        """Store a successful completion: returns at once, with the answer in this process's
        journal (safe from a ``kill -9`` from then on); the writer commits it to the
        database within milliseconds (:meth:`flush` waits for that). Failures are refused."""
        if completion.failure is not None:
            raise ValueError("failures are never cached")
        if self._error is not None:
            raise RuntimeError(f"the cache writer failed: {self._error}") from self._error
        if self._closed:
            raise RuntimeError(f"the cache {self.path} is closed")
        # Serialised here, not in the writer: the writer thread then hardly ever holds the
        # GIL (SQLite releases it), so it never stalls the event loop.
        self._enqueue((key, completion.model_dump_json(exclude={"cached"}), time.time()))

    def _enqueue(self, row: tuple[str, str, float]) -> None:
        """No lock on this path (it runs per answer on the event loop). The order matters:
        count first, then pick the journal, so a journal the writer retires has an upper
        bound on the rows written to it (see :meth:`_rotate_journal`). One producer thread
        at a time (the one running the event loop)."""
        self._enqueued += 1
        journal = self._journal
        if journal is not None:
            journal.append(*row)
        self._rows.append(row)
        pending = self._enqueued - self._committed
        if pending > self.max_pending:
            self.max_pending = pending
        if self._writer_idle:
            self._wake.set()

    @property
    def recovered(self) -> int:
        """How many answers this cache took over from the journals of dead processes."""
        return len(self._recovered)

    def _adopt_orphans(self) -> dict[str, str]:
        """Queue the rows of dead processes' journals (into this process's journal first,
        so they stay safe if this one dies too), then delete those journals."""
        adopted: dict[str, str] = {}
        for path, fd in _Journal.orphans(self.path):
            try:
                for row in _Journal.read_rows(fd):
                    self._enqueue(row)
                    adopted[row[0]] = row[1]
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return adopted

    @property
    def pending(self) -> int:
        """Answers queued but not yet committed."""
        with self._state:
            return self._enqueued - self._committed

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed (raises what the writer hit)."""
        with self._state:
            target = self._enqueued
            if not self._state.wait_for(
                lambda: self._committed >= target or self._error is not None, timeout
            ):
                raise TimeoutError(f"cache writes still pending after {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"the cache writer failed: {self._error}") from self._error

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        """Commit everything queued, stop the writer, close the connections."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        self._stopping = True
        self._wake.set()
        self._writer.join()
        self._db.close()
        if self._error is not None:
            raise RuntimeError(f"the cache writer failed: {self._error}") from self._error

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_loop(self) -> None:
        db = _connect(self.path)
        try:
            while True:
                if not self._rows:
                    if self._stopping:
                        return
                    # Announce idleness before looking again: a put() either sees the flag
                    # (and wakes us) or appended before the second look.
                    self._writer_idle = True
                    if not self._rows and not self._stopping:
                        self._wake.wait()
                    self._wake.clear()
                    self._writer_idle = False
                if not self._stopping:
                    time.sleep(_LINGER_S)
                batch: list[tuple[str, str, float]] = []
                while self._rows and len(batch) < _MAX_BATCH:
                    batch.append(self._rows.popleft())
                if batch and self._error is None:
                    try:
                        _commit(db, batch)
                    except BaseException as error:  # surfaced by put/flush/close
                        self._error = error
                with self._state:
                    self._committed += len(batch)
                    if self._error is None:
                        self._rotate_journal()
                    self._state.notify_all()
        finally:
            db.close()
            with self._state:
                if self._error is None and self._committed == self._enqueued:
                    for journal in (self._journal, self._retired and self._retired[0]):
                        if journal:
                            journal.delete()
                    self._journal = self._retired = None

    def _rotate_journal(self) -> None:
        """After a commit (writer thread): delete the retired journal once every row
        written to it is committed; retire the current one when it has grown.

        The new journal is installed *before* reading the count, so every row written to
        the retired one was counted by then (puts count before picking a journal) and rows
        are committed in the order they were counted."""
        if self._retired is not None and self._committed >= self._retired[1]:
            self._retired[0].delete()
            self._retired = None
        journal = self._journal
        if journal is None or self._retired is not None:
            return
        caught_up = self._committed == self._enqueued
        if (caught_up and journal.size > _JOURNAL_RECYCLE_BYTES) or (
            journal.size > _JOURNAL_ROTATE_BYTES
        ):
            self._journal = _Journal.open(self.path)
            self._retired = (journal, self._enqueued)


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode (isolation_level=None): transactions are explicit where needed.
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at once
    # (no busy handler) while another process opens the same new file: wait that out.
    deadline = time.monotonic() + 60.0
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            locked = "locked" in str(error) or "busy" in str(error)
            if not locked or time.monotonic() > deadline:
                raise
            time.sleep(_BUSY_RETRY_S)
    # NORMAL in WAL mode survives process crashes; only an OS crash could lose the tail.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=60000")
    return db


def _commit(db: sqlite3.Connection, rows: list[tuple[str, str, float]]) -> None:
    """One transaction for ``rows``; waits out another process's lock however long."""
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                time.sleep(_BUSY_RETRY_S)
                continue
            raise
        try:
            db.executemany(
                "INSERT OR REPLACE INTO completions (key, value, created_at) VALUES (?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
            return
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _close_at_exit(ref: weakref.ref[CompletionCache]) -> None:
    cache = ref()
    if cache is not None:
        with contextlib.suppress(Exception):  # nothing left to report to at exit
            cache.close()


def _load(value: str) -> Completion:
    completion = Completion.model_validate_json(value)
    completion.cached = True
    return completion
