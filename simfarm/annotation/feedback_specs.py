"""Persona specs of the single-output feedback kinds: ratings and critiques.

Declared as data like pairwise personas (``kind: rating`` / ``kind: critique`` in
``annotators/*.yaml``), validated with ``extra="forbid"`` so a misspelt field is an error
naming the file and the field. The judges that apply them live in
:mod:`simfarm.annotation.rating` and :mod:`simfarm.annotation.critique`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simfarm.backends.base import BackendSpec
from simfarm.types import DecodingParams


class Scale(BaseModel):
    """An integer score scale, both ends included (1-5, 1-10, 0-4)."""

    model_config = ConfigDict(extra="forbid")

    min: int = 1
    max: int = 5

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if self.max <= self.min:
            raise ValueError(f"scale max ({self.max}) must be above min ({self.min})")
        return self

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max

    def describe(self) -> str:
        return f"{self.min}-{self.max}"


class RatingAspect(BaseModel):
    """One aspect the judge scores (e.g. ``helpfulness`` on 1-5)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    """How the judge names it in its answer (``helpfulness: 4``); also the record's key."""
    description: str = ""
    """What the aspect means; shown to the judge (``{aspects}`` in the template)."""
    scale: Scale = Field(default_factory=Scale)
    """The score range the judge must answer within (out of range: unreadable, retried)."""


def _check_backend(backend: BackendSpec) -> BackendSpec:
    """A misspelt backend name or option is an error at load time, with file and field."""
    from simfarm.backends.registry import check_backend_options

    check_backend_options(backend.name, backend.options)
    return backend


class _ModelPersona(BaseModel):
    """Fields every prompted single-output persona shares."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    """Persona id; defaults to the file name without ``.yaml``."""
    description: str = ""
    """What this persona models, for humans reading ``simfarm personas list``."""
    backend: BackendSpec
    """Which LLM answers (name, model, options)."""
    prompt_template: str
    """Template file, relative to this YAML file's folder."""
    prompt_format: Literal["chat", "raw"] = "chat"
    """``chat``: send messages; ``raw``: send the rendered text as a plain prompt (base models)."""
    persona_text: str = ""
    """Who the annotator is; inserted where the template says ``{persona}``."""
    decoding: DecodingParams = Field(default_factory=lambda: DecodingParams(max_tokens=512))
    max_parse_attempts: int = Field(3, ge=1)
    """Attempts per request when the answer cannot be read (missing or out-of-range score).
    Greedy decoding stops after 2 (one identical re-send); sampled decoding draws anew."""

    prefill: str = ""
    """Text the answer starts with (``raw`` prompts only): appended to the prompt, and read
    as the start of the answer, so a base model continues ``helpfulness:`` with a score
    instead of having to produce the format from nothing."""

    _known_backend = field_validator("backend")(classmethod(lambda cls, b: _check_backend(b)))

    @model_validator(mode="after")
    def _prefill_needs_raw(self) -> _ModelPersona:
        if self.prefill and self.prompt_format != "raw":
            raise ValueError("`prefill` needs `prompt_format: raw` (chat APIs cannot prefill)")
        return self


class RatingPersona(_ModelPersona):
    """A judge that scores one output on declared aspects (UltraFeedback / HelpSteer2).

    The answer format it must produce (the template says so): one line per aspect,
    ``<aspect>: <score> - <short rationale>``, then ``overall: <score>`` when ``overall`` is
    set. A missing or out-of-range score makes the answer unreadable (retried, then a
    ``parse`` failure; never cached as an answer)."""

    kind: Literal["rating"]
    aspects: list[RatingAspect] = Field(min_length=1)
    """The aspects scored, each with its scale."""
    overall: Scale | None = Field(default_factory=Scale)
    """Scale of the overall score the judge gives; None: overall is the mean of the
    aspects (each mapped onto 0-1 first when their scales differ)."""
    logprob_scores: bool = False
    """Also compute each score's expectation over the score-token distribution (needs a
    backend returning top logprobs; sets ``decoding.logprobs`` and ``top_logprobs``)."""
    measured_correlation: dict[str, float] | None = None
    """Spearman per aspect measured on a human Likert set (for readers; not used)."""

    @model_validator(mode="after")
    def _unique_aspects(self) -> RatingPersona:
        names = [a.name.lower() for a in self.aspects]
        if len(set(names)) != len(names) or "overall" in names:
            raise ValueError("aspect names must be unique and not `overall`")
        if self.logprob_scores and not self.decoding.logprobs:
            self.decoding = self.decoding.model_copy(
                update={"logprobs": True, "top_logprobs": self.decoding.top_logprobs or 10}
            )
        return self


class CritiquePersona(_ModelPersona):
    """A judge that writes a critique against a rubric and ends with a score (Prometheus).

    ``absolute``: one output (and an optional reference answer) -> critique, then
    ``[RESULT] <score>`` on the rubric's scale. ``relative``: two outputs -> critique, then
    ``[RESULT] A`` or ``[RESULT] B``."""

    kind: Literal["critique"]
    mode: Literal["absolute", "relative"] = "absolute"
    rubric: str
    """Rubric file (YAML, see :class:`Rubric`), relative to this file's folder."""
    randomize_order: bool = True
    """Relative mode: show the two outputs in a seeded random order per item (undone)."""


class Rubric(BaseModel):
    """A scoring rubric (``annotators/rubrics/*.yaml``): what is judged and what each score
    means, shown to a critique judge."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    """Defaults to the file name."""
    description: str = ""
    criteria: str = Field(min_length=1)
    """The question the score answers (``Is the response helpful to the user?``)."""
    scores: dict[int, str]
    """Score -> what a response with that score is like; consecutive integers, at least 2."""

    @field_validator("scores")
    @classmethod
    def _consecutive(cls, scores: dict[int, str]) -> dict[int, str]:
        keys = sorted(scores)
        if len(keys) < 2 or keys != list(range(keys[0], keys[0] + len(keys))):
            raise ValueError(f"scores must be at least 2 consecutive integers, got {keys}")
        if any(not text.strip() for text in scores.values()):
            raise ValueError("every score needs a description")
        return dict(sorted(scores.items()))

    @property
    def scale(self) -> Scale:
        keys = list(self.scores)
        return Scale(min=keys[0], max=keys[-1])

    def render(self) -> str:
        lines = [f"[{self.criteria.strip()}]"]
        lines += [f"Score {k}: {' '.join(v.split())}" for k, v in self.scores.items()]
        return "\n".join(lines)
