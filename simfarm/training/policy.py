"""The policy: a causal LM (peft-wrapped when LoRA is on) plus its tokenizer, the one prompt
format every recipe uses, and reproducible batched sampling.

Sampling draws every token of sample ``k`` of prompt ``i`` from its own generator seeded by
``(seed, prompt, k)``, so a sample does not depend on which other prompts shared its batch or
on the batch size (on float32; bfloat16 logits can differ in the last bit with padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm.training.config import GenerationSpec, LoraSpec, ModelSpec
from simfarm.types import DecodingParams, stable_digest

EMBEDDED = "embedded"

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
"""The AlpacaFarm / Alpaca instruction template (for base models without a chat template)."""


def format_prompt(
    tokenizer: Any, instruction: str, input: str = "", *, use_chat_template: bool = False
) -> str:
    """The prompt a recipe shows the model for one instruction (responses follow it directly).

    Base models get the AlpacaFarm instruction template; with ``use_chat_template`` (and a
    tokenizer that has one) the instruction becomes one user turn of the chat template.
    """
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{input}" if input else instruction
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        )
    if input:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


# ---------------------------------------------------------------------------------------
# Loading


def import_torch_stack() -> tuple[Any, Any]:
    """``(torch, transformers)`` or a MissingExtraError naming the ``train`` extra."""
    from simfarm.backends.transformers_local import import_local_stack

    return import_local_stack("training")


def model_folder(spec: ModelSpec) -> str:
    """What transformers should load: the embedded model's converted folder, or as given."""
    if spec.name_or_path == EMBEDDED:
        from simfarm.backends.embedded import ensure_converted

        return str(ensure_converted())
    return spec.name_or_path


def resolve_device(spec: ModelSpec) -> str:
    torch, _ = import_torch_stack()
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


def resolve_dtype(spec: ModelSpec) -> str:
    """``float32`` or ``bfloat16``: "auto" picks bfloat16 on CUDA and on CPUs with native
    bfloat16 (2-2.5x faster there), float32 elsewhere."""
    if spec.dtype != "auto":
        return spec.dtype
    torch, _ = import_torch_stack()
    from simfarm.backends.transformers_local import cpu_has_native_bf16

    if resolve_device(spec).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16(torch) else "float32"


def load_tokenizer(spec: ModelSpec) -> Any:
    """The tokenizer, with a pad token (EOS when it has none) and left padding for sampling."""
    _, transformers = import_torch_stack()
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model_folder(spec), revision=spec.revision
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(spec: ModelSpec, kind: str = "causal_lm", **kwargs: Any) -> Any:
    """The model without trainable adapters: ``kind`` is "causal_lm" or "sequence_classification"
    (a scalar head, for reward models). ``spec.adapter`` (a LoRA folder) is merged in."""
    torch, transformers = import_torch_stack()
    auto = {
        "causal_lm": transformers.AutoModelForCausalLM,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    dtype = getattr(torch, resolve_dtype(spec))
    model = auto.from_pretrained(
        model_folder(spec), revision=spec.revision, dtype=dtype, **kwargs
    ).to(resolve_device(spec))
    if spec.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(spec.adapter)).merge_and_unload()
    return model


def peft_lora_config(lora: LoraSpec, task_type: str = "CAUSAL_LM") -> Any:
    """The peft LoraConfig for ``lora`` (``task_type`` "SEQ_CLS" also trains the score head)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )


def is_adapter_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


@dataclass
class Policy:
    """A causal LM ready to sample from (peft-wrapped when it carries LoRA adapters)."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: str

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")


def load_policy(
    model: ModelSpec, lora: LoraSpec | None = None, checkpoint: Path | None = None
) -> Policy:
    """The policy to sample from or train.

    ``checkpoint``: a run's ``checkpoint/`` folder — a LoRA adapter (loaded onto the base
    model, trainable when ``lora`` is enabled) or full weights (loaded instead of the base).
    Without a checkpoint and with ``lora`` enabled, fresh adapters are added (they start as
    the identity, so the policy starts equal to the base model).
    """
    tokenizer = load_tokenizer(model)
    trainable = lora is not None and lora.enabled
    if checkpoint is not None and not is_adapter_folder(Path(checkpoint)):
        base_spec = model.model_copy(update={"name_or_path": str(checkpoint), "adapter": None})
        net = load_base_model(base_spec)
        model = base_spec  # what the policy is (vLLM generation loads it from there)
    else:
        net = load_base_model(model)
    if checkpoint is not None and is_adapter_folder(Path(checkpoint)):
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(checkpoint), is_trainable=trainable)
    elif trainable:
        from peft import get_peft_model

        assert lora is not None
        net = get_peft_model(net, peft_lora_config(lora))
    net.config.pad_token_id = tokenizer.pad_token_id
    return Policy(model=net, tokenizer=tokenizer, spec=model, device=resolve_device(model))


# ---------------------------------------------------------------------------------------
# Sampling


def sample_seed(seed: int, prompt: str, k: int) -> int:
    """The seed of sample ``k`` of ``prompt``: stable across processes and batchings."""
    return int(stable_digest(["simfarm-sample", seed, prompt, k])[:15], 16)


