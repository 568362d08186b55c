"""PPO from simulated feedback (ours: TRL deleted its PPO trainer), readable top to bottom.

One PPO step, as AlpacaFarm ran it (Ziegler et al. 2019's recipe):

1. **Rollout**: take ``batch_size`` prompts and sample one response each from the policy.
2. **Score**: a reward model, or a simfarm persona judging the response against a reference,
   gives each response one scalar score.
3. **Reference log-probs**: the same model with its LoRA adapters disabled is the frozen
   reference policy (no second copy in memory; full fine-tuning keeps a frozen copy instead).
4. **Rewards**: per token ``-kl_coef * (log pi - log pi_ref)``, plus the score at the last
   token. The KL term keeps the policy near the reference, where the reward is trustworthy.
5. **Advantages**: GAE over each response with the value head's estimates; whitened.
6. **Optimise**: ``ppo_epochs`` passes over the rollout in shuffled minibatches, minimising the
   clipped policy surrogate plus ``vf_coef`` times the clipped value loss.
7. **KL control**: fixed coefficient, or Ziegler's adaptive controller towards ``kl_target``;
   the rollout's KL is checked against ``kl_bound`` and reported.

Which KL estimate where: the **penalty** in the per-token reward is AlpacaFarm's (and TRL's
classic trainer's) sampled ``log pi - log pi_ref`` ("k1"), unchanged. The **reported** KL (the
``kl`` metric, the ``kl_bound`` check and the adaptive controller's input) is the ``k3``
estimator ``(r - 1) - log r`` with ``r = pi_ref / pi`` (:func:`ppo_math.k3_kl`): it estimates
the same KL(pi || pi_ref) without bias, but is never negative, where k1 of a batch can be
below zero. The k1 value is logged beside it as ``kl_k1``.

The arithmetic of steps 4-6 is in :mod:`simfarm.training.ppo_math`, the critic in
:mod:`simfarm.training.value_head`. Dropout is off throughout (the model stays in ``eval`` mode
while gradients flow): with dropout on, the first PPO epoch's importance ratio would not be 1,
and the clip would fire on noise.

This module imports torch only inside :func:`run_ppo`, so validating a config stays cheap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from simfarm.training.config import GenerationSpec, InstructionSource, RecipeConfig, _Strict
from simfarm.training.scoring import ScorerSpec
from simfarm.types import stable_digest

if TYPE_CHECKING:
    import torch

    from simfarm.training.run import RecipeOutcome, RunContext
    from simfarm.training.value_head import ValueHead


class PPOData(_Strict):
    """Prompts for rollouts (and, for pairwise scoring against the data, reference outputs)."""

    prompts: InstructionSource
    """Prompt set cycled through in a seeded order (e.g. the bundled unlabeled split)."""


class PPOHyperparameters(_Strict):
    """PPO's knobs; the defaults are AlpacaFarm's where it set one, else TRL's classic ones."""

    steps: int = Field(default=20, ge=1)
    """PPO steps (one rollout batch + its optimisation each)."""
    batch_size: int = Field(default=8, ge=1)
    """Rollouts (prompt + one sampled response) per step."""
    mini_batch_size: int = Field(default=4, ge=1)
    """Rollouts per gradient step within a PPO epoch."""
    ppo_epochs: int = Field(default=4, ge=1)
    """Optimisation passes over each rollout batch."""
    learning_rate: float = Field(default=1e-4, gt=0)
    """AdamW learning rate (policy trainables and value head)."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient norm clip."""
    gamma: float = Field(default=1.0, ge=0, le=1)
    """Discount over response tokens (1: the score counts equally for every token)."""
    lam: float = Field(default=0.95, ge=0, le=1)
    """GAE lambda: bias (0) vs variance (1) of the advantage estimate."""
    clip_range: float = Field(default=0.2, gt=0)
    """Policy ratio clip epsilon."""
    clip_range_value: float = Field(default=0.2, gt=0)
    """How far one batch may move the value estimate."""
    vf_coef: float = Field(default=0.1, ge=0)
    """Weight of the value loss against the policy loss."""
    whiten_advantages: bool = True
    """Normalise advantages per rollout batch (makes the step independent of reward scale)."""
    kl_coef: float = Field(default=0.0067, ge=0)
    """KL penalty coefficient (initial value when adaptive): AlpacaFarm used 0.0067 with
    simulated feedback and 0.02 with human feedback."""
    adaptive_kl: bool = False
    """Adapt kl_coef towards kl_target (Ziegler et al.'s proportional controller)."""
    kl_target: float = Field(default=6.0, gt=0)
    """Target KL (nats per response) of the adaptive controller."""
    kl_horizon: int = Field(default=10000, ge=1)
    """Samples over which the adaptive controller closes its error."""
    kl_bound: float = Field(default=10.0, gt=0)
    """Ceiling on the rollout KL to the reference (nats per response): each step reports
    whether it held (kl_within_bound); exceeding it stops the run when stop_on_kl_bound."""
    stop_on_kl_bound: bool = False
    """Stop (and keep the last good checkpoint) when the KL leaves its bound."""
    score_clip: float | None = Field(default=None, gt=0)
    """Clip scores to [-score_clip, score_clip] (reward models can emit outliers)."""


