"""Bad input records: how they are named, and what is done about them.

Shared by every loader (annotation inputs, evaluation files, human-labeled sets).

Real files are messy (PandaLM has six responses that are JSON booleans, not strings). A
loader never crashes on such a record and never drops it silently: each problem becomes a
:class:`RecordIssue` naming the file, the record index and the field, and the loader's
:data:`BadRecordPolicy` says whether the value is coerced, the record skipped, or the whole
load stopped with a :class:`~simfarm.errors.ConfigError` listing every problem.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from simfarm.errors import ConfigError
from simfarm.types import Record

BadRecordPolicy = Literal["coerce", "skip", "error"]
"""``coerce``: repair the value where a faithful repair exists (a boolean or number where
text is expected becomes its text; a numeric string becomes a number), else skip the record;
``skip``: drop every record that has a problem; ``error``: stop and list all problems."""

BAD_RECORD_POLICIES: tuple[str, ...] = ("coerce", "skip", "error")

IssueAction = Literal["coerced", "skipped", "treated as failed", "error"]


class RecordIssue(Record):
    """One problem in one record of one file."""

    file: str
    record: int
    """0-based index of the record in the file (line order for JSONL)."""
    field: str
    problem: str
    action: IssueAction

    def describe(self) -> str:
        return (
            f"{self.file}: record {self.record}: field {self.field!r}: {self.problem} "
            f"-> {self.action}"
        )


def check_policy(policy: str) -> BadRecordPolicy:
    """The policy, validated (CLI strings come in untyped)."""
    if policy not in BAD_RECORD_POLICIES:
        raise ConfigError(
            f"unknown bad-record policy {policy!r}; expected one of {BAD_RECORD_POLICIES}"
        )
    return policy  # type: ignore[return-value]


def _listing(issues: Sequence[RecordIssue], what: str) -> str:
    shown = "\n".join(issue.describe() for issue in issues[:20])
    more = f"\n... and {len(issues) - 20} more" if len(issues) > 20 else ""
    return f"{len(issues)} bad record(s) in {what}:\n{shown}{more}"


def raise_if_error(issues: Sequence[RecordIssue], policy: BadRecordPolicy, what: str) -> None:
    """Under policy ``error``, stop with every problem listed."""
    if issues and policy == "error":
        raise ConfigError(_listing(issues, what))


def raise_or_warn(issues: Sequence[RecordIssue], policy: BadRecordPolicy, what: str) -> None:
    """Stop (policy ``error``) or emit one warning that lists the issues (never silent)."""
    raise_if_error(issues, policy, what)
    if issues:
        warnings.warn(_listing(issues, what), stacklevel=3)


def print_record_issues(issues: Sequence[RecordIssue], console: Any) -> None:
    """List bad records on a rich console (the CLI's way of never being silent)."""
    if not issues:
        return
    console.print(f"[yellow]warning:[/] {len(issues)} bad input record(s):", highlight=False)
    for issue in issues[:20]:
        console.print(f"  {issue.describe()}", markup=False, highlight=False, soft_wrap=True)
    if len(issues) > 20:
        console.print(f"  ... and {len(issues) - 20} more")


_MISSING = object()


@dataclass
class _Problem:
    field: str
    problem: str
    fixable: bool
    """Whether the ``coerce`` policy may keep the record with a repaired value."""
    fallback: IssueAction = "skipped"
    """What ``coerce`` does when the value cannot be repaired: skip, or mark failed."""


@dataclass
class RecordChecker:
    """Collects the problems of one record, then applies the policy to them."""

    source: str
    policy: BadRecordPolicy
    issues: list[RecordIssue] = field(default_factory=list)
    _problems: list[_Problem] = field(default_factory=list)

    def objects(self, records: Iterable[Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(index, record)`` for each record that is a JSON object; any other value is
        reported (with its index) under the policy and not yielded."""
        for index, record in enumerate(records):
            if isinstance(record, dict):
                yield index, record
            else:
                self.fail("<record>", f"expected an object, got {type(record).__name__}")
                self.finish(index)

    def text(self, record: dict[str, Any], name: str, default: str | None = None) -> str:
        """A text field; booleans and numbers are repairable (their text), anything else not."""
        value = record.get(name, _MISSING)
        if value is _MISSING or value is None or is_nan(value):
            if default is not None:
                return default
            self._problems.append(_Problem(name, "missing", fixable=False))
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            self._problems.append(
                _Problem(name, f"expected text, got {type(value).__name__} {value!r}", True)
            )
            return str(value)
        self._problems.append(
            _Problem(name, f"expected text, got {type(value).__name__}", fixable=False)
        )
        return ""

    def number(self, record: dict[str, Any], name: str, default: float = 0.0) -> float:
        """A non-negative number (cost, latency); missing or null means ``default``."""
        value = record.get(name, _MISSING)
        if value is _MISSING or value is None or is_nan(value):
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                pass
            else:
                self._problems.append(_Problem(name, f"expected a number, got {value!r}", True))
                return parsed
        self._problems.append(
            _Problem(name, f"expected a number, got {type(value).__name__} {value!r}", False)
        )
        return default

    def preference(self, record: dict[str, Any], name: str = "preference") -> float | None:
        """A preference in [1, 2] (0 = legacy draw = 1.5); null/NaN = a failed annotation.

        A value that is not a preference at all (a boolean, text, 3.0) cannot be repaired:
        ``coerce`` keeps the record as a failed annotation, which alpaca_eval would also
        leave out of every count.
        """
        value = record.get(name, _MISSING)
        if value is _MISSING or value is None or is_nan(value):
            return None
        parsed: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            parsed = float(value)
        elif isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                parsed = None
            if parsed is not None and not is_nan(parsed):
                self._problems.append(_Problem(name, f"expected a number, got {value!r}", True))
        if parsed is None or is_nan(parsed):
            self._problems.append(
                _Problem(
                    name,
                    f"expected a preference, got {type(value).__name__} {value!r}",
                    fixable=False,
                    fallback="treated as failed",
                )
            )
            return None
        if parsed == 0.0:
            return 1.5
        if not 1.0 <= parsed <= 2.0:
            self._problems.append(
                _Problem(
                    name,
                    f"preference {parsed!r} outside [1, 2]",
                    fixable=False,
                    fallback="treated as failed",
                )
            )
            return None
        return parsed

    def fail(self, name: str, problem: str) -> None:
        """A problem found outside the typed readers (e.g. by pydantic)."""
        self._problems.append(_Problem(name, problem, fixable=False))

    def finish(self, index: int) -> str:
        """``keep``, ``keep-failed`` or ``skip`` for this record; logs its issues."""
        problems, self._problems = self._problems, []
        if not problems:
            return "keep"
        action: IssueAction | None
        if self.policy == "error":
            action = "error"
        elif self.policy == "skip":
            action = "skipped"
        elif all(p.fixable or p.fallback == "treated as failed" for p in problems):
            action = None  # decided per problem below
        else:
            action = "skipped"
        verdict = "skip" if action in ("skipped", "error") else "keep"
        for p in problems:
            this: IssueAction = action or ("coerced" if p.fixable else p.fallback)
            if this == "treated as failed":
                verdict = "keep-failed"
            self.issues.append(
                RecordIssue(
                    file=self.source, record=index, field=p.field, problem=p.problem, action=this
                )
            )
        return verdict


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
