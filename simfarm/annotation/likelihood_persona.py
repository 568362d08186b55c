"""Likelihood annotators, declared as data: scores from a model's log-probabilities, no judge
prompt (``kind: likelihood``). See :mod:`simfarm.annotation.likelihood` for the judge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from simfarm.annotation.agreement import MeasuredAgreement
from simfarm.backends.base import BackendSpec


class LikelihoodPersona(BaseModel):
    """A pairwise annotator that reads a model's log-probabilities instead of its verdict.

    ``follow_up``: each output scores log P(positive user follow-up) - log P(negative
    follow-up), given the conversation and the output (the follow-up likelihood as reward).
    ``response``: each output scores log P(output | conversation), optionally per token.
    The verdict is the output with the higher score, a tie when the scores differ by at most
    ``tie_band``. Needs a backend that scores text: a local one (``transformers``,
    ``embedded``), or an OpenAI-compatible *completions* endpoint that honours ``echo`` with
    ``logprobs`` and ``max_tokens: 0``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["likelihood"] = "likelihood"
    id: str = ""
    """Persona id; defaults to the file name without ``.yaml``."""
    description: str = ""
    method: Literal["follow_up", "response"]
    backend: BackendSpec
    context_template: str = "User: {instruction}\n{input}\nAssistant:"
    """The conversation before the output, as raw text (``{instruction}``, ``{input}``);
    the output follows it after one space."""
    positive_follow_up: str = "\nUser: Thank you, that is exactly what I needed."
    """``follow_up`` method: what a satisfied user says next."""
    negative_follow_up: str = "\nUser: That is wrong and does not answer my question."
    """``follow_up`` method: what a dissatisfied user says next."""
    per_token: bool = False
    """``response`` method: the mean log-probability per output token (length-neutral)
    instead of the sum (which favours short outputs)."""
    tie_band: float = Field(0.0, ge=0.0)
    """Score differences up to this are ties (1.5). Calibrate it on a human set with
    :func:`simfarm.annotation.likelihood.calibrate_tie_band` (predicted tie rate = the
    humans' tie rate)."""
    measured_agreement: MeasuredAgreement | None = None

    @field_validator("backend")
    @classmethod
    def _known_backend_and_options(cls, backend: BackendSpec) -> BackendSpec:
        from simfarm.backends.registry import check_backend_options

        check_backend_options(backend.name, backend.options)
        return backend

    @field_validator("context_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        import re

        unknown = set(re.findall(r"\{([a-z_][a-z0-9_]*)\}", template)) - {"instruction", "input"}
        if unknown:
            raise ValueError(f"unknown placeholders {sorted(unknown)} (instruction, input)")
        return template
