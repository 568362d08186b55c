"""Reading a hindsight scenario's instances (JSONL) under a :data:`BadRecordPolicy`.

Instances follow the contract every other input follows (:mod:`simfarm.record_checks`):
each problem is a :class:`RecordIssue` naming the file, the record and the field (here also
the line, as an :class:`InstanceIssue`), and the policy decides its fate:

- ``error``: nothing is kept; the caller stops with every problem listed
  (:func:`~simfarm.record_checks.raise_if_error`), before any request;
- ``skip``: every instance with a problem is left out (and listed by the caller);
- ``coerce``: an instance is kept when its only problems have a faithful repair, as for
  pairs: a JSON boolean or number where text is expected (``id``, ``context``,
  ``responses[i].id``, ``responses[i].text``) becomes its text. Nothing else in an instance
  can be repaired faithfully (a missing ``context`` or hidden field has no default, an
  unknown field may be a misspelt one, a response cannot be invented), so such an instance
  is skipped, exactly as ``skip`` would.

A line that is not JSON stops the load under every policy, as it does for a JSONL pairs
file (the file itself is broken, not one record of it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm.annotation.scenario import ScenarioInstance
from simfarm.errors import ConfigError
from simfarm.record_checks import BadRecordPolicy, RecordChecker, RecordIssue
from simfarm.textfiles import iter_lines

_INSTANCE_FIELDS = ("id", "context", "hidden", "responses")
_RESPONSE_FIELDS = ("id", "text")


class InstanceIssue(RecordIssue):
    """A :class:`RecordIssue` of an instances file, which also names the line (JSONL files
    are read and edited by line; ``record`` counts non-empty lines from 0, as for pairs)."""

    line: int

    def describe(self) -> str:
        return (
            f"{self.file}:{self.line} (record {self.record}): field {self.field!r}: "
            f"{self.problem} -> {self.action}"
        )


@dataclass
class InstancesFile:
    """The instances of one file that the policy kept, with what was wrong in it."""

    source: str
    instances: list[ScenarioInstance]
    issues: list[RecordIssue]


def read_instances(
    path: Path, hidden_fields: Sequence[str], policy: BadRecordPolicy
) -> InstancesFile:
    """Every instance of ``path`` the policy keeps, checked field by field (``hidden`` must
    hold each of ``hidden_fields``); the caller applies ``error`` and lists the issues. A
    file with no record at all is refused here."""
    checker = RecordChecker(str(path), policy)
    issues: list[RecordIssue] = []
    instances: list[ScenarioInstance] = []
    index = -1
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        index += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number}: not JSON: {error.msg}") from None
        values = _check_instance(checker, record, hidden_fields)
        seen = len(checker.issues)
        verdict = checker.finish(index)
        issues += [
            InstanceIssue(**issue.model_dump(), line=number) for issue in checker.issues[seen:]
        ]
        if verdict == "keep" and values is not None:
            instances.append(ScenarioInstance.model_validate(values))
    if index < 0:
        raise ConfigError(f"{path}: no instances")
    return InstancesFile(str(path), instances, issues)


def _check_instance(
    checker: RecordChecker, record: Any, hidden_fields: Sequence[str]
) -> dict[str, Any] | None:
    """The instance's values (repaired where ``coerce`` may); its problems go to
    ``checker``. None when the record is not even an object."""
    if not isinstance(record, dict):
        checker.fail("<record>", f"expected an object, got {type(record).__name__}")
        return None
    _unknown_fields(checker, record, _INSTANCE_FIELDS, "")
    hidden = record.get("hidden")
    if not isinstance(hidden, dict):
        got = "nothing" if hidden is None else type(hidden).__name__
        checker.fail("hidden", f"expected an object with {list(hidden_fields)}, got {got}")
        hidden = {}
    for key in hidden_fields:
        if key not in hidden:
            checker.fail(f"hidden.{key}", "missing")
    return {
        "id": checker.text(record, "id"),
        "context": checker.text(record, "context"),
        "hidden": hidden,
        "responses": _check_responses(checker, record.get("responses")),
    }


def _check_responses(checker: RecordChecker, raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or len(raw) < 2:
        got = (
            "nothing"
            if raw is None
            else f"{len(raw)}"
            if isinstance(raw, list)
            else type(raw).__name__
        )
        checker.fail("responses", f"expected a list of 2 or more responses {{id, text}}, got {got}")
        return []
    responses: list[dict[str, str]] = []
    for position, response in enumerate(raw):
        where = f"responses[{position}]"
        if not isinstance(response, dict):
            checker.fail(where, f"expected an object {{id, text}}, got {type(response).__name__}")
            continue
        _unknown_fields(checker, response, _RESPONSE_FIELDS, f"{where}.")
        # The checker names a problem by the key it reads: read the values under their full
        # field names, so an issue says ``responses[2].text``, not just ``text``.
        named = {f"{where}.{key}": response.get(key) for key in _RESPONSE_FIELDS}
        responses.append({key: checker.text(named, f"{where}.{key}") for key in _RESPONSE_FIELDS})
    return responses


def _unknown_fields(
    checker: RecordChecker, record: dict[str, Any], known: Sequence[str], prefix: str
) -> None:
    """Unknown fields are problems that ``coerce`` cannot repair (as for a conversation
    turn's): one may be a misspelt known field."""
    for key in sorted(set(record) - set(known)):
        checker.fail(f"{prefix}{key}", f"unknown field; expected only {list(known)}")
