"""Reading user files: bad bytes named by file and offset, gzip transparent, JSON streamed;
writing outputs: no temporary file outlives a killed writer."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import simfarm.textfiles
from simfarm.annotation import load_annotator
from simfarm.datafiles import load_model_outputs, load_pairs, read_records, write_records
from simfarm.errors import ConfigError
from simfarm.evaluation.human_sets import read_set_config
from simfarm.types import Failure

RECORDS = [
    {"instruction": f"Question {i} ✓", "output": f"Answer {i} naïve 😀 " * (i + 1), "x": i}
    for i in range(40)
]


def _jsonl(records: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _with_bad_byte(data: bytes, after: bytes) -> tuple[bytes, int]:
    """``data`` with an invalid byte inserted right after the first ``after``."""
    offset = data.index(after) + len(after)
    return data[:offset] + b"\xff" + data[offset:], offset


@pytest.mark.parametrize("name", ["outputs.json", "outputs.jsonl", "outputs.jsonl.gz"])
def test_invalid_utf8_is_reported_with_file_and_byte_offset(tmp_path: Path, name: str) -> None:
    records = RECORDS[:10]
    data = _jsonl(records)
    if name.endswith(".json"):
        data = json.dumps(records, ensure_ascii=False, indent=1).encode()
    bad, offset = _with_bad_byte(data, b"Answer 7")
    path = tmp_path / name
    path.write_bytes(gzip.compress(bad) if name.endswith(".gz") else bad)
    with pytest.raises(ConfigError) as caught:
        load_model_outputs(path)
    message = str(caught.value)
    assert str(path) in message and f"byte {offset}" in message and "UTF-8" in message


def test_invalid_utf8_in_pairs_personas_and_human_set_configs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    data = b'{"instruction": "i", "output_1": "a", "output_2": "b"}\n'
    data += b'{"instruction": "j", "output_1": "a\xc3", "output_2": "b"}\n'
    pairs.write_bytes(data)
    offset = data.index(b"\xc3")
    with pytest.raises(ConfigError, match=rf"pairs\.jsonl: line 2, byte {offset}"):
        load_pairs(pairs)
    persona = tmp_path / "bad.yaml"
    data = b"backend: {name: openai, model: m\xe9}\n"
    persona.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(ConfigError, match=rf"bad\.yaml: byte {offset}: not valid"):
        load_annotator("bad", [tmp_path])
    config = tmp_path / "set.yaml"
    data = b"kind: human_set\nname: s\xff\n"
    config.write_bytes(data)
    offset = data.index(b"\xff")
    with pytest.raises(ConfigError, match=rf"set\.yaml: byte {offset}"):
        read_set_config(config)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_gzipped_inputs_read_like_plain_ones(tmp_path: Path, suffix: str) -> None:
    data = _jsonl(RECORDS) if suffix == ".jsonl" else json.dumps(RECORDS).encode()
    plain, zipped = tmp_path / f"o{suffix}", tmp_path / f"o{suffix}.gz"
    plain.write_bytes(data)
    zipped.write_bytes(gzip.compress(data))
    assert read_records(zipped) == read_records(plain) == RECORDS
    assert load_model_outputs(zipped).outputs == load_model_outputs(plain).outputs


def test_json_arrays_are_streamed_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 7 bytes split multi-byte characters, strings, numbers and separators.
    monkeypatch.setattr(simfarm.textfiles, "_CHUNK", 7)
    values = [*RECORDS, 12345678, "text", [1, 2.5], None, True]
    path = tmp_path / "o.json"
    path.write_text(" \n" + json.dumps(values, ensure_ascii=False, indent=2) + "\n", "utf-8")
    assert read_records(path) == values
    path.write_text("[]", "utf-8")
    assert read_records(path) == []
    path.write_text('[{"a": 1}, {"a": ]', "utf-8")
    with pytest.raises(ConfigError, match="record 1: invalid JSON"):
        read_records(path)
    path.write_text('[{"a": 1} {"a": 2}]', "utf-8")
    with pytest.raises(ConfigError, match="after record 0: expected ','"):
        read_records(path)
    path.write_text('[{"a": 1}] trailing', "utf-8")
    with pytest.raises(ConfigError, match="after the closing"):
        read_records(path)
    path.write_text('{"instruction": ["i"], "output": ["o"]}', "utf-8")
    assert read_records(path) == [{"instruction": "i", "output": "o"}]


_SLOW_WRITER = """
import sys, time
from pathlib import Path
from simfarm.datafiles import write_records
from simfarm.types import Failure

def rows():
    for i in range(1000):
        yield Failure(kind="parse", message="x" * 1000)
    time.sleep(120)  # killed here, mid-write

write_records(Path(sys.argv[1]), rows())
"""


def test_a_killed_writer_leaves_no_temp_file_after_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "annotations.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out)])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".annotations.jsonl.*.tmp")):
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # A live writer's temporary file is left alone.
        write_records(tmp_path / "annotations.jsonl", [Failure(kind="parse", message="m")])
        assert len(list(tmp_path.glob(".annotations.jsonl.*.tmp"))) == 1
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert len(list(tmp_path.glob(".annotations.jsonl.*.tmp"))) == 1
    unrelated = tmp_path / ".annotations.jsonl.not-a-pid.tmp"
    unrelated.write_text("someone else's")
    write_records(out, [Failure(kind="parse", message="m")])
    assert list(tmp_path.glob(".annotations.jsonl.*.tmp")) == [unrelated]
    assert read_records(out) == [{"kind": "parse", "message": "m", "attempts": 1}]
    assert os.path.exists(out)


def test_invalid_utf8_in_an_annotation_file_through_evaluate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from simfarm.cli import app

    data = b'[{"instruction": "i", "output_1": "a", "output_2": "b\xfe", "preference": 2}]'
    path = tmp_path / "annotations.json"
    path.write_bytes(data)
    result = CliRunner().invoke(app, ["evaluate", "--annotations", str(path)])
    assert result.exit_code == 2, result.output
    assert "annotations.json" in result.output
    offset = data.index(b"\xfe")
    assert f"byte {offset}" in result.output
