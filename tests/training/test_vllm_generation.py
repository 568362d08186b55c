"""vLLM generation for the recipes, without vLLM (it needs a GPU): engine choice, config
validation, the SamplingParams and output translation, and the missing-extra error. The
vLLM engine itself runs only on a GPU machine (.gpu/check_recipes.sh)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from simfarm.errors import ConfigError, MissingExtraError
from simfarm.training.config import GenerationSpec, ModelSpec, VLLMGenerationOptions
from simfarm.training.policy import Policy, Sample, generate_with, sample_seed
from simfarm.training.vllm_generation import (
    choose_engine,
    lora_rank_limit,
    sample_from_output,
    sampling_params_kwargs,
)

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None
needs_no_vllm = pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")


# Shapes of vLLM's RequestOutput / CompletionOutput (the fields read here).
@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class RequestOutput:
    request_id: str
    outputs: list[CompletionOutput]


@needs_no_vllm
def test_auto_falls_back_to_transformers_and_vllm_names_its_extra() -> None:
    assert choose_engine(GenerationSpec(engine="auto"), "cpu") == "transformers"
    assert choose_engine(GenerationSpec(engine="auto"), "cuda") == "transformers"
    assert choose_engine(GenerationSpec(engine="transformers"), "cuda:0") == "transformers"
    with pytest.raises(MissingExtraError, match=r"simfarm\[vllm\]") as caught:
        choose_engine(GenerationSpec(engine="vllm"), "cuda")
    assert "generation.engine" in str(caught.value)
    # Through the recipes' one entry point, before any model is touched.
    policy = Policy(model=None, tokenizer=None, spec=ModelSpec(), device="cuda")
    with pytest.raises(MissingExtraError, match=r"pip install 'simfarm\[vllm\]'"):
        generate_with(policy, ["p"], GenerationSpec(engine="vllm"), n=2, seed=0)


def test_engine_field_is_validated_with_its_key(tmp_path: Path) -> None:
    from simfarm.training.config import load_recipe_config

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "a"}\n', encoding="utf-8")
    recipe = tmp_path / "bon.yaml"
    recipe.write_text(
        f"method: best_of_n\ndata: {{prompts: {{path: {prompts}}}}}\n", encoding="utf-8"
    )
    config = load_recipe_config(recipe, ["generation.engine=vllm"])
    assert config.generation.engine == "vllm"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"bon.yaml: generation.engine: Input should be"):
        load_recipe_config(recipe, ["generation.engine=vlm"])
    with pytest.raises(ConfigError, match=r"generation.vllm.gpu_memory_utilization"):
        load_recipe_config(recipe, ["generation.vllm.gpu_memory_utilization=1.5"])


def test_sampling_params_are_one_seeded_request_per_sample() -> None:
    spec = GenerationSpec(max_new_tokens=48, temperature=0.8, top_p=0.9, stop=["###"])
    first = sampling_params_kwargs(spec, 7, "prompt A", 0)
    assert first == {
        "n": 1,
        "temperature": 0.8,
        "top_p": 0.9,
        "max_tokens": 48,
        "stop": ["###"],
        "seed": sample_seed(7, "prompt A", 0) % (2**31 - 1),
        "logprobs": None,
    }
    seeds = {sampling_params_kwargs(spec, 7, p, k)["seed"] for p in ("A", "B") for k in range(4)}
    assert len(seeds) == 8  # every (prompt, sample index) its own stream
    assert all(0 <= s < 2**31 for s in seeds)
    assert sampling_params_kwargs(GenerationSpec(stop=[]), 0, "x", 0)["stop"] is None


def test_outputs_become_samples_with_the_length_cut_marked() -> None:
    stop = ["###"]
    ended = sample_from_output(
        RequestOutput("0", [CompletionOutput(0, " Hi. ", [1], "stop")]), stop
    )
    assert ended == Sample("Hi.", truncated=False)
    cut = sample_from_output(
        RequestOutput("1", [CompletionOutput(0, "and then", [2], "length")]), stop
    )
    assert cut == Sample("and then", truncated=True)
    leaked = RequestOutput("2", [CompletionOutput(0, "Yes.\n### Instruction", [3], "stop")])
    assert sample_from_output(leaked, stop).text == "Yes."
    with pytest.raises(RuntimeError, match="aborted"):
        sample_from_output(RequestOutput("3", [CompletionOutput(0, "", [], "abort")]), stop)
    with pytest.raises(RuntimeError, match="no output"):
        sample_from_output(RequestOutput("4", []), stop)


def test_lora_rank_limit_fits_the_adapter() -> None:
    options = VLLMGenerationOptions()
    assert lora_rank_limit(4, options) == 8
    assert lora_rank_limit(8, options) == 8
    assert lora_rank_limit(12, options) == 16
    assert lora_rank_limit(12, VLLMGenerationOptions(max_lora_rank=64)) == 64
    with pytest.raises(ConfigError, match="max_lora_rank: 8 is below the adapter's rank 16"):
        lora_rank_limit(16, VLLMGenerationOptions(max_lora_rank=8))
    with pytest.raises(ConfigError, match=r"lora\.r: vLLM serves"):
        lora_rank_limit(1024, options)


@needs_no_vllm
def test_a_recipe_asking_for_vllm_fails_before_loading_a_model(tmp_path: Path) -> None:
    from simfarm.training.run import run_recipe

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(
        "method: dpo\n"
        "model: {name_or_path: /nonexistent/model}\n"
        f"data: {{feedback: {{prompts: {{path: {prompts}}}, generation: {{engine: vllm}}}}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(MissingExtraError, match=r"data\.feedback\.generation\.engine: vllm"):
        run_recipe(recipe, tmp_path / "out")


def test_ppo_refuses_vllm_rollouts(tmp_path: Path) -> None:
    from simfarm.training.config import load_recipe_config

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "a"}\n', encoding="utf-8")
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(f"method: ppo\ndata: {{prompts: {{path: {prompts}}}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ppo.yaml: .*PPO samples its rollouts"):
        load_recipe_config(recipe, ["generation.engine=vllm"])
