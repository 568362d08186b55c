"""Annotator personas and pools, declared as data (YAML under ``annotators/``).

A *persona* is one simulated annotator: a backend and model, a prompt template, decoding
parameters, a parser, and optionally a persona text that the template places in the prompt
(``{persona}``) - or a ``rule`` that needs no model (``longest``). A *pool* is a weighted set
of personas; each item is assigned one member by a seeded draw over the item's content, so
assignments are the same in every process and on every machine.

Both are validated with ``extra="forbid"``: a misspelt field is an error naming the file
and the field, not a silently ignored setting. ``annotators/annotator.schema.json`` is the
JSON schema of these models, for editors (``simfarm personas schema`` regenerates it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simfarm.annotation.agreement import MeasuredAgreement
from simfarm.annotation.feedback_specs import CritiquePersona, RatingPersona
from simfarm.annotation.likelihood_persona import LikelihoodPersona
from simfarm.annotation.parsers import ParserSpec, RegexParser
from simfarm.annotation.scenario import HindsightPersona
from simfarm.backends.base import BackendSpec
from simfarm.types import DecodingParams

RuleName = Literal["longest", "shortest", "distilled"]


class PairwisePersona(BaseModel):
    """One simulated pairwise annotator."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pairwise"] = "pairwise"
    id: str = ""
    """Persona id; defaults to the file name without ``.yaml``."""
    description: str = ""
    """What this persona models, for humans reading ``simfarm personas list``."""
    rule: RuleName | None = None
    """A judge without an LLM call (``longest``: the AlpacaEval length baseline;
    ``distilled``: a trained head, see ``head``). Excludes ``backend``."""
    head: str | None = None
    """For ``rule: distilled``: the trained head, a name shipped in
    ``simfarm/annotation/distilled_heads`` or a path to a ``.npz`` written by the
    ``distilled_judge`` recipe, relative to this file (:mod:`simfarm.annotation.distilled`)."""
    backend: BackendSpec | None = None
    """Which LLM answers (name, model, options)."""
    prompt_template: str | None = None
    """Template file, relative to this YAML file's folder."""
    prompt_format: Literal["chat", "raw"] = "chat"
    """``chat``: send messages; ``raw``: send the rendered text as a plain prompt (base models)."""
    persona_text: str = ""
    """Who the annotator is; inserted where the template says ``{persona}``."""
    decoding: DecodingParams = Field(default_factory=lambda: DecodingParams(max_tokens=32))
    parser: ParserSpec = Field(default_factory=RegexParser)
    randomize_order: bool = True
    """Show the two outputs in a seeded random order per item (undone after parsing)."""
    both_orders: bool = False
    """Judge every pair in both orders; the preference is the mean and
    ``position_consistent`` records whether the two verdicts agreed."""
    max_parse_attempts: int = Field(3, ge=1)
    """Attempts per request when the judge's answer cannot be parsed. Greedy decoding
    (temperature 0) stops after 2 (one identical re-send: a garbled transport); sampled
    decoding draws a new sample per attempt."""
    measured_agreement: MeasuredAgreement | None = None
    """Human agreement measured for this persona (see :class:`MeasuredAgreement`)."""
    label_noise: float = Field(0.0, ge=0.0, le=0.5)
    """AlpacaFarm's ``p_label_flip``: with probability ``2 * label_noise`` the label is a fair
    coin (so ``label_noise`` of labels end flipped). Drawn before any request, so noised items
    cost nothing. For training feedback; leave 0 for evaluation."""
    position_bias: float = Field(0.0, ge=0.0, le=1.0)
    """Forced first-slot rate: with this probability the persona picks whichever output it
    is shown first (the order drawn as for ``randomize_order``), without reading either.
    Drawn (seeded by the item's content) before any request, after ``label_noise``, so
    biased items cost nothing. Models a crowd worker who clicks the first option."""
    length_bias: float = Field(0.0, ge=0.0, le=1.0)
    """Tilt towards the longer output: with this probability the persona picks the longer
    one (equal lengths: no tilt), without reading either. Drawn like ``position_bias``,
    after it; biased items cost nothing."""

    @field_validator("backend")
    @classmethod
    def _known_backend_and_options(cls, backend: BackendSpec | None) -> BackendSpec | None:
        """A misspelt backend name or option is an error when the file is loaded (with the
        file and field), not a traceback when the first request is due."""
        if backend is not None:
            from simfarm.backends.registry import check_backend_options

            check_backend_options(backend.name, backend.options)
        return backend

    @model_validator(mode="after")
    def _rule_or_backend(self) -> PairwisePersona:
        if self.rule is None and (self.backend is None or self.prompt_template is None):
            raise ValueError(
                "a persona needs either `rule`, or both `backend` and `prompt_template`"
            )
        if self.rule is not None and self.backend is not None:
            raise ValueError("`rule` and `backend` exclude each other")
        if (self.rule == "distilled") != (self.head is not None):
            raise ValueError("`head` goes with `rule: distilled`, and it needs one")
        return self


class PoolMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    persona: str
    """Persona id (or a path to a persona file)."""
    weight: float = Field(1.0, gt=0)
    temperature: float | None = Field(None, ge=0.0)
    """This member's sampling temperature (``decoding.temperature``); None: the persona's."""
    label_noise: float | None = Field(None, ge=0.0, le=0.5)
    """This member's ``label_noise``; None: the persona's."""
    position_bias: float | None = Field(None, ge=0.0, le=1.0)
    """This member's ``position_bias``; None: the persona's."""
    length_bias: float | None = Field(None, ge=0.0, le=1.0)
    """This member's ``length_bias``; None: the persona's."""

    def knobs(self) -> dict[str, float]:
        """The bias and noise knobs this member sets (not ``temperature``)."""
        knobs = {
            "label_noise": self.label_noise,
            "position_bias": self.position_bias,
            "length_bias": self.length_bias,
        }
        return {name: value for name, value in knobs.items() if value is not None}


class AnnotatorPool(BaseModel):
    """A weighted pool of personas; one member judges each item."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pool"] = "pool"
    id: str = ""
    description: str = ""
    members: list[PoolMember] = Field(min_length=1)
    seed: str = ""
    """Salt for member assignment (defaults to the pool id)."""


PersonaSpec = (
    PairwisePersona | RatingPersona | CritiquePersona | HindsightPersona | LikelihoodPersona
)
"""Any one annotator (not a pool); its ``kind`` picks the judge that applies it."""

AnnotatorSpec = Annotated[
    PairwisePersona
    | RatingPersona
    | CritiquePersona
    | HindsightPersona
    | LikelihoodPersona
    | AnnotatorPool,
    Field(discriminator="kind"),
]
