"""The arithmetic of PPO for language models, as small pure functions on tensors.

Everything the PPO loop in :mod:`simfarm.training.ppo` computes from a rollout lives here, so
each step can be read (and tested) on its own. Shapes: ``[batch, response_length]`` for
per-token quantities, with a ``mask`` that is 1 on real response tokens and 0 on padding after
the end of a response. The formulas follow Ziegler et al. 2019 ("Fine-Tuning Language Models
from Human Preferences") and the PPO implementation AlpacaFarm used (TRL's classic
``PPOTrainer``, since deleted from TRL), which is why the per-token reward carries the KL
penalty and the score is added at the last token only.

torch is imported at module level: this module is only imported when PPO actually runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1 (padding does not dilute it)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the masked positions (Bessel-corrected, as TRL's was)."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    variance = masked_mean((values - mean) ** 2, mask)
    if count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """Normalise to unit variance (and zero mean unless ``shift_mean`` is False) over the
    masked positions. Whitening the advantages makes the policy step size independent of the
    reward's scale, which differs by orders of magnitude between a reward model and a judge."""
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` (``[B, T, V]`` and ``[B, T]`` -> ``[B, T]``), computed
    in float32 so bfloat16 logits do not quantise the importance ratio."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logprobs, 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution, ``[B, T, V] -> [B, T]`` (reported, not
    optimised: a collapsing entropy is the first sign of reward hacking)."""
    logits = logits.float()
    logprobs = F.log_softmax(logits, dim=-1)
    return -(logprobs.exp() * logprobs).sum(dim=-1)


def kl_penalised_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: ``-kl_coef * (log pi - log pi_ref)`` at every response token, plus the
    sequence's score at its last real token.

    The KL term is the sampled per-token estimate of KL(pi || pi_ref); putting it in the reward
    (rather than in the loss) is what lets GAE credit-assign it like any other reward. Returns
    ``(rewards, per_token_kl)``.
    """
    per_token_kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * per_token_kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last] += scores
    return rewards * mask, per_token_kl


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token ``(r - 1) - log r`` with ``r = pi_ref / pi`` (Schulman's "k3" estimator of
    KL(pi || pi_ref) from tokens sampled from pi): unbiased like the plain ``log pi - log
    pi_ref`` ("k1") and, unlike it, never negative on any sample, so a reported KL below zero
    (which k1 gives whenever the sampled tokens happen to be likelier under the reference)
    cannot occur. Computed in float32; 0 on padding."""
    log_ratio = (ref_logprobs.float() - logprobs.float()).clamp(max=20.0)
    return (torch.expm1(log_ratio) - log_ratio) * mask


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016) backwards over the response; returns ``(advantages, returns)``.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    with ``V`` and ``A`` taken as 0 past a response's last token (the masked tail is terminal).
    ``returns = A + V`` are the value targets.
    """
    values = values * mask
    length = rewards.shape[1]
    advantages_reversed = []
    last_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_advantage = (delta + gamma * lam * last_advantage) * mask[:, t]
        advantages_reversed.append(last_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    return advantages.detach(), returns.detach()


@dataclass
class PolicyLossStats:
    loss: torch.Tensor
    clip_fraction: float
    """Share of tokens whose ratio left ``[1 - eps, 1 + eps]`` in the direction the clip
    stops: high values mean the step size (learning rate, epochs) is too large."""
    approx_kl: float
    """``0.5 * mean((log ratio)^2)``: how far this epoch moved from the rollout policy."""


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> PolicyLossStats:
    """PPO's clipped surrogate: ``max(-A * r, -A * clip(r, 1-eps, 1+eps))`` averaged over real
    tokens, where ``r = pi / pi_old``. The clip removes the incentive to move the ratio past
    ``1 +- eps`` within one rollout batch, which is what makes several epochs on the same
    samples safe."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLossStats(loss, float(clip_fraction.detach()), float(approx_kl.detach()))


@dataclass
class ValueLossStats:
    loss: torch.Tensor
    clip_fraction: float


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> ValueLossStats:
    """``0.5 * max((V - R)^2, (V_clipped - R)^2)``, ``V_clipped`` kept within ``clip_range_value``
    of the rollout's value: the value head cannot jump on one batch's noisy returns."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    losses = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask)
    clip_fraction = masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask)
    return ValueLossStats(loss, float(clip_fraction.detach()))


class FixedKLController:
    """A constant KL coefficient (AlpacaFarm's choice: 0.0067 simulated, 0.02 human)."""

    def __init__(self, coef: float) -> None:
        self.value = coef

    def update(self, observed_kl: float, n_samples: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller: move the coefficient so the observed KL tracks
    ``target`` over a ``horizon`` of samples; the error is clipped to +-20% per update so one
    noisy batch cannot swing it."""

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        self.value = init_coef
        self.target = target
        self.horizon = horizon

    def update(self, observed_kl: float, n_samples: int) -> None:
        error = min(max(observed_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R): 1 is a perfect value head, <= 0 no better than a constant."""
    variance = float(masked_var(returns, mask))
    if variance == 0 or math.isnan(variance):
        return float("nan")
    return 1.0 - float(masked_var(returns - values, mask)) / variance
