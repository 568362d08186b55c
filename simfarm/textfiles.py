"""Reading text files the one careful way: UTF-8 checked, ``.gz`` transparent, streamed.

Every reader of user files (model outputs, pairs, annotation files, human-labelled sets,
persona and template files) comes through here, so a file that is not UTF-8 is reported
the same way everywhere: the file, the byte offset (in the uncompressed data) and the bytes
found there, never a bare ``UnicodeDecodeError`` traceback. Large inputs are streamed: JSON
Lines one line at a time, a JSON array one element at a time, so reading costs one copy of
the records, not the text of the whole file beside them.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

from simfarm.errors import ConfigError

_CHUNK = 1 << 20
"""Bytes read at a time when streaming a JSON array."""


def data_suffix(path: Path) -> str:
    """The format suffix, looking through ``.gz``: ``a.jsonl.gz`` -> ``.jsonl``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return suffixes[-2] if len(suffixes) > 1 else ""
    return suffixes[-1] if suffixes else ""


def data_stem(path: Path) -> str:
    """The name without format suffixes, looking through ``.gz``: ``a.jsonl.gz`` -> ``a``."""
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        path = path.with_suffix("")
    return path.stem


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    path = Path(path)
    try:
        if path.name.lower().endswith(".gz"):
            handle: IO[bytes] = cast(IO[bytes], gzip.open(path, "rb"))  # noqa: SIM115
        else:
            handle = path.open("rb")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    try:
        with handle:
            yield handle
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ConfigError(f"{path}: not a readable gzip file: {error}") from None


def not_utf8(
    path: Path, error: UnicodeDecodeError, offset: int, line: int | None = None
) -> ConfigError:
    """The error for bytes that are not UTF-8, at ``offset`` bytes into the file."""
    where = f"line {line}, " if line is not None else ""
    bad = error.object[error.start : error.end]
    return ConfigError(
        f"{path}: {where}byte {offset}: not valid UTF-8 ({bytes(bad)!r}: {error.reason}); "
        "re-save the file as UTF-8"
    )


def read_text(path: Path) -> str:
    """The whole file as text (small files: configs, templates)."""
    with open_binary(path) as handle:
        raw = handle.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(Path(path), error, error.start) from None


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, streamed; bad bytes name line and offset."""
    offset = 0
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise not_utf8(Path(path), error, offset + error.start, number) from None
            offset += len(raw)
            yield number, text


def iter_json_lines(path: Path) -> Iterator[Any]:
    """The value on each non-empty line of a JSON Lines file, one at a time."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: line {number}: invalid JSON: {error}") from None


class _Stream:
    """Decoded text of a file, read on demand in chunks, with the offsets for errors."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self.handle = handle
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.buffer = ""
        self.position = 0
        self.bytes_read = 0
        self.eof = False

    def more(self, size: int) -> bool:
        """Append up to ``size`` more bytes of text to the buffer; False at end of file."""
        if self.eof:
            return False
        raw = self.handle.read(size)
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as error:
            # The decoder may hold back the start of an unfinished sequence from the last
            # chunk; the offset is then a few bytes early at most, never past the bad byte.
            held = len(self.decoder.getstate()[0])
            raise not_utf8(self.path, error, self.bytes_read - held + error.start) from None
        self.bytes_read += len(raw)
        self.eof = not raw
        self.buffer = self.buffer[self.position :] + text
        self.position = 0
        return bool(raw) or bool(text)

    def skip_space(self) -> str:
        """The next non-space character (reading more as needed), '' at end of file."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position].isspace():
                self.position += 1
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.more(_CHUNK):
                return ""


def iter_json_array(path: Path) -> Iterator[Any]:
    """The elements of a top-level JSON array, parsed one at a time from a stream.

    Raises :class:`ConfigError` if the file holds anything but an array (the caller may
    then read it whole: column-oriented JSON is an object)."""
    decoder = json.JSONDecoder()
    with open_binary(path) as handle:
        stream = _Stream(Path(path), handle)
        if stream.skip_space() != "[":
            raise NotAnArray(f"{path}: expected a JSON array of records")
        stream.position += 1
        index = 0
        while True:
            first = stream.skip_space()
            if first == "]" and index == 0:
                stream.position += 1
                break
            size = _CHUNK
            while True:
                try:
                    value, end = decoder.raw_decode(stream.buffer, stream.position)
                    if end < len(stream.buffer) or not stream.more(size):
                        break  # complete (a number at the buffer's end might go on)
                    continue
                except json.JSONDecodeError as error:
                    # Maybe only cut off by the end of the buffer: read more and retry
                    # (doubling, so a huge element is not re-scanned once per chunk).
                    if not stream.more(size):
                        raise ConfigError(
                            f"{path}: record {index}: invalid JSON: {error.msg}"
                        ) from None
                    size *= 2
            stream.position = end
            yield value
            index += 1
            separator = stream.skip_space()
            stream.position += 1
            if separator == "]":
                break
            if separator != ",":
                raise ConfigError(
                    f"{path}: after record {index - 1}: expected ',' or ']', "
                    f"found {separator or 'the end of the file'!r}"
                )
        if stream.skip_space():
            raise ConfigError(f"{path}: text after the closing ']' of the array")


class NotAnArray(ConfigError):
    """The JSON file does not hold an array at the top level."""
