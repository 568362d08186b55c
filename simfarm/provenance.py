"""What produced a result file: simfarm's version, the command line, the personas' digests.

Written into ``leaderboard.json`` and ``report.json`` so a number can be traced to the code
and the judge definition that made it (a persona edited in place keeps its name but not its
digest). The command line is redacted like every message (keys given as arguments, URL
credentials), so a secret never reaches a result file.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from simfarm.errors import SimfarmError
from simfarm.redaction import redact
from simfarm.types import Record, stable_digest

if TYPE_CHECKING:
    from simfarm.annotation.loader import LoadedPersona, LoadedPool


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent), for manifests: a result
    is traceable only with the library versions that produced it."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class Provenance(Record):
    simfarm_version: str
    python: str
    command_line: list[str]
    """``sys.argv`` of the run (``simfarm`` and its arguments), secrets redacted."""
    personas: dict[str, str]
    """Persona (or pool) id -> digest of its definition: the validated YAML fields and the
    prompt template text (pools: their members' digests too)."""
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Persona id -> what pins its local model's weights (the embedded model's GGUF sha256
    and conversion version, a local folder's content digest, or a hub revision); personas
    served by a remote API are left out (their provider does not publish one)."""


def persona_digest(loaded: LoadedPersona | LoadedPool) -> str:
    """sha256 over what defines the judge: its validated fields, its template text, and a
    distilled judge's head file."""
    from simfarm.annotation.loader import LoadedPool

    if isinstance(loaded, LoadedPool):
        members = [[persona_digest(member), weight] for member, weight in loaded.members]
        return stable_digest({"pool": loaded.spec.model_dump(mode="json"), "members": members})
    template = loaded.template.digest if loaded.template is not None else None
    content: dict[str, Any] = {"persona": loaded.spec.model_dump(mode="json"), "template": template}
    head = getattr(loaded.spec, "head", None)
    if head is not None:  # a distilled judge is its head's weights: retrained = another judge
        from simfarm.annotation.distilled import load_head

        content["head"] = load_head(head).digest
    return stable_digest(content)


def persona_digests(names: Iterable[str], dirs: list[Path] | None = None) -> dict[str, str]:
    """Digests of the named judges that are personas or pools on the search path (names
    that are not, e.g. judges named in alpaca_eval annotation files, are left out)."""
    from simfarm.annotation.loader import load_annotator

    digests: dict[str, str] = {}
    for name in sorted(set(names)):
        try:
            digests[name] = persona_digest(load_annotator(name, dirs))
        except SimfarmError:
            continue
    return digests


def model_checksums(names: Iterable[str], dirs: list[Path] | None = None) -> dict[str, Any]:
    """Persona id -> :func:`~simfarm.backends.model_digest.model_checksum` of its model, for
    the named personas (and pools' members) that run a local model."""
    from simfarm.annotation.loader import LoadedPool, load_annotator
    from simfarm.backends.model_digest import model_checksum

    checksums: dict[str, Any] = {}
    for name in sorted(set(names)):
        try:
            loaded = load_annotator(name, dirs)
        except SimfarmError:
            continue
        members = [m for m, _ in loaded.members] if isinstance(loaded, LoadedPool) else [loaded]
        for persona in members:
            spec = persona.spec.backend
            if spec is None or persona.spec.id in checksums:
                continue
            try:
                checksum = model_checksum(spec.name, spec.model, spec.options)
            except (SimfarmError, OSError):
                continue  # the model is not here to check: nothing to record
            if checksum is not None:
                checksums[persona.spec.id] = checksum
    return checksums


def current_provenance(
    personas: dict[str, str] | None = None,
    argv: Sequence[str] | None = None,
    models: dict[str, Any] | None = None,
) -> Provenance:
    from simfarm import __version__

    return Provenance(
        simfarm_version=__version__,
        python=platform.python_version(),
        command_line=[redact(arg) for arg in (sys.argv if argv is None else argv)],
        personas=dict(personas or {}),
        models=dict(models or {}),
    )
