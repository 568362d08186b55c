"""The stage machinery: a done stage is skipped, a changed input or a missing output redoes
it (and what depends on it), a stage that died midway is redone."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.experiment.stages import StageContext, StageRunner, read_stage_log


def _writer(path: Path, text: str, calls: list[str]):
    def body(ctx: StageContext) -> None:
        calls.append(ctx.name)
        ctx.progress("writing", 0, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        ctx.cost.tokens = len(text)
        ctx.progress("writing", 1, 1)

    return body


def _pipeline(out: Path, calls: list[str], a_input: str = "x") -> StageRunner:
    runner = StageRunner(out)
    runner.run("a", {"v": a_input}, [out / "a.txt"], _writer(out / "a.txt", a_input, calls))
    runner.run("b", {}, [out / "b.txt"], _writer(out / "b.txt", "b", calls), after=["a"])
    runner.run("c", {}, [out / "c.txt"], _writer(out / "c.txt", "c", calls))
    return runner


def test_rerun_skips_done_stages(tmp_path: Path) -> None:
    calls: list[str] = []
    first = _pipeline(tmp_path, calls)
    assert calls == ["a", "b", "c"]
    assert first.records["a"].cost.tokens == 1 and not first.records["a"].skipped
    again = _pipeline(tmp_path, calls)
    assert calls == ["a", "b", "c"], "nothing redone"
    assert all(r.skipped for r in again.records.values())
    events = [(e["stage"], e["event"]) for e in read_stage_log(tmp_path)]
    assert events[-3:] == [("a", "skip"), ("b", "skip"), ("c", "skip")]
    # the skipped record keeps the wall time and cost of the run that did the work
    assert again.records["a"].wall_time_s == first.records["a"].wall_time_s


def test_changed_input_redoes_the_stage_and_its_dependents_only(tmp_path: Path) -> None:
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    calls.clear()
    _pipeline(tmp_path, calls, a_input="y")
    assert calls == ["a", "b"]


def test_missing_output_redoes_the_stage(tmp_path: Path) -> None:
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    calls.clear()
    (tmp_path / "c.txt").unlink()
    _pipeline(tmp_path, calls)
    assert calls == ["c"]


def test_stage_that_died_is_redone_and_later_stages_wait(tmp_path: Path) -> None:
    runner = StageRunner(tmp_path)

    def dies(ctx: StageContext) -> None:
        (tmp_path / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run("a", {}, [tmp_path / "half.txt"], dies)
    assert not runner.marker_path("a").exists()
    calls: list[str] = []
    StageRunner(tmp_path).run(
        "a", {}, [tmp_path / "half.txt"], _writer(tmp_path / "half.txt", "whole", calls)
    )
    assert calls == ["a"] and (tmp_path / "half.txt").read_text() == "whole"


def test_stage_must_write_its_outputs(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="without writing"):
        StageRunner(tmp_path).run("a", {}, [tmp_path / "never.txt"], lambda ctx: None)
