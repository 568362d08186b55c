"""A persona's measured agreement with humans: one record for every kind that has one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MeasuredAgreement(BaseModel):
    """A persona's measured agreement with humans, printed beside every leaderboard it
    produces, so a weak judge is never mistaken for a faithful one."""

    model_config = ConfigDict(extra="forbid")

    human_set: str
    """Which human-labeled set and subset (e.g. ``pandalm, decisive pairs``)."""
    n: int
    agreement: float
    """Fraction of pairs where the persona picks the human majority's choice."""
    longest_agreement: float | None = None
    """The ``longest`` baseline on the same pairs, for scale."""
    reproduce: str = ""
    """The command that measures it again."""
