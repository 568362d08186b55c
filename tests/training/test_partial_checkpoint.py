"""A checkpoint cut off mid-save (kill -9 while the HF Trainer writes it) must not stop the
rerun: it resumes from the newest complete checkpoint instead."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from simfarm.training.trl_adapter import _last_checkpoint


def _checkpoint(root: Path, step: int, state: str | None) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state, encoding="utf-8")
    return folder


def test_resume_skips_and_removes_checkpoints_cut_off_mid_save(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    complete = _checkpoint(root, 2, json.dumps({"global_step": 2}))
    no_state = _checkpoint(root, 4, None)
    truncated = _checkpoint(root, 6, '{"global_st')
    context = SimpleNamespace(checkpoints_dir=root)

    path, step = _last_checkpoint(context)  # type: ignore[arg-type]

    assert (path, step) == (str(complete), 2)
    assert not no_state.exists() and not truncated.exists()


def test_no_checkpoint_folder_means_a_fresh_start(tmp_path: Path) -> None:
    context = SimpleNamespace(checkpoints_dir=tmp_path / "checkpoints")
    assert _last_checkpoint(context) == (None, 0)  # type: ignore[arg-type]
