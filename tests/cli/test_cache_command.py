"""``simfarm cache where|size|clear`` on a real cache and model store (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from simfarm.cache import CompletionCache
from simfarm.cli import app
from simfarm.types import Completion

runner = CliRunner()


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cache_dir, model_dir = tmp_path / "cache", tmp_path / "models"
    monkeypatch.setenv("SIMFARM_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("SIMFARM_MODEL_DIR", str(model_dir))
    cache_dir.mkdir()
    with CompletionCache(cache_dir / "completions.sqlite") as cache:
        cache.put("a", Completion(text="Output (a)"))
        cache.put("b", Completion(text="Output (b)"))
    (model_dir / "gemma").mkdir(parents=True)
    (model_dir / "gemma" / "model.safetensors").write_bytes(b"\0" * 5000)
    return cache_dir, model_dir


def test_where_and_size(stores: tuple[Path, Path]) -> None:
    cache_dir, model_dir = stores
    where = runner.invoke(app, ["cache", "where"])
    assert where.exit_code == 0, where.output
    assert str(cache_dir / "completions.sqlite") in where.output and str(model_dir) in where.output
    size = runner.invoke(app, ["cache", "size"])
    assert size.exit_code == 0, size.output
    assert "2 answers" in size.output and "5.0 KB" in size.output


def test_clear_asks_keeps_models_unless_told(stores: tuple[Path, Path]) -> None:
    cache_dir, model_dir = stores
    refused = runner.invoke(app, ["cache", "clear"], input="n\n")
    assert refused.exit_code == 1 and (cache_dir / "completions.sqlite").is_file()
    # A journal of answers a killed run had not committed: a later open would commit it.
    journals = cache_dir / "completions.sqlite.unsaved"
    journals.mkdir(exist_ok=True)
    (journals / "dead.journal").write_text("x")
    cleared = runner.invoke(app, ["cache", "clear", "--yes"])
    assert cleared.exit_code == 0, cleared.output
    assert not list(cache_dir.glob("completions.sqlite*")) and not journals.exists()
    assert (model_dir / "gemma" / "model.safetensors").is_file()
    assert "0 answers" in runner.invoke(app, ["cache", "size"]).output
    everything = runner.invoke(app, ["cache", "clear", "--models", "--yes"])
    assert everything.exit_code == 0 and not (model_dir / "gemma").exists()
