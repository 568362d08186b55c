"""Bad input records: how they are named, and what is done about them.

Real files are messy (PandaLM has six responses that are JSON booleans, not strings). A
loader never crashes on such a record and never drops it silently: each problem becomes a
:class:`RecordIssue` naming the file, the record index and the field, and the loader's
:data:`BadRecordPolicy` says whether the value is coerced, the record skipped, or the whole
load stopped with a :class:`~simfarm.errors.ConfigError` listing every problem.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

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


def raise_or_warn(issues: Sequence[RecordIssue], policy: BadRecordPolicy, what: str) -> None:
    """Stop (policy ``error``) or emit one warning that lists the issues (never silent)."""
    if not issues:
        return
    shown = "\n".join(issue.describe() for issue in issues[:20])
    more = f"\n... and {len(issues) - 20} more" if len(issues) > 20 else ""
    if policy == "error":
        raise ConfigError(f"{len(issues)} bad record(s) in {what}:\n{shown}{more}")
    warnings.warn(f"{len(issues)} bad record(s) in {what}:\n{shown}{more}", stacklevel=3)
