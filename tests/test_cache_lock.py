"""A second process holding the cache's write lock must not stall a run's requests.

The lock holder is a real second process (``BEGIN IMMEDIATE`` on the same SQLite file); it
reads the loopback server's request counter when it takes the lock and again just before
it lets go, so the test sees how many requests flowed while the lock was held.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from simfarm.annotation import annotate_async, load_annotator
from simfarm.cache import CompletionCache
from simfarm.testing.openai_server import start_server
from tests.annotation.test_pairwise_run import items
from tests.server_personas import make_persona

HOLD_S = 3.0
N_PAIRS = 300

LOCK_HOLDER = """
import json, sqlite3, sys, time, urllib.request
path, stats_url, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
def requests():
    with urllib.request.urlopen(stats_url, timeout=10) as response:
        return json.loads(response.read())["requests"]
db = sqlite3.connect(path, isolation_level=None, timeout=60)
db.execute("BEGIN IMMEDIATE")
before = requests()
print("LOCKED", flush=True)
time.sleep(hold)
after = requests()
db.execute("COMMIT")
print(before, after, flush=True)
"""


def test_a_held_write_lock_does_not_stall_requests(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with start_server(latency_s=0.05) as server:
        persona = load_annotator(make_persona(tmp_path, server), [tmp_path])
        cache = CompletionCache(path)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LOCK_HOLDER,
                str(path),
                f"http://127.0.0.1:{server.port}/stats",
                str(HOLD_S),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "LOCKED"
        try:
            result = asyncio.run(annotate_async(items(N_PAIRS), persona, cache=cache))
        finally:
            out, _ = holder.communicate(timeout=60)
        before, after = (int(n) for n in out.split())
        total = server.stats()["requests"]
    # No failures (no request timed out while the loop waited on SQLite) ...
    assert result.summary.n_failed == 0 and total == N_PAIRS
    # ... requests kept flowing while the lock was held (blocked, the loop would have sent
    # only the first ~64 before stalling for the whole hold) ...
    assert after - before >= 2 * N_PAIRS // 3
    # ... and every answer reached the file once the lock was released.
    assert len(cache) == N_PAIRS and cache.pending == 0
    cache.close()
    with CompletionCache(path) as reopened:
        assert len(reopened) == N_PAIRS
