"""A recipe's run folder belongs to one stage digest: kept to resume after a crash, moved
aside (never deleted) when the stage's inputs changed, so a stale result is never reused."""

from __future__ import annotations

from pathlib import Path

from simfarm.experiment.run import STAGE_DIGEST_FILE, _claim_run_dir


def test_same_digest_keeps_the_folder_for_resuming(tmp_path: Path) -> None:
    run_dir = tmp_path / "methods" / "dpo"
    _claim_run_dir(run_dir, "a")
    (run_dir / "checkpoints").mkdir()
    _claim_run_dir(run_dir, "a")
    assert (run_dir / "checkpoints").is_dir()


def test_new_digest_moves_the_old_run_aside(tmp_path: Path) -> None:
    run_dir = tmp_path / "methods" / "dpo"
    _claim_run_dir(run_dir, "a")
    (run_dir / "result.json").write_text("{}")
    _claim_run_dir(run_dir, "b")
    assert not (run_dir / "result.json").exists()
    assert (run_dir / STAGE_DIGEST_FILE).read_text().strip() == "b"
    (aside,) = tmp_path.joinpath("methods").glob("dpo.replaced-*")
    assert (aside / "result.json").is_file()


def test_folder_without_digest_is_moved_aside(tmp_path: Path) -> None:
    run_dir = tmp_path / "dpo"
    run_dir.mkdir()
    (run_dir / "result.json").write_text("{}")
    _claim_run_dir(run_dir, "a")
    assert not (run_dir / "result.json").exists()
