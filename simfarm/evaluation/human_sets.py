"""Human-labelled sets for validating annotators: declared by small YAML configs in ``evals/``,
read from a local data folder or, for users with network, from their public source.

A config (``kind: human_set``) names a *format* the loader knows and maps the file's fields
onto simfarm's records, so a new set in a known format needs a YAML file and no code:

``pairwise``
    One record per pair with named fields for the instruction (and input), the two outputs and
    one label field per human; ``label_map`` says what each raw label means in alpaca_eval's
    encoding (1 = output_1 better, 2 = output_2 better, 1.5 = tie). PandaLM, LLMBar.
``prompt_pair``
    Chosen and rejected responses embedded in two rubric prompts (Prometheus' HHH file): the
    instruction and response are cut out between marker lines.
``choices``
    BIG-bench style ``targets: {choices, labels}`` (HHH alignment on the hub).
``likert``
    One record per (context, system) response with human scores per aspect (USR Topical-Chat).
``transcript``
    Chosen and rejected transcripts (``"\n\nHuman: ...\n\nAssistant: ..."``, HH-RLHF) that
    share a conversation and differ in the last assistant turn: the conversation is kept as
    turns, the outputs are the two last assistant turns; a pair whose conversations differ
    is reported as a bad record (see :mod:`simfarm.evaluation.transcripts`).

Chosen/rejected formats have no natural order; each pair's order is drawn from a generator
seeded by the item's content (stable across runs), so "always pick output_1" scores 50%.

Where a subset is read from (first that works): ``<data root>/<path>``; the hub dataset
(``hub_id``, via ``datasets``); the raw ``url`` (downloaded with the standard library). The
data root is ``--data-dir``, else ``$SIMFARM_DATA_DIR``, else ``../shared/data`` from the
current folder.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from simfarm.datafiles import read_records
from simfarm.errors import ConfigError
from simfarm.evaluation.transcripts import (
    TranscriptError,
    TranscriptMarkers,
    context_and_response,
    first_difference,
    split_transcript,
)
from simfarm.paths import data_search_path
from simfarm.record_checks import (
    BadRecordPolicy,
    RecordChecker,
    RecordIssue,
    is_nan,
    raise_or_warn,
)
from simfarm.textfiles import read_text
from simfarm.types import ChatMessage, PairwiseItem, Record, stable_digest

DATA_DIR_ENV = "SIMFARM_DATA_DIR"
DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"


# --- configs -----------------------------------------------------------------------------


class SubsetSpec(Record):
    """One file (or hub split) of a set."""

    name: str
    path: str | None = None
    """Relative to the data root."""
    hub_id: str | None = None
    """Hugging Face dataset id, loaded with ``datasets`` when the local file is absent."""
    hub_config: str | None = None
    hub_split: str = "test"
    hub_data_dir: str | None = None
    """A folder of the hub repository (``datasets.load_dataset(..., data_dir=...)``)."""
    url: str | None = None
    """A raw JSON file to download when neither the local file nor the hub is available."""
    group: str | None = None
    """A coarser group for the per-group breakdown (e.g. ``Adversarial``)."""


class _SetBase(Record):
    kind: Literal["human_set"]
    name: str
    description: str
    license: str | None = None
    citation: str | None = None
    on_bad_record: BadRecordPolicy = "coerce"
    """What to do with a record that has a bad field (see ``simfarm.record_checks``)."""
    subsets: list[SubsetSpec] = Field(min_length=1)


class PairwiseFields(Record):
    instruction: str
    input: str | None = None
    output_1: str
    output_2: str
    labels: list[str] = Field(min_length=1)
    """One field per human (PandaLM: three), or one gold field (LLMBar)."""
    item_id: str | None = None
    generators: str | None = None
    """A field holding both systems' names, ``<generator_1><separator><generator_2>``."""
    generator_separator: str = "_"