class PPOConfig(RecipeConfig):
    """PPO with a value head, per-token KL penalty to the reference, GAE and clipping."""

    method: Literal["ppo"] = "ppo"
    data: PPOData
    scorer: ScorerSpec = Field(default_factory=ScorerSpec)
    """Where rewards come from: a persona (live, cached) or a reward-model checkpoint."""
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(max_new_tokens=32, temperature=1.0)
    )
    """How rollouts are sampled (temperature also scales the logits PPO optimises); always
    by the trained model itself, so ``engine`` may not be "vllm"."""
    ppo: PPOHyperparameters = Field(default_factory=PPOHyperparameters)
    """The algorithm's knobs."""
    save_steps: int = Field(default=5, ge=1)
    """Save a resumable checkpoint (adapter, value head, optimiser, KL controller) every
    this many steps."""

    @model_validator(mode="after")
    def _mini_batches_divide(self) -> PPOConfig:
        if self.ppo.batch_size % self.ppo.mini_batch_size:
            raise ValueError(
                f"ppo.mini_batch_size ({self.ppo.mini_batch_size}) must divide "
                f"ppo.batch_size ({self.ppo.batch_size})"
            )
        if self.generation.temperature <= 0:
            raise ValueError("generation.temperature must be > 0 for PPO (sampling is the point)")
        if self.generation.engine == "vllm":
            raise ValueError(
                "generation.engine: PPO samples its rollouts with the model it trains (it needs "
                "their token ids and log-probs); use 'auto' or 'transformers'"
            )
        return self


# ---------------------------------------------------------------------------------------
# The rollout: what one batch of sampled responses carries through the step


@dataclass
class Rollout:
    """One step's sampled responses and everything computed from them before optimising."""

    input_ids: torch.Tensor
    """``[B, P + R]``: left-padded prompt then response (padded after its end)."""
    attention_mask: torch.Tensor
    prompt_length: int
    """P: every prompt is left-padded to this length."""
    response_mask: torch.Tensor
    """``[B, R]``: 1 on response tokens up to and including the end-of-sequence token."""
    logprobs: torch.Tensor
    """``[B, R]``: log pi_old of each response token (the rollout policy)."""
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    """``[B]``: the scorer's verdict per response."""
    texts: list[str]
    entropy: float
    """Mean per-token entropy of the rollout policy over real response tokens."""
    n_score_failures: int


