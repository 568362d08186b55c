"""The PPO critic: one linear layer on the policy's last hidden state.

A separate critic network would double the memory of the smallest useful setup; sharing the
policy's trunk (the design of Ziegler et al. and of TRL's old ``AutoModelForCausalLMWithValueHead``)
costs one ``hidden_size x 1`` layer. The head is kept in float32 whatever the policy's dtype, so
value regression targets (returns of order 1) are not quantised by bfloat16.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

VALUE_HEAD_FILE = "value_head.pt"
"""File name of the head's weights inside a PPO checkpoint folder."""


class ValueHead(nn.Module):
    """``V(s_t) = w . h_t + b`` for every position's last-layer hidden state ``h_t``."""

    def __init__(self, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, 1)
        # Start near zero: an untrained critic predicting large values would make the first
        # advantages (and so the first policy steps) arbitrary.
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, T, H] -> [B, T]``."""
        return self.linear(self.dropout(hidden_states.float())).squeeze(-1)

    def save(self, folder: Path) -> Path:
        path = folder / VALUE_HEAD_FILE
        torch.save({"hidden_size": self.hidden_size, "state_dict": self.state_dict()}, path)
        return path

    @classmethod
    def load(cls, folder: Path) -> ValueHead:
        saved = torch.load(folder / VALUE_HEAD_FILE, map_location="cpu", weights_only=True)
        head = cls(int(saved["hidden_size"]))
        head.load_state_dict(saved["state_dict"])
        return head