class PairwiseSetConfig(_SetBase):
    format: Literal["pairwise"]
    fields: PairwiseFields
    label_map: dict[str, float]
    """Raw label (as text) -> preference: 1 = output_1 better, 2 = output_2 better, 1.5 tie."""
    label_semantics: str = ""

    @field_validator("label_map", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("label_map")
    @classmethod
    def _preferences(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if v not in (1.0, 1.5, 2.0)}
        if bad:
            raise ValueError(f"labels must map to 1, 1.5 or 2; got {bad}")
        return value


class PromptPairFields(Record):
    chosen: str
    rejected: str
    subset_field: str | None = None
    """A field whose value splits the records into sub-subsets (HHH: ``source``)."""
    instruction_start: str
    instruction_end: str
    response_start: str
    response_end: str


class PromptPairSetConfig(_SetBase):
    format: Literal["prompt_pair"]
    fields: PromptPairFields
    label_semantics: str = "the chosen response is better"


class ChoicesSetConfig(_SetBase):
    format: Literal["choices"]
    input_field: str = "input"
    targets_field: str = "targets"
    label_semantics: str = "the choice labelled 1 is better"


class LikertFields(Record):
    history: str
    """The conversation so far; responses with the same history are compared."""
    context: str | None = None
    response: str
    system: str
    scores: str
    """A field holding ``{aspect: mean human score}``."""


class LikertSetConfig(_SetBase):
    format: Literal["likert"]
    fields: LikertFields
    aspects: list[str] = Field(min_length=1)
    pairwise_aspect: str = "overall"
    """Aspect whose score difference defines the human preference between two responses."""
    instruction_template: str = (
        "Write the next turn of this conversation. A fact you may use: {context}\n\n"
        "Conversation so far:\n{history}"
    )


class TranscriptFields(Record):
    chosen: str = "chosen"
    rejected: str = "rejected"
    user_marker: str = "\n\nHuman:"
    """The text that opens a user turn in the dataset's transcripts."""
    assistant_marker: str = "\n\nAssistant:"


class TranscriptSetConfig(_SetBase):
    format: Literal["transcript"]
    fields: TranscriptFields = Field(default_factory=TranscriptFields)
    label_semantics: str = "the chosen transcript's last assistant turn is better"


HumanSetConfig = Annotated[
    PairwiseSetConfig
    | PromptPairSetConfig
    | ChoicesSetConfig
    | LikertSetConfig
    | TranscriptSetConfig,
    Field(discriminator="format"),
]
_CONFIG_ADAPTER: TypeAdapter[Any] = TypeAdapter(HumanSetConfig)
AnySetConfig = (
    PairwiseSetConfig
    | PromptPairSetConfig
    | ChoicesSetConfig
    | LikertSetConfig
    | TranscriptSetConfig
)


def read_set_config(path: Path) -> AnySetConfig:
    """Parse and validate one config; problems are named by file and field."""
    try:
        raw = yaml.safe_load(read_text(Path(path)))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", Path(path).stem)
    try:
        return _CONFIG_ADAPTER.validate_python(raw)
    except ValidationError as error:
        lines = [f"{path}: invalid human-set config"]
        for item in error.errors():
            loc = ".".join(str(p) for p in item["loc"])
            lines.append(f"  {loc or '<root>'}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from None


def _is_human_set(path: Path) -> bool:
    try:
        raw = yaml.safe_load(read_text(path))
    except (ConfigError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("kind") == "human_set"


def list_human_sets(extra_dirs: list[Path] | None = None) -> dict[str, Path]:
    """Every human-set config on the evals search path (earlier folders shadow later)."""
    found: dict[str, Path] = {}
    for folder in data_search_path("evals", extra_dirs):
        if folder.is_dir():
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                if path.stem not in found and _is_human_set(path):
                    found[path.stem] = path
    return found


def find_human_set(name: str, extra_dirs: list[Path] | None = None) -> AnySetConfig:
    """A config by name (``pandalm``) or by path to its YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return read_set_config(candidate)
    known = list_human_sets(extra_dirs)
    if name not in known:
        raise ConfigError(
            f"no human-labelled set named {name!r}; known: {', '.join(sorted(known)) or 'none'}"
            " (add a config with `kind: human_set` to evals/ or $SIMFARM_EVALS_DIR)"
        )
    return read_set_config(known[name])


def resolve_data_root(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$SIMFARM_DATA_DIR``, else ``../shared/data`` from the cwd, else
    ``../shared/data`` beside a source checkout of simfarm (so the commands work from any
    folder in a development setup)."""
    if explicit is not None:
        return Path(explicit).resolve()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).resolve()
    from_cwd = (Path.cwd() / DEFAULT_DATA_ROOT).resolve()
    if from_cwd.is_dir():
        return from_cwd
    beside_checkout = (Path(__file__).resolve().parents[2] / DEFAULT_DATA_ROOT).resolve()
    return beside_checkout if beside_checkout.is_dir() else from_cwd


# --- records -----------------------------------------------------------------------------


class HumanPairwiseItem(Record):
    """A pair with its human labels (alpaca_eval encoding; one per human)."""

    item: PairwiseItem
    human: list[float]
    subset: str
    group: str | None = None


class HumanRatingItem(Record):
    """One response with mean human scores per aspect."""

    item_id: str
    group_id: str
    """Responses sharing it answer the same context and are compared with each other."""
    system: str
    history: str
    context: str = ""
    response: str
    scores: dict[str, float]
    subset: str


@dataclass
class HumanSet:
    config: AnySetConfig
    pairs: list[HumanPairwiseItem] = field(default_factory=list)
    ratings: list[HumanRatingItem] = field(default_factory=list)
    issues: list[RecordIssue] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def is_rating(self) -> bool:
        return isinstance(self.config, LikertSetConfig)


# --- reading -----------------------------------------------------------------------------


def _read_subset(spec: SubsetSpec, data_root: Path) -> tuple[str, list[Any]]:
    tried: list[str] = []
    if spec.path:
        local = data_root / spec.path
        if local.exists():
            return str(local), read_records(local)
        tried.append(str(local))
    if spec.hub_id:
        try:
            import datasets

            loaded = datasets.load_dataset(
                spec.hub_id, spec.hub_config, data_dir=spec.hub_data_dir, split=spec.hub_split
            )
            folder = f" data_dir={spec.hub_data_dir}" if spec.hub_data_dir else ""
            return f"hf:{spec.hub_id}:{spec.hub_config or ''}@{spec.hub_split}{folder}", [
                dict(r) for r in loaded
            ]
        except Exception as error:  # network, auth, unknown repo: reported with the others
            tried.append(f"hub {spec.hub_id} ({type(error).__name__}: {error})")
    if spec.url:
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as response:
                data = json.loads(response.read().decode("utf-8"))
            if not isinstance(data, list):
                raise ConfigError(f"{spec.url}: expected a JSON array of records")
            return spec.url, data
        except (OSError, ValueError) as error:
            tried.append(f"{spec.url} ({type(error).__name__}: {error})")
    raise ConfigError(
        f"subset {spec.name!r}: not found; tried {tried or ['nothing (no path, hub_id or url)']}"
        f" (set --data-dir or ${DATA_DIR_ENV} to the folder holding the data)"
    )


def _ordered(rng_parts: list[str], first: str, second: str) -> tuple[str, str, float]:
    """(output_1, output_2, preference) with the better response ``first`` placed by a
    content-seeded coin flip."""
    flip = int(stable_digest(rng_parts)[:8], 16) % 2 == 1
    return (second, first, 2.0) if flip else (first, second, 1.0)


def _gold_pair(
    item_id: str,
    instruction: str,
    better: str,
    worse: str,
    subset: str,
    group: str | None,
    conversation: list[ChatMessage] | None = None,
) -> HumanPairwiseItem:
    """A pair with one gold label, the better response placed by a content-seeded coin flip
    (so "output_1 wins" carries no information about which slot is right)."""
    output_1, output_2, label = _ordered([item_id, instruction], better, worse)
    return HumanPairwiseItem(
        item=PairwiseItem(
            instruction=instruction,
            output_1=output_1,
            output_2=output_2,
            item_id=item_id,
            conversation=conversation,
        ),
        human=[label],
        subset=subset,
        group=group,
    )


def _between(text: str, start: str, end: str) -> str | None:
    begin = text.find(start)
    if begin < 0:
        return None
    begin += len(start)
    stop = text.find(end, begin)
    return text[begin : stop if stop >= 0 else None].strip()


def _parse_pairwise(
    config: PairwiseSetConfig,
    spec: SubsetSpec,
    records: list[Any],
    checker: RecordChecker,
) -> list[HumanPairwiseItem]:
    f = config.fields
    out: list[HumanPairwiseItem] = []
    for index, record in checker.objects(records):
        instruction = checker.text(record, f.instruction)
        input_text = checker.text(record, f.input, default="") if f.input else ""
        output_1 = checker.text(record, f.output_1)
        output_2 = checker.text(record, f.output_2)
        labels: list[float] = []
        for name in f.labels:
            raw = record.get(name)
            key = str(raw) if not isinstance(raw, bool) else None
            if key is None or key not in config.label_map:
                known = list(config.label_map)
                checker.fail(name, f"unknown label {raw!r}; expected one of {known}")
            else:
                labels.append(config.label_map[key])
        generator_1, generator_2 = "output_1", "output_2"
        if f.generators:
            names = str(record.get(f.generators, "")).split(f.generator_separator)
            if len(names) == 2 and all(names):
                generator_1, generator_2 = names
        raw_id = record.get(f.item_id) if f.item_id else None
        item_id = f"{config.name}/{spec.name}/{raw_id if raw_id is not None else index}"
        if checker.finish(index) != "keep":
            continue
        out.append(
            HumanPairwiseItem(
                item=PairwiseItem(
                    instruction=instruction,
                    input=input_text,
                    output_1=output_1,
                    output_2=output_2,
                    generator_1=generator_1,
                    generator_2=generator_2,
                    item_id=item_id,
                ),
                human=labels,
                subset=spec.name,
                group=spec.group,
            )
        )
    return out


def _parse_prompt_pair(
    config: PromptPairSetConfig,
    spec: SubsetSpec,
    records: list[Any],
    checker: RecordChecker,
) -> list[HumanPairwiseItem]:
    f = config.fields
    out: list[HumanPairwiseItem] = []
    for index, record in checker.objects(records):
        parts: dict[str, tuple[str | None, str | None]] = {}
        for name in (f.chosen, f.rejected):
            prompt = checker.text(record, name)
            parts[name] = (
                _between(prompt, f.instruction_start, f.instruction_end),
                _between(prompt, f.response_start, f.response_end),
            )
            if None in parts[name]:
                checker.fail(name, "instruction or response markers not found")
        (inst_c, resp_c), (inst_r, resp_r) = parts[f.chosen], parts[f.rejected]
        if inst_c is not None and inst_r is not None and inst_c != inst_r:
            checker.fail(f.rejected, "its instruction differs from the chosen prompt's")
        subset, group = spec.name, spec.group
        if f.subset_field:  # the field names the subset (HHH: honest, helpful, ...)
            subset = str(record.get(f.subset_field, "unknown"))
        if checker.finish(index) != "keep":
            continue
        assert inst_c is not None and resp_c is not None and resp_r is not None
        item_id = f"{config.name}/{spec.name}/{index}"
        out.append(_gold_pair(item_id, inst_c, resp_c, resp_r, subset, group))
    return out


def _parse_transcript(
    config: TranscriptSetConfig,
    spec: SubsetSpec,
    records: list[Any],
    checker: RecordChecker,
) -> list[HumanPairwiseItem]:
    f = config.fields
    markers = TranscriptMarkers(user=f.user_marker, assistant=f.assistant_marker)
    out: list[HumanPairwiseItem] = []
    for index, record in checker.objects(records):
        sides: dict[str, tuple[list[ChatMessage], str]] = {}
        for name in (f.chosen, f.rejected):
            raw, text = record.get(name), checker.text(record, name)
            if not isinstance(raw, str | bool | int | float) or is_nan(raw):
                continue  # missing, or not text: reported by checker.text, record skipped
            try:
                sides[name] = context_and_response(split_transcript(text, markers))
            except TranscriptError as error:
                checker.fail(name, str(error))
        if len(sides) == 2:
            (context, better), (other, worse) = sides[f.chosen], sides[f.rejected]
            difference = first_difference(context, other)
            if difference is not None:
                checker.fail(f.rejected, f"its conversation differs from chosen's: {difference}")
            elif better == worse:
                checker.fail(f.rejected, "its last assistant turn is the chosen one's")
        if checker.finish(index) != "keep":
            continue
        context, better = sides[f.chosen]
        item_id = f"{config.name}/{spec.name}/{index}"
        worse = sides[f.rejected][1]
        out.append(
            _gold_pair(item_id, context[-1].content, better, worse, spec.name, spec.group, context)
        )
    return out


def _parse_choices(
    config: ChoicesSetConfig,
    spec: SubsetSpec,
    records: list[Any],
    checker: RecordChecker,
) -> list[HumanPairwiseItem]:
    out: list[HumanPairwiseItem] = []
    for index, record in checker.objects(records):
        instruction = checker.text(record, config.input_field)
        targets = record.get(config.targets_field)
        choices = targets.get("choices") if isinstance(targets, dict) else None
        labels = targets.get("labels") if isinstance(targets, dict) else None
        if (
            not isinstance(choices, list)
            or not isinstance(labels, list)
            or len(choices) != 2
            or sorted(labels) != [0, 1]
            or not all(isinstance(c, str) for c in choices)
        ):
            checker.fail(config.targets_field, "expected two text choices with labels 1 and 0")
        if checker.finish(index) != "keep":
            continue
        assert isinstance(choices, list) and isinstance(labels, list)
        better = choices[labels.index(1)]
        worse = choices[labels.index(0)]
        item_id = f"{config.name}/{spec.name}/{index}"
        out.append(_gold_pair(item_id, instruction, better, worse, spec.name, spec.group))
    return out


def _parse_likert(
    config: LikertSetConfig,
    spec: SubsetSpec,
    records: list[Any],
    checker: RecordChecker,
) -> list[HumanRatingItem]:
    f = config.fields
    out: list[HumanRatingItem] = []
    for index, record in checker.objects(records):
        history = checker.text(record, f.history)
        context = checker.text(record, f.context, default="") if f.context else ""
        response = checker.text(record, f.response)
        system = checker.text(record, f.system)
        raw_scores = record.get(f.scores)
        scores: dict[str, float] = {}
        if not isinstance(raw_scores, dict):
            checker.fail(f.scores, f"expected a mapping of aspect scores, got {raw_scores!r}")
        else:
            for aspect in config.aspects:
                value = raw_scores.get(aspect)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    scores[aspect] = float(value)
                else:
                    checker.fail(f"{f.scores}.{aspect}", f"expected a number, got {value!r}")
        if checker.finish(index) != "keep":
            continue
        out.append(
            HumanRatingItem(
                item_id=f"{config.name}/{spec.name}/{index}",
                group_id=stable_digest([history, context])[:16],
                system=system,
                history=history,
                context=context,
                response=response,
                scores=scores,
                subset=spec.name,
            )
        )
    return out


def load_human_set(
    config: AnySetConfig,
    *,
    data_root: Path | None = None,
    subsets: list[str] | None = None,
    limit: int | None = None,
    policy: BadRecordPolicy | None = None,
    warn: bool = True,
) -> HumanSet:
    """The items of ``config`` (optionally some subsets; the first ``limit`` records of each,
    or for Likert sets the responses to the first ``limit`` contexts).

    Bad records follow ``policy`` (default: the config's ``on_bad_record``); every one is in
    ``HumanSet.issues`` and, unless ``warn`` is off, in one warning.
    """
    root = resolve_data_root(data_root)
    policy = policy or config.on_bad_record
    chosen = config.subsets
    if subsets:
        unknown = set(subsets) - {s.name for s in config.subsets}
        if unknown:
            raise ConfigError(
                f"{config.name}: unknown subset(s) {sorted(unknown)}; "
                f"known: {[s.name for s in config.subsets]}"
            )
        chosen = [s for s in config.subsets if s.name in subsets]
    result = HumanSet(config=config)
    for spec in chosen:
        source, records = _read_subset(spec, root)
        result.sources.append(source)
        checker = RecordChecker(source, policy)
        if limit is not None and not isinstance(config, LikertSetConfig):
            records = records[:limit]  # only the records used are checked (and reported)
        if isinstance(config, PairwiseSetConfig):
            result.pairs += _parse_pairwise(config, spec, records, checker)
        elif isinstance(config, PromptPairSetConfig):
            result.pairs += _parse_prompt_pair(config, spec, records, checker)
        elif isinstance(config, ChoicesSetConfig):
            result.pairs += _parse_choices(config, spec, records, checker)
        elif isinstance(config, TranscriptSetConfig):
            result.pairs += _parse_transcript(config, spec, records, checker)
        else:
            ratings = _parse_likert(config, spec, records, checker)
            if limit is not None:
                keep = list(dict.fromkeys(r.group_id for r in ratings))[:limit]
                ratings = [r for r in ratings if r.group_id in set(keep)]
            result.ratings += ratings
        result.issues += checker.issues
    if warn:
        raise_or_warn(result.issues, policy, f"human set {config.name!r}")
    return result


def rating_pairs(
    config: LikertSetConfig, ratings: list[HumanRatingItem]
) -> list[HumanPairwiseItem]:
    """Every pair of responses to the same context, with the human preference given by the
    ``pairwise_aspect`` score (equal scores: a tie). Order within a pair is content-seeded."""
    by_group: dict[str, list[HumanRatingItem]] = {}
    for rating in ratings:
        by_group.setdefault(rating.group_id, []).append(rating)
    aspect = config.pairwise_aspect
    pairs: list[HumanPairwiseItem] = []
    for members in by_group.values():
        for a, b in combinations(members, 2):
            flip = int(stable_digest([a.item_id, b.item_id])[:8], 16) % 2 == 1
            first, second = (b, a) if flip else (a, b)
            s1, s2 = first.scores.get(aspect), second.scores.get(aspect)
            if s1 is None or s2 is None:
                raise ConfigError(f"{config.name}: aspect {aspect!r} missing from the scores")
            label = 1.5 if s1 == s2 else (1.0 if s1 > s2 else 2.0)
            pairs.append(
                HumanPairwiseItem(
                    item=PairwiseItem(
                        instruction=config.instruction_template.format(
                            history=first.history.strip(), context=first.context.strip()
                        ),
                        output_1=first.response,
                        output_2=second.response,
                        generator_1=first.system,
                        generator_2=second.system,
                        item_id=f"{first.item_id}|{second.item_id}",
                    ),
                    human=[label],
                    subset=first.subset,
                )
            )
    return pairs
