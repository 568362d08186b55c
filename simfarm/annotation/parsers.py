"""Read a verdict from a judge's completion, and nothing else.

Parsers see only the judge's own completion (text and token logprobs), never the prompt, so
a candidate output that itself says "Output (a) is better" cannot change the verdict unless
the judge repeats it. Each returns a preference in the order the outputs were *shown*
(1.0 = first shown wins, 2.0 = second, 1.5 = tie), or raises :class:`ParseError`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from simfarm.types import Completion


class ParseError(ValueError):
    """The completion holds no readable verdict."""


class RegexParser(BaseModel):
    """The first (or last) match of ``pattern`` decides; its group 1 is looked up in
    ``labels``. E.g. ``Output \\(([ab])\\)`` with ``{a: 1, b: 2}``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["regex"] = "regex"
    pattern: str = r"Output \(([ab])\)"
    labels: dict[str, float] = Field(default_factory=lambda: {"a": 1.0, "b": 2.0})
    """Captured text (group 1) -> preference in shown order."""
    match: Literal["first", "last"] = "first"
    ignore_case: bool = False

    def parse(self, completion: Completion) -> tuple[float, float | None]:
        flags = re.IGNORECASE if self.ignore_case else 0
        chosen = None
        for match in re.finditer(self.pattern, completion.text, flags):
            if _label(match) is not None:
                chosen = match
                if self.match == "first":  # no need to find the rest (once per answer)
                    break
        if chosen is None:
            raise ParseError(f"no verdict matching {self.pattern!r} in {completion.text[:120]!r}")
        key = _label(chosen) or ""
        lookup = {k.lower(): v for k, v in self.labels.items()} if self.ignore_case else self.labels
        value = lookup.get(key.lower() if self.ignore_case else key)
        if value is None:
            raise ParseError(f"verdict {key!r} is not one of {sorted(self.labels)}")
        return float(value), None


def _label(match: re.Match[str]) -> str | None:
    return match.group(1) if match.re.groups else match.group(0)


class LogprobParser(BaseModel):
    """AlpacaEval 2.0 style: the probability of the verdict token at the first generated
    position gives a continuous preference, ``1 + P(second) / (P(first) + P(second))``.

    ``first_token`` names the first shown output (AlpacaEval: ``m``), ``second_token`` the
    second (``M``). Tokens are compared after stripping whitespace.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["logprob"] = "logprob"
    first_token: str = "m"
    second_token: str = "M"
    position: int = 0
    """Which generated token carries the verdict."""

    def parse(self, completion: Completion) -> tuple[float, float | None]:
        if not completion.logprobs or len(completion.logprobs) <= self.position:
            raise ParseError("the completion carries no token logprobs at the verdict position")
        entry = completion.logprobs[self.position]
        candidates = dict(entry.top_logprobs)
        candidates.setdefault(entry.token, entry.logprob)
        p_first = p_second = 0.0
        for token, logprob in candidates.items():
            if token.strip() == self.first_token:
                p_first += math.exp(logprob)
            elif token.strip() == self.second_token:
                p_second += math.exp(logprob)
        if p_first + p_second == 0.0:
            raise ParseError(
                f"neither {self.first_token!r} nor {self.second_token!r} among the top tokens "
                f"{sorted(candidates)[:10]}"
            )
        p_second_wins = p_second / (p_first + p_second)
        return 1.0 + p_second_wins, p_second_wins


ParserSpec = Annotated[RegexParser | LogprobParser, Field(discriminator="kind")]
