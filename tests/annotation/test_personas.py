"""Persona and pool files: bundled ones validate, errors name file and field, schema in sync."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simfarm.annotation import (
    LoadedPool,
    annotator_json_schema,
    iter_annotator_files,
    load_annotator,
)
from simfarm.errors import ConfigError
from simfarm.paths import bundled_data_dir
from simfarm.types import PairwiseItem

REQUIRED = {"longest", "alpaca_farm_greedy", "weighted_alpaca_eval"}


def test_bundled_personas_all_load() -> None:
    files = iter_annotator_files()
    assert {p.stem for p in files} >= REQUIRED
    for path in files:
        loaded = load_annotator(str(path))
        assert loaded.spec.id == path.stem


def test_schema_file_is_in_sync_with_the_models() -> None:
    on_disk = json.loads((bundled_data_dir("annotators") / "annotator.schema.json").read_text())
    assert on_disk == annotator_json_schema(), (
        "run: simfarm personas schema --out annotators/annotator.schema.json"
    )


def test_misspelt_field_is_reported_with_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("rule: longest\ntemprature: 0.5\n")
    with pytest.raises(ConfigError) as error:
        load_annotator("typo", [tmp_path])
    assert str(bad) in str(error.value) and "temprature" in str(error.value)


def test_wrong_type_in_nested_field_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("{instruction} {output_1} {output_2}")
    (tmp_path / "bad.yaml").write_text(
        "backend: {name: openai, model: m}\nprompt_template: p.txt\ndecoding: {temperature: hot}\n"
    )
    with pytest.raises(ConfigError, match=r"decoding\.temperature"):
        load_annotator("bad", [tmp_path])


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("{name: opanai, model: m}", ["unknown backend 'opanai'", "did you mean 'openai'"]),
        (
            "{name: openai, model: m, options: {max_concurency: 32}}",
            ["options.max_concurency", "did you mean 'max_concurrency'"],
        ),
        ("{name: openai, model: m, options: {timeout_s: soon}}", ["options.timeout_s"]),
        # Options of a local backend are checked without importing torch.
        ("{name: transformers, model: m, options: {dtipe: bf16}}", ["options.dtipe"]),
    ],
)
def test_backend_name_and_options_are_checked_at_load_time(
    tmp_path: Path, backend: str, expected: list[str]
) -> None:
    (tmp_path / "p.txt").write_text("{instruction} {output_1} {output_2}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"backend: {backend}\nprompt_template: p.txt\n")
    with pytest.raises(ConfigError) as error:
        load_annotator("bad", [tmp_path])
    message = str(error.value)
    assert str(bad) in message and "backend" in message
    for part in expected:
        assert part in message


def test_persona_validation_imports_no_heavy_dependency(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("{instruction} {output_1} {output_2}")
    (tmp_path / "v.yaml").write_text(
        "backend: {name: vllm, model: m, options: {gpu_memory_utilization: 0.5}}\n"
        "prompt_template: p.txt\n"
    )
    code = (
        "import sys; from simfarm.annotation import load_annotator; "
        f"load_annotator('v', [{str(tmp_path)!r}]); "
        "print([m for m in ('torch', 'vllm', 'openai', 'transformers') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_template_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "backend: {name: openai, model: m}\nprompt_template: nope.txt\n"
    )
    with pytest.raises(ConfigError, match="prompt_template"):
        load_annotator("x", [tmp_path])


def test_user_persona_can_reuse_a_bundled_template(tmp_path: Path) -> None:
    (tmp_path / "terse.yaml").write_text(
        "backend: {name: openai, model: m}\n"
        "prompt_template: prompts/alpaca_farm_pairwise.txt\n"
        "persona_text: ' You value brevity.'\n"
    )
    loaded = load_annotator("terse", [tmp_path])
    assert loaded.template is not None and "{output_1}" in loaded.template.text


def test_user_folder_shadows_bundled(tmp_path: Path) -> None:
    (tmp_path / "longest.yaml").write_text("rule: shortest\ndescription: mine\n")
    assert load_annotator("longest", [tmp_path]).spec.rule == "shortest"
    assert load_annotator("longest").spec.rule == "longest"


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="longest"):
        load_annotator("no_such_persona")


ASSIGN_SCRIPT = """
import json, sys
from simfarm.annotation import judges_for, load_annotator
from simfarm.types import PairwiseItem
items = [PairwiseItem(instruction=f"i{n}", output_1="a", output_2="b") for n in range(200)]
print(json.dumps([j.id for j in judges_for(load_annotator("alpaca_farm_pool")).assign(items)]))
"""


def test_pool_assignment_is_identical_across_processes() -> None:
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", ASSIGN_SCRIPT], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    counts = {name: runs[0].count(name) for name in set(runs[0])}
    assert set(counts) == {"alpaca_farm_greedy", "literature_fan", "lazy_reader"}
    assert counts["alpaca_farm_greedy"] > counts["lazy_reader"]  # weight 2 vs 1


def test_pool_loads_members() -> None:
    pool = load_annotator("alpaca_farm_pool")
    assert isinstance(pool, LoadedPool) and len(pool.members) == 3
    _ = PairwiseItem(instruction="x", output_1="a", output_2="b")


def test_personas_validate_reports_each_bad_file_and_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from simfarm.cli import app

    (tmp_path / "p.txt").write_text("{instruction} {output_1} {output_2}")
    (tmp_path / "good.yaml").write_text("rule: longest\n")
    (tmp_path / "typo.yaml").write_text(
        "backend: {name: openai, model: m, options: {max_concurency: 32}}\nprompt_template: p.txt\n"
    )
    dirs = ["--annotators-dir", str(tmp_path)]
    result = CliRunner().invoke(app, ["personas", "validate", "good", "typo", *dirs])
    assert result.exit_code == 2, result.output
    assert "ok: good" in result.output
    assert str(tmp_path / "typo.yaml") in result.output and "max_concurency" in result.output
    assert CliRunner().invoke(app, ["personas", "validate", "good", *dirs]).exit_code == 0