class _RowSampler:
    """A logits processor that draws each row's next token from that row's own generator and
    leaves only it finite, so ``generate`` in greedy mode emits exactly the drawn tokens."""

    def __init__(self, torch: Any, generators: list[Any], params: DecodingParams) -> None:
        self.torch = torch
        self.generators = generators
        self.params = params

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        from simfarm.backends.local_decoder import sample_token

        torch = self.torch
        chosen = [
            sample_token(torch, scores[i], self.params, generator)
            for i, generator in enumerate(self.generators)
        ]
        out = torch.full_like(scores, float("-inf"))
        index = torch.tensor(chosen, device=scores.device).unsqueeze(1)
        out.scatter_(1, index, 0.0)
        return out


class _StopOnText:
    """A stopping criterion: a row is done once its generated text contains a stop string
    (a base model continuing the instruction template writes the next "### Instruction")."""

    def __init__(self, torch: Any, tokenizer: Any, prompt_length: int, stop: Sequence[str]):
        self.torch = torch
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stop = list(stop)

    def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_length :], skip_special_tokens=True
        )
        done = [any(s in text for s in self.stop) for text in texts]
        return self.torch.tensor(done, dtype=self.torch.bool, device=input_ids.device)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (the stop string itself dropped)."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


@dataclass(frozen=True)
class Sample:
    """One generated response and how it ended."""

    text: str
    truncated: bool = False
    """Cut off by ``max_new_tokens`` (no end-of-sequence token, no stop string): the text
    ends mid-thought, so training on it must not append an end-of-sequence token, or the
    policy learns to stop mid-sentence (or, taught that long text ends well, to ramble)."""


def end_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a response: the tokenizer's EOS and the model's generation-config
    end tokens (Gemma's adds ``<end_of_turn>``)."""
    ids: list[int] = []
    generation_config = getattr(model, "generation_config", None)
    for eos in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        for token in [eos] if isinstance(eos, int) else list(eos or []):
            if int(token) not in ids:
                ids.append(int(token))
    return ids


def generate(
    policy: Policy,
    prompts: Sequence[str],
    *,
    n: int = 1,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    seed: int,
    batch_size: int = 16,
    stop: Sequence[str] = (),
) -> list[list[str]]:
    """The texts of :func:`generate_samples` (``result[i][k]``)."""
    samples = generate_samples(
        policy,
        prompts,
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        stop=stop,
    )
    return [[sample.text for sample in row] for row in samples]


def generate_samples(
    policy: Policy,
    prompts: Sequence[str],
    *,
    n: int = 1,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    seed: int,
    batch_size: int = 16,
    stop: Sequence[str] = (),
) -> list[list[Sample]]:
    """``n`` sampled responses for each (already formatted) prompt: ``result[i][k]``, with
    the transformers backend's batched generation.

    Sample ``k`` of prompt ``i`` is reproducible on its own (seeded by ``(seed, prompt,
    k)``); ``temperature=0`` is greedy (then all ``n`` samples are equal). Generation stops at
    an end token (:func:`end_token_ids`) or at any of the ``stop`` strings (which are cut
    off); a response that reached ``max_new_tokens`` first is marked ``truncated``.
    """
    torch, transformers = import_torch_stack()
    tokenizer, model = policy.tokenizer, policy.model
    end_ids = end_token_ids(model, tokenizer)
    jobs = [(i, k) for k in range(n) for i in range(len(prompts))]
    # Longest prompts first: batches of similar length waste less compute on padding.
    jobs.sort(key=lambda job: -len(prompts[job[0]]))
    results: list[list[Sample]] = [[Sample("")] * n for _ in prompts]
    params = DecodingParams(temperature=temperature, top_p=top_p)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            texts = [prompts[i] for i, _ in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
            encoded = {key: value.to(policy.device) for key, value in encoded.items()}
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "do_sample": False,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": end_ids,
            }
            if temperature > 0:
                generators = [
                    torch.Generator(device=policy.device).manual_seed(
                        sample_seed(seed, prompts[i], k)
                    )
                    for i, k in batch
                ]
                kwargs["logits_processor"] = transformers.LogitsProcessorList(
                    [_RowSampler(torch, generators, params)]
                )
            prompt_length = encoded["input_ids"].shape[1]
            if stop:
                kwargs["stopping_criteria"] = transformers.StoppingCriteriaList(
                    [_StopOnText(torch, tokenizer, prompt_length, stop)]
                )
            with torch.inference_mode():
                output = model.generate(**encoded, **kwargs)
            for (i, k), row in zip(batch, output[:, prompt_length:], strict=True):
                text = tokenizer.decode(row, skip_special_tokens=True)
                ended = any(int(token) in end_ids for token in row.tolist())
                stopped = any(s and s in text for s in stop)
                truncated = not ended and not stopped and len(row) >= max_new_tokens
                results[i][k] = Sample(cut_at_stop(text, stop).strip(), truncated)
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return results


def generate_with(
    policy: Policy, prompts: Sequence[str], spec: GenerationSpec, *, n: int, seed: int
) -> list[list[Sample]]:
    """:func:`generate_samples` with a recipe's :class:`GenerationSpec`, on the engine it
    names: vLLM (``simfarm.training.vllm_generation``) or transformers."""
    from simfarm.training.vllm_generation import choose_engine, vllm_generate

    if choose_engine(spec, policy.device) == "vllm":
        return vllm_generate(policy, prompts, spec, n=n, seed=seed)
    return generate_samples(
        policy,
        prompts,
        n=n,
        max_new_tokens=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=seed,
        batch_size=spec.batch_size,
        stop=spec.stop,
    )