def response_mask(response_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """1 up to and including each row's first end-of-sequence token, 0 after it."""
    import torch

    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= response_ids == eos
    # Tokens strictly after the first EOS: a cumulative count of EOS tokens *before* each one.
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (eos_before == 0).long()


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them (the
    same positions ``generate`` used while sampling)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


class PPOTrainer:
    """The PPO loop around a policy model, its value head and a scorer.

    ``model`` is the Hugging Face causal LM (peft-wrapped when LoRA is on); ``score`` maps
    (instructions, inputs, responses, references) to scores. The trainer does not know where
    checkpoints or metrics go: :func:`run_ppo` wires it to the framework.
    """

    def __init__(
        self,
        config: PPOConfig,
        model: Any,
        tokenizer: Any,
        value_head: ValueHead,
        score: Callable[..., Any],
        device: Any,
        reference_model: Any = None,
    ) -> None:
        import torch

        from simfarm.training.ppo_math import AdaptiveKLController, FixedKLController

        self.config = config
        self.hp = config.ppo
        self.model = model
        self.tokenizer = tokenizer
        self.value_head = value_head.to(device)
        self.score = score
        self.device = device
        self.uses_lora = hasattr(model, "disable_adapter") and config.lora.enabled
        self.reference_model: Any = reference_model
        if not self.uses_lora and reference_model is None:
            # Full fine-tuning: the reference must be a frozen copy taken before any update.
            import copy

            self.reference_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model.eval()  # dropout off for the whole run (see the module docstring)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        trainable += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(trainable, lr=self.hp.learning_rate)
        self.trainable = trainable
        self.kl_controller: FixedKLController | AdaptiveKLController = (
            AdaptiveKLController(self.hp.kl_coef, self.hp.kl_target, self.hp.kl_horizon)
            if self.hp.adaptive_kl
            else FixedKLController(self.hp.kl_coef)
        )
        # Generation stops at any of the tokenizer's and the model's end tokens (Gemma's
        # generation config adds <end_of_turn>); the response mask must know all of them.
        from simfarm.training.policy import end_token_ids

        self.eos_token_ids = end_token_ids(model, tokenizer)
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        )

    # -- forward passes ------------------------------------------------------------------

    def _forward(
        self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for the response positions ``[B, R, V]`` (temperature-scaled, as sampled)
        and the last hidden states at the positions that predict them ``[B, R, H]``.

        Only the last R + 1 positions' logits are computed (``logits_to_keep``): a 262k-entry
        vocabulary makes full-sequence logits the largest tensor of the step.
        """
        response_length = input_ids.shape[1] - prompt_length
        output = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=_position_ids(attention_mask),
            output_hidden_states=True,
            logits_to_keep=response_length + 1,
            use_cache=False,
        )
        logits = output.logits[:, :-1] / self.config.generation.temperature
        hidden = output.hidden_states[-1][:, prompt_length - 1 : -1]
        return logits, hidden

    def _reference_logprobs(self, rollout_ids: torch.Tensor, mask: torch.Tensor, p: int) -> Any:
        from simfarm.training.ppo_math import token_logprobs

        responses = rollout_ids[:, p:]
        if self.uses_lora:
            with self.model.disable_adapter():
                logits, _ = self._forward(self.model, rollout_ids, mask, p)
        else:
            logits, _ = self._forward(self.reference_model, rollout_ids, mask, p)
        return token_logprobs(logits, responses)

    # -- step 1-3: rollout ---------------------------------------------------------------

    def rollout(
        self,
        prompts: Sequence[str],
        instructions: Sequence[str],
        inputs: Sequence[str],
        references: Sequence[str],
        seed: int,
    ) -> Rollout:
        """Sample, score, and compute old/reference log-probs and values (no gradients)."""
        import torch

        from simfarm.training.ppo_math import entropy_from_logits, masked_mean, token_logprobs

        generation = self.config.generation
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(
            list(prompts), return_tensors="pt", padding=True, add_special_tokens=True
        ).to(self.device)
        prompt_length = encoded["input_ids"].shape[1]
        torch.manual_seed(seed)
        with torch.no_grad():
            sequences = self.model.generate(
                **encoded,
                do_sample=True,
                temperature=generation.temperature,
                top_p=generation.top_p,
                top_k=0,
                max_new_tokens=generation.max_new_tokens,
                pad_token_id=self.pad_token_id,
                eos_token_id=self.eos_token_ids,
            )
        responses = sequences[:, prompt_length:]
        mask = response_mask(responses, self.eos_token_ids)
        attention_mask = torch.cat([encoded["attention_mask"], mask], dim=1)
        float_mask = mask.float()
        lengths = mask.sum(dim=1).tolist()
        texts = [
            self.tokenizer.decode(row[: int(length)], skip_special_tokens=True)
            for row, length in zip(responses, lengths, strict=True)
        ]
        scored = self.score(instructions, inputs, texts, references)
        scores = torch.tensor(scored.scores, dtype=torch.float32, device=self.device)
        if self.hp.score_clip is not None:
            scores = scores.clamp(-self.hp.score_clip, self.hp.score_clip)
        with torch.no_grad():
            logits, hidden = self._forward(self.model, sequences, attention_mask, prompt_length)
            logprobs = token_logprobs(logits, responses)
            entropy = float(masked_mean(entropy_from_logits(logits), float_mask))
            del logits
            values = self.value_head(hidden)
            ref_logprobs = self._reference_logprobs(sequences, attention_mask, prompt_length)
        return Rollout(
            input_ids=sequences,
            attention_mask=attention_mask,
            prompt_length=prompt_length,
            response_mask=float_mask,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            scores=scores,
            texts=texts,
            entropy=entropy,
            n_score_failures=scored.n_failed,
        )

    # -- steps 4-7: rewards, advantages, optimisation, KL control --------------------------

    def optimise(self, rollout: Rollout, seed: int) -> dict[str, float]:
        """Turn one rollout into PPO updates; return the step's metrics."""
        import torch

        from simfarm.training import ppo_math

        hp = self.hp
        mask = rollout.response_mask
        rewards, per_token_kl = ppo_math.kl_penalised_rewards(
            rollout.scores, rollout.logprobs, rollout.ref_logprobs, mask, self.kl_controller.value
        )
        advantages, returns = ppo_math.generalized_advantages(
            rewards, rollout.values, mask, hp.gamma, hp.lam
        )
        if hp.whiten_advantages:
            advantages = ppo_math.masked_whiten(advantages, mask)

        generator = torch.Generator().manual_seed(seed)
        batch_size = rollout.input_ids.shape[0]
        stats: dict[str, list[float]] = {
            k: []
            for k in (
                "policy_loss",
                "value_loss",
                "clip_fraction",
                "value_clip_fraction",
                "approx_kl",
            )
        }
        p = rollout.prompt_length
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(batch_size, generator=generator)
            for start in range(0, batch_size, hp.mini_batch_size):
                rows = order[start : start + hp.mini_batch_size].to(self.device)
                logits, hidden = self._forward(
                    self.model, rollout.input_ids[rows], rollout.attention_mask[rows], p
                )
                new_logprobs = ppo_math.token_logprobs(logits, rollout.input_ids[rows, p:])
                new_values = self.value_head(hidden)
                policy = ppo_math.clipped_policy_loss(
                    new_logprobs,
                    rollout.logprobs[rows],
                    advantages[rows],
                    mask[rows],
                    hp.clip_range,
                )
                value = ppo_math.clipped_value_loss(
                    new_values,
                    rollout.values[rows],
                    returns[rows],
                    mask[rows],
                    hp.clip_range_value,
                )
                loss = policy.loss + hp.vf_coef * value.loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trainable, hp.max_grad_norm)
                self.optimizer.step()
                stats["policy_loss"].append(float(policy.loss))
                stats["value_loss"].append(float(value.loss))
                stats["clip_fraction"].append(policy.clip_fraction)
                stats["value_clip_fraction"].append(value.clip_fraction)
                stats["approx_kl"].append(policy.approx_kl)

        # The penalty above is k1 (log pi - log pi_ref per token, as AlpacaFarm and TRL's
        # classic trainer put it in the reward); the KL reported, bounded and fed to the
        # adaptive controller is k3, which estimates the same KL but is never negative.
        kl_per_response = float(
            ppo_math.k3_kl(rollout.logprobs, rollout.ref_logprobs, mask).sum(dim=1).mean()
        )
        kl_k1_per_response = float(per_token_kl.sum(dim=1).mean())
        kl_coef_used = self.kl_controller.value
        self.kl_controller.update(kl_per_response, batch_size)
        response_lengths = mask.sum(dim=1)
        metrics = {
            "mean_score": float(rollout.scores.mean()),
            "mean_reward": float((rewards.sum(dim=1)).mean()),
            "kl": kl_per_response,
            "kl_k1": kl_k1_per_response,
            "kl_coef": kl_coef_used,
            "kl_within_bound": float(kl_per_response <= hp.kl_bound),
            "entropy": rollout.entropy,
            "mean_response_tokens": float(response_lengths.mean()),
            "value_explained_variance": ppo_math.explained_variance(rollout.values, returns, mask),
            "score_failures": float(rollout.n_score_failures),
        }
        metrics.update({k: sum(v) / len(v) for k, v in stats.items()})
        return metrics

    # -- state for checkpoints -------------------------------------------------------------

    def save_state(self, folder: Path, step: int) -> None:
        """Everything beyond the policy weights that a resumed run needs."""
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        self.value_head.save(folder)
        torch.save(self.optimizer.state_dict(), folder / "ppo_optimizer.pt")
        state = {"step": step, "kl_controller": self.kl_controller.state_dict()}
        (folder / "ppo_state.json").write_text(json.dumps(state), encoding="utf-8")

    def load_state(self, folder: Path) -> int:
        """Restore optimiser, value head and KL controller; returns the step saved."""
        import torch

        from simfarm.training.value_head import ValueHead

        head = ValueHead.load(folder)
        self.value_head.load_state_dict(head.state_dict())
        self.optimizer.load_state_dict(
            torch.load(folder / "ppo_optimizer.pt", map_location=self.device, weights_only=True)
        )
        state = json.loads((folder / "ppo_state.json").read_text(encoding="utf-8"))
        self.kl_controller.load_state_dict(state["kl_controller"])
        return int(state["step"])


