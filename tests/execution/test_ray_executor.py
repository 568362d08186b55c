"""The Ray executor against a real local Ray runtime and the loopback fake server.

One Ray runtime for the module (starting one costs seconds): 2 CPUs, no dashboard, every
server bound to loopback. The server's own request counter is the witness for what was
paid for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from simfarm.annotation import annotate, annotate_async, load_annotator
from simfarm.cache import CompletionCache
from simfarm.execution.rate import RequestRateSpec
from simfarm.testing.openai_server import RunningServer, start_server
from simfarm.types import PairwiseItem
from tests.server_personas import make_persona

ray = pytest.importorskip("ray")

from simfarm.execution.ray_executor import RayExecutorOptions, RayRuntime  # noqa: E402

pytestmark = pytest.mark.slow

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@pytest.fixture(scope="module")
def runtime() -> Iterator[RayRuntime]:
    if ray.is_initialized():  # pragma: no cover - another module left Ray running
        ray.shutdown()
    with RayRuntime(num_cpus=2) as started:
        yield started


def pairs(n: int) -> list[PairwiseItem]:
    """Pairs whose longer output alternates sides, so preferences differ per item."""
    return [
        PairwiseItem(
            instruction=f"Question {i}?",
            output_1=("a considerably longer answer " if i % 3 == 0 else "short ") + str(i),
            output_2=("short " if i % 3 == 0 else "a considerably longer answer ") + str(i),
            generator_1="ref",
            generator_2="model",
        )
        for i in range(n)
    ]


def cache_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {key for (key,) in db.execute("SELECT key FROM completions")}


def ray_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


def test_every_ray_server_listens_on_loopback_only(runtime: RayRuntime) -> None:
    listening: list[tuple[str, str, int]] = []
    for process in ray_processes():
        try:
            name = process.name()
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((name, conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening
    exposed = [entry for entry in listening if entry[1] not in LOOPBACK]
    assert not exposed, f"Ray servers reachable from other hosts: {exposed}"


def test_results_and_cache_keys_match_an_in_process_run(
    runtime: RayRuntime, tmp_path: Path
) -> None:
    items = pairs(24)
    with start_server() as server:
        name = make_persona(tmp_path, server)
        local = annotate(items, name, annotators_dirs=[tmp_path], cache_path=tmp_path / "a.db")
        options = RayExecutorOptions(actors=2, in_flight=4)
        on_ray = annotate(
            items,
            name,
            annotators_dirs=[tmp_path],
            cache_path=tmp_path / "b.db",
            executor_factory=runtime.executor_factory(options),
        )
        assert server.stats()["requests"] == 48
    assert on_ray.summary.requests_sent == local.summary.requests_sent == 24
    assert on_ray.summary.n_annotated == 24
    assert [a.preference for a in on_ray.annotations] == [a.preference for a in local.annotations]
    assert {a.preference for a in local.annotations} == {1.0, 2.0}
    keys = cache_keys(tmp_path / "a.db")
    assert len(keys) == 24
    assert cache_keys(tmp_path / "b.db") == keys


async def _run_and_kill_an_actor(
    runtime: RayRuntime, server: RunningServer, name: str, folder: Path, n: int, cache_path: Path
) -> tuple[Any, int]:
    options = RayExecutorOptions(actors=2, in_flight=4)
    killed: list[int] = []

    def progress(done: int, total: int, cost: float) -> None:
        if done >= 6 and not killed:
            executor = runtime.executors[-1]
            pid = executor.actor_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    cache = CompletionCache(cache_path)
    try:
        result = await annotate_async(
            pairs(n),
            load_annotator(name, [folder]),
            cache=cache,
            progress=progress,
            executor_factory=runtime.executor_factory(options),
        )
    finally:
        cache.close()
    assert killed, "the actor was never killed"
    return result, options.in_flight


def test_an_actor_killed_mid_run_loses_nothing(runtime: RayRuntime, tmp_path: Path) -> None:
    n = 80
    with start_server(latency_s=0.3) as server:
        name = make_persona(tmp_path, server)
        result, in_flight = asyncio.run(
            _run_and_kill_an_actor(runtime, server, name, tmp_path, n, tmp_path / "c.db")
        )
        seen = server.stats()
    stats = runtime.executors[-1].stats()
    summary = result.summary
    # Every item ends annotated (the killed actor's chunks went to another actor).
    assert summary.n_annotated == n, summary
    assert all(a.preference is not None for a in result.annotations)
    assert 1 <= stats.retries <= in_flight
    assert stats.actor_deaths == 1
    # Ray restarts it (or, restarts spent, a new one is started), unless the run ends first.
    assert stats.actor_restarts + stats.actor_replacements <= 1
    print(stats)
    # Paid twice at most what the dead actor had in flight; all of it is in the cache.
    assert n <= seen["requests"] <= n + in_flight
    assert seen["resent"] <= in_flight
    assert len(cache_keys(tmp_path / "c.db")) == n


def test_a_request_rate_binds_all_actors_together(runtime: RayRuntime, tmp_path: Path) -> None:
    """600 requests per minute, scaled down: 20 per 2 s, for 4 actors x 8 in flight."""
    budget, window, n = 20, 2.0, 60
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    with start_server() as server:

        def watch() -> None:
            while not stop.is_set():
                samples.append((time.monotonic(), server.stats()["requests"]))
                time.sleep(0.05)

        name = make_persona(tmp_path, server)
        options = RayExecutorOptions(
            actors=4,
            in_flight=8,
            request_rate=RequestRateSpec(max_requests=budget, window_s=window),
        )
        factory = runtime.executor_factory(options)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = annotate(
                pairs(n),
                name,
                annotators_dirs=[tmp_path],
                use_cache=False,
                executor_factory=factory,
            )
        finally:
            stop.set()
            watcher.join()
        total = server.stats()["requests"]
    assert result.summary.n_annotated == n
    assert total == n
    # In any stretch shorter than the window (less a margin for the hop from the driver to
    # the server), the server saw at most the budget.
    worst = max(
        later - earlier
        for i, (t0, earlier) in enumerate(samples)
        for t1, later in samples[i:]
        if t1 - t0 <= 0.8 * window
    )
    assert worst <= budget, f"{worst} requests within {0.8 * window:.1f}s (budget {budget})"


def _watch_cli_runtimes(monkeypatch: pytest.MonkeyPatch) -> list[RayRuntime]:
    """The RayRuntime objects the CLI makes (it reuses the module's running Ray)."""
    made: list[RayRuntime] = []
    start = RayRuntime.start

    def recording_start(self: RayRuntime) -> None:
        made.append(self)
        start(self)

    monkeypatch.setattr(RayRuntime, "start", recording_start)
    return made


def _with_ray_settings(folder: Path, name: str, settings: dict[str, Any]) -> None:
    path = folder / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["backend"]["ray"] = settings
    path.write_text(yaml.safe_dump(spec))


def test_cli_annotate_runs_on_ray_with_the_personas_settings(
    runtime: RayRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from simfarm.cli.app import app

    items = pairs(10)
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(item.model_dump_json() + "\n" for item in items))
    used = _watch_cli_runtimes(monkeypatch)
    with start_server() as server:
        name = make_persona(tmp_path, server)
        _with_ray_settings(tmp_path, name, {"actors": 3, "in_flight": 4})
        out = tmp_path / "out.jsonl"
        command = ["annotate", "--persona", name, "--annotators-dir", str(tmp_path),
                   "--pairs", str(pairs_file), "--out", str(out), "--quiet"]  # fmt: skip
        # The persona says 3 actors x 4 in flight; the command line's --ray-in-flight wins.
        outcome = CliRunner().invoke(app, [*command, "--executor", "ray", "--ray-in-flight", "2"])
        assert server.stats()["requests"] == 10
        _with_ray_settings(tmp_path, name, {"actors": 0})
        refused = CliRunner().invoke(app, [*command, "--executor", "ray", "--no-cache"])
        assert server.stats()["requests"] == 10
    assert outcome.exit_code == 0, outcome.output
    assert len(out.read_text().splitlines()) == 10
    assert "ray actors" in outcome.output
    first_run = used[0]
    assert [e.counters().requests_sent for e in first_run.executors] == [10]
    assert [(e.options.actors, e.options.in_flight) for e in first_run.executors] == [(3, 2)]
    assert refused.exit_code == 2
    assert "invalid `ray` settings: actors" in refused.output
    assert ray.is_initialized(), "the CLI must leave a Ray runtime it did not start alone"


def test_cli_evaluate_judges_on_ray(
    runtime: RayRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from simfarm.cli.app import app

    def outputs(generator: str, words: int) -> Path:
        path = tmp_path / f"{generator}.json"
        records = [
            {"instruction": f"Task {i}?", "output": "word " * (words + i), "generator": generator}
            for i in range(6)
        ]
        path.write_text(json.dumps(records))
        return path

    model, reference = outputs("model", 9), outputs("reference", 3)
    used = _watch_cli_runtimes(monkeypatch)
    with start_server() as server:
        name = make_persona(tmp_path, server)
        outcome = CliRunner().invoke(
            app,
            ["evaluate", "--annotator", name, "--annotators-dir", str(tmp_path),
             "--model-outputs", str(model), "--reference-outputs", str(reference),
             "--out", str(tmp_path / "board"), "--quiet", "--no-lc",
             "--executor", "ray", "--ray-actors", "1"],
        )  # fmt: skip
        assert server.stats()["requests"] == 6
    assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "board" / "leaderboard.csv").exists()
    (cli_runtime,) = used
    assert [e.counters().requests_sent for e in cli_runtime.executors] == [6]


def test_a_local_model_runs_in_an_actor_with_the_cpus_it_reserved(
    runtime: RayRuntime, tmp_path: Path
) -> None:
    """The embedded Gemma judge loaded inside an actor (1 CPU reserved through Ray): the
    same verdicts and cache keys (the weights' digest included) as in this process."""
    items = pairs(3)
    local = annotate(items, "embedded_gemma", cache_path=tmp_path / "a.db")
    factory = runtime.executor_factory(RayExecutorOptions(actors=1, in_flight=1, num_cpus=1))
    on_ray = annotate(
        items, "embedded_gemma", cache_path=tmp_path / "b.db", executor_factory=factory
    )
    assert on_ray.summary.requests_sent == local.summary.requests_sent == 6  # both orders
    # Ray gives the actor OMP_NUM_THREADS=1 (its CPU reservation): bfloat16 sums in another
    # order move a probability in its third decimal, never a verdict.
    ray_prefs = [a.preference for a in on_ray.annotations]
    local_prefs = [a.preference for a in local.annotations]
    assert ray_prefs == pytest.approx(local_prefs, abs=0.02)
    assert [p > 1.5 for p in ray_prefs] == [p > 1.5 for p in local_prefs]  # type: ignore[operator]
    assert cache_keys(tmp_path / "b.db") == cache_keys(tmp_path / "a.db")


_RAY_AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running


def test_a_killed_driver_loses_only_what_was_in_flight(tmp_path: Path) -> None:
    """``simfarm annotate --executor ray`` killed with SIGKILL mid-run (its own local Ray
    runtime dies with it), then run again: every pair ends annotated, and the server was
    paid again at most for what was in flight when the driver died."""
    import subprocess
    import sys

    n, actors, in_flight = 60, 2, 4
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(item.model_dump_json() + "\n" for item in pairs(n)))
    with start_server(latency_s=0.3) as server:
        name = make_persona(tmp_path, server)
        command = [
            sys.executable, "-m", "simfarm", "annotate", "--persona", name,
            "--annotators-dir", str(tmp_path), "--pairs", str(pairs_file),
            "--out", str(tmp_path / "out.jsonl"), "--cache-path", str(tmp_path / "c.db"),
            "--executor", "ray", "--ray-actors", str(actors),
            "--ray-in-flight", str(in_flight), "--quiet",
        ]  # fmt: skip
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while server.stats()["completed"] < 20 and driver.poll() is None:
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        helpers = psutil.Process(driver.pid).children(recursive=True)
        driver.kill()
        driver.wait()
        first = server.stats()["requests"]
        assert first < n, "the run finished before it was killed"
        # The runtime dies with its driver: gcs_server, raylet and the actors at once. Ray's
        # two agents notice the raylet is gone and exit on their own, about a minute later
        # (measured; not waited for here, to keep the suite short).
        agents = [p for p in helpers if p.name() in _RAY_AGENTS]
        _, alive = psutil.wait_procs([p for p in helpers if p not in agents], timeout=30)
        assert not _running(alive), _running(alive)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        total = server.stats()["requests"]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == n
    assert n <= total <= n + actors * in_flight
