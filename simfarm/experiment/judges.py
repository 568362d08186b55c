"""The experiment's two annotators: feedback (with label noise) and evaluation (without),
their definitions for the manifest, and the choice of the best judge that runs offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm.annotation.loader import LoadedPersona, LoadedPool, load_annotator, read_spec

OFFLINE_BACKENDS = frozenset({"embedded"})
"""Backends that need neither network nor a downloaded model (rules need no backend)."""


def with_label_noise(
    loaded: LoadedPersona | LoadedPool, label_noise: float
) -> LoadedPersona | LoadedPool:
    """The same annotator with ``label_noise`` on every persona (every pool member)."""

    def noisy(persona: LoadedPersona) -> LoadedPersona:
        spec = persona.spec.model_copy(update={"label_noise": label_noise})
        return LoadedPersona(spec=spec, template=persona.template, path=persona.path)

    if isinstance(loaded, LoadedPersona):
        return noisy(loaded)
    members = [(noisy(p), w) for p, w in loaded.members]
    return LoadedPool(spec=loaded.spec, members=members, path=loaded.path)


def load_judge(name: str, label_noise: float | None) -> LoadedPersona | LoadedPool:
    """An annotator by id or path; ``label_noise`` (when not None) replaces the files' own."""
    loaded = load_annotator(name)
    return loaded if label_noise is None else with_label_noise(loaded, label_noise)


def judge_definition(name: str) -> dict[str, Any]:
    """Everything that defines an annotator's verdicts: each persona's validated spec and the
    digest of its prompt template (for the manifest and the stages' input digests)."""
    loaded = load_annotator(name)
    personas = [loaded] if isinstance(loaded, LoadedPersona) else [p for p, _ in loaded.members]
    definition: dict[str, Any] = {
        "id": loaded.spec.id,
        "file": str(loaded.path) if loaded.path else None,
        "personas": [
            {
                "spec": persona.spec.model_dump(mode="json"),
                "template_digest": persona.template.digest if persona.template else None,
            }
            for persona in personas
        ],
    }
    if isinstance(loaded, LoadedPool):
        definition["pool"] = loaded.spec.model_dump(mode="json")
    return definition


@dataclass(frozen=True)
class JudgeChoice:
    persona: str
    agreement: float
    human_set: str
    n: int
    alternatives: list[tuple[str, float]]
    """Every offline persona with a measurement, best first."""
    baselines: frozenset[str] = frozenset()
    """Those of ``alternatives`` that are length baselines (never chosen)."""

    def note(self) -> str:
        others = ", ".join(
            f"`{p}` {a:.1%}" + (" (length baseline, not a judge)" if p in self.baselines else "")
            for p, a in self.alternatives
            if p != self.persona
        )
        return (
            f"judge `{self.persona}`: {self.agreement:.1%} agreement with the human majority on "
            f"{self.human_set} (n={self.n}); best of the offline judges"
            + (f" (others: {others})" if others else "")
        )


LENGTH_BASELINES = frozenset({"longest", "shortest"})
"""Rules that only compare lengths: the baselines judges are measured against, not judges. A
board judged by one ranks methods by how long they answer, which is what a length-controlled
win rate is there to remove, and feedback from one teaches a policy to be verbose. They are
listed beside the choice (``longest`` agrees with PandaLM's human majority more often than any
offline judge here, 67.4% against 66.8%) but never chosen."""


def best_offline_judge(dirs: list[Path] | None = None) -> JudgeChoice:
    """The offline judge with the highest measured human agreement.

    Offline: a rule, or a backend in :data:`OFFLINE_BACKENDS`. Only personas whose file
    carries a ``measured_agreement`` compete: an unmeasured judge is never picked on faith.
    Length baselines (:data:`LENGTH_BASELINES`) are listed in ``alternatives`` with their
    figure, never picked.
    """
    from simfarm.annotation.loader import iter_annotator_files
    from simfarm.annotation.persona import PairwisePersona
    from simfarm.errors import ConfigError, SimfarmError

    measured: list[tuple[str, float, Any]] = []
    baselines: set[str] = set()
    for path in iter_annotator_files(dirs):
        try:
            spec = read_spec(path)
        except SimfarmError:
            continue
        if not isinstance(spec, PairwisePersona) or spec.measured_agreement is None:
            continue
        offline = spec.rule is not None or (
            spec.backend is not None and spec.backend.name in OFFLINE_BACKENDS
        )
        if offline and spec.label_noise == 0:
            measured.append((spec.id, spec.measured_agreement.agreement, spec.measured_agreement))
            if spec.rule in LENGTH_BASELINES:
                baselines.add(spec.id)
    measured.sort(key=lambda m: (-m[1], m[0]))
    judges = [m for m in measured if m[0] not in baselines]
    if not judges:
        raise ConfigError(
            "no offline judge with a measured_agreement (length baselines are not chosen); "
            "name a judge instead"
        )
    best_id, best_agreement, best = judges[0]
    return JudgeChoice(
        persona=best_id,
        agreement=best_agreement,
        human_set=best.human_set,
        n=best.n,
        alternatives=[(p, a) for p, a, _ in measured],
        baselines=frozenset(baselines),
    )


def materialize_judge(name: str, label_noise: float | None, folder: Path) -> Path:
    """Write the annotator (with ``label_noise`` applied) as persona/pool files under
    ``folder`` and return the file to name it by.

    Recipes name their scorer by persona id or path; this gives them the experiment's
    feedback annotator, noise included, without a field of their own for it. Templates are
    referenced by absolute path, so the copies judge exactly as the originals.
    """
    import yaml

    from simfarm.experiment.stages import atomic_write_text

    loaded = load_judge(name, label_noise)
    folder.mkdir(parents=True, exist_ok=True)

    def write(persona: LoadedPersona) -> Path:
        spec = persona.spec.model_dump(mode="json", exclude_none=True)
        if persona.template is not None:
            spec["prompt_template"] = str(Path(persona.template.source).resolve())
        target = folder / f"{persona.spec.id}.yaml"
        atomic_write_text(target, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        return target

    if isinstance(loaded, LoadedPersona):
        return write(loaded)
    pool = loaded.spec.model_dump(mode="json", exclude_none=True)
    pool["members"] = [
        {"persona": str(write(persona)), "weight": weight} for persona, weight in loaded.members
    ]
    target = folder / f"{loaded.spec.id}.yaml"
    atomic_write_text(target, yaml.safe_dump(pool, sort_keys=False, allow_unicode=True))
    return target