def prompt_batches(n_prompts: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The prompt indices of ``step``'s rollout batch: the prompts are cycled through in a new
    seeded permutation each epoch, so a resumed run sees exactly the batches it would have."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_prompts)
        order = list(range(n_prompts))
        random.Random(int(stable_digest(["ppo-order", seed, epoch])[:16], 16)).shuffle(order)
        indices.append(order[offset])
    return indices


def step_seed(seed: int, step: int, purpose: str) -> int:
    """A 63-bit seed for one step and purpose (sampling, minibatch order), stable across
    processes, so a resumed step repeats exactly."""
    return int(stable_digest([purpose, seed, step])[:15], 16)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder (``ppo_state.json`` is written last, so a
    folder without it was cut off mid-save and is ignored)."""
    if not checkpoints_dir.is_dir():
        return None
    complete = [
        (int(folder.name.split("-")[1]), folder)
        for folder in checkpoints_dir.glob("checkpoint-*")
        if folder.name.split("-")[1].isdigit() and (folder / "ppo_state.json").is_file()
    ]
    return max(complete)[1] if complete else None


def _save_checkpoint(trainer: PPOTrainer, checkpoints_dir: Path, step: int, keep: int) -> Path:
    """Write ``checkpoint-{step}`` atomically (temporary folder, then rename) and keep only the
    newest ``keep`` checkpoints."""
    final = checkpoints_dir / f"checkpoint-{step}"
    tmp = checkpoints_dir / f".tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainer.model.save_pretrained(tmp)
    trainer.save_state(tmp, step)  # ppo_state.json last: the folder's completeness marker
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    older = sorted(
        (int(f.name.split("-")[1]), f)
        for f in checkpoints_dir.glob("checkpoint-*")
        if f.name.split("-")[1].isdigit()
    )
    for _, folder in older[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
    return final


def initial_references(
    policy: Any, prompts: Sequence[str], generation: GenerationSpec, path: Path
) -> list[str]:
    """The starting policy's greedy response to each prompt, the reference a pairwise judge
    compares against when the data has none. Written to ``path`` once and read back on
    resume (by then the policy has changed, so regenerating would move the goalposts)."""
    if path.is_file():
        saved = [json.loads(line)["reference"] for line in path.read_text("utf-8").splitlines()]
        if len(saved) == len(prompts):
            return saved
    from simfarm.training.policy import generate

    outputs = generate(
        policy,
        prompts,
        n=1,
        max_new_tokens=generation.max_new_tokens,
        temperature=0.0,
        seed=0,
        batch_size=generation.batch_size,
    )
    refs = [sample[0] for sample in outputs]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "".join(json.dumps({"prompt_index": i, "reference": r}) + "\n" for i, r in enumerate(refs)),
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return refs


def _hidden_size(model: Any) -> int:
    config = model.config
    size: Any = getattr(config, "hidden_size", None)
    if size is None and hasattr(config, "get_text_config"):
        size = config.get_text_config().hidden_size
    return int(size)


def run_ppo(config: RecipeConfig, context: RunContext) -> RecipeOutcome:
    """The ``ppo`` recipe: load data, policy, value head and scorer; resume from the newest
    checkpoint; run the remaining steps, logging metrics and checkpointing; save the final
    adapter (or weights) with its value head into ``checkpoint/``."""
    import torch

    from simfarm.training.data import load_instructions
    from simfarm.training.policy import format_prompt, load_base_model, load_policy
    from simfarm.training.run import RecipeOutcome
    from simfarm.training.scoring import build_response_scorer
    from simfarm.training.value_head import ValueHead

    assert isinstance(config, PPOConfig)
    hp = config.ppo
    scorer_spec = config.scorer
    needs_data_reference = scorer_spec.kind == "annotator" and scorer_spec.reference == "data"
    examples = load_instructions(config.data.prompts, need_output=needs_data_reference)
    context.record_data("prompts", Path(config.data.prompts.path))
    context.record("ppo_version", 1)

    resume_from = latest_checkpoint(context.checkpoints_dir)
    # Seeded before the policy loads: a fresh LoRA adapter's A matrices are drawn from torch's
    # global generator. Unseeded, two runs of one config start from different adapters; the
    # first forward agrees (B is zero) but every update after it differs.
    torch.manual_seed(config.seed)
    policy = load_policy(config.model, config.lora, checkpoint=resume_from)
    device = torch.device(policy.device)
    reference_model = None
    if not config.lora.enabled:
        # Full fine-tuning: the reference is the untouched starting model, loaded on its own
        # (a resumed run's policy weights are no longer the reference).
        reference_model = load_base_model(config.model).eval().requires_grad_(False)
    torch.manual_seed(config.seed)
    value_head = ValueHead(_hidden_size(policy.model))
    score, scorer_id, judge_usage = build_response_scorer(scorer_spec, config.model, policy.device)
    if scorer_spec.kind == "annotator":
        context.record_persona(scorer_id)
    else:
        context.record_data("reward_model", scorer_spec.reward_model)
    chat = config.model.use_chat_template
    prompts = [
        format_prompt(policy.tokenizer, e.instruction, e.input, use_chat_template=chat)
        for e in examples
    ]
    if scorer_spec.reference == "initial_policy" and scorer_spec.kind == "annotator":
        if resume_from is not None and not (context.out_dir / "references.jsonl").is_file():
            raise RuntimeError(f"{context.out_dir}: references.jsonl is missing; cannot resume")
        context.report("ppo: reference responses", 0, len(prompts))
        references = initial_references(
            policy, prompts, config.generation, context.out_dir / "references.jsonl"
        )
    else:
        references = [e.output or "" for e in examples]

    trainer = PPOTrainer(
        config, policy.model, policy.tokenizer, value_head, score, device, reference_model
    )
    start = 0
    if resume_from is not None:
        start = trainer.load_state(resume_from)
        context.metrics.truncate_after(start, stage="ppo")
    tokens = 0
    for step in range(start, hp.steps):
        started = time.perf_counter()
        rows = prompt_batches(len(examples), hp.batch_size, config.seed, step)
        rollout = trainer.rollout(
            [prompts[i] for i in rows],
            [examples[i].instruction for i in rows],
            [examples[i].input for i in rows],
            [references[i] for i in rows],
            seed=step_seed(config.seed, step, "rollout"),
        )
        metrics = trainer.optimise(rollout, seed=step_seed(config.seed, step, "minibatch"))
        elapsed = time.perf_counter() - started
        step_tokens = int(rollout.response_mask.sum())
        tokens += step_tokens
        metrics["step_time_s"] = elapsed
        metrics["tokens_per_s"] = step_tokens / elapsed
        context.metrics.log(step + 1, metrics, stage="ppo")
        context.report("ppo", step + 1, hp.steps)
        out_of_bound = hp.stop_on_kl_bound and metrics["kl_within_bound"] == 0.0
        due = (step + 1) % config.save_steps == 0 or step + 1 == hp.steps
        if due and not out_of_bound:
            _save_checkpoint(trainer, context.checkpoints_dir, step + 1, keep=2)
        if out_of_bound:
            break

    final = context.checkpoint_dir
    policy.model.save_pretrained(final)
    policy.tokenizer.save_pretrained(final)
    trainer.value_head.save(final)
    return RecipeOutcome(
        final_metrics=summarise(context.metrics.read()),
        tokens=tokens or None,
        checkpoint=final,
        resumed=resume_from is not None,
        judge_usage=judge_usage if scorer_spec.kind == "annotator" else None,
    )


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Final metrics of a run: the last step's, plus the first step's score and whether the
    KL stayed within its bound at every step."""
    steps = [r for r in records if r.get("stage") == "ppo"]
    if not steps:
        return {}
    last = {k: float(v) for k, v in steps[-1].items() if isinstance(v, int | float)}
    last["first_mean_score"] = float(steps[0]["mean_score"])
    last["kl_within_bound_all_steps"] = float(all(r["kl_within_bound"] == 1.0 for r in steps))
    last["max_kl"] = max(float(r["kl"]) for r in steps)
    return last


__all__ = ["PPOConfig", "PPOData", "PPOHyperparameters", "PPOTrainer", "run_ppo"]
