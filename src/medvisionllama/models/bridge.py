"""The bridge between encoder and decoder: V_L1 -> V_LLM -> V_L2 (MedVisionLlama, Eq. 2).

V_L1 (Linear E -> d) adapts the encoder tokens to the LLM's width, V_LLM mixes them, V_L2 (Linear
d -> E) maps back. As in R-LLM (Pang et al., "Frozen Transformers in Language Models Are
Effective Visual Encoder Layers", ICLR 2024) the block is applied with a residual on the adapted
tokens: ``V_L2(V_LLM(V_L1(w)) + V_L1(w))``. The ``mlp`` variant (Table 3, ViT + MLP) puts GELU +
LayerNorm where V_LLM was, with the same residual.
"""

from __future__ import annotations

import torch
from torch import nn

from medvisionllama.llm.block import FrozenLLMBlock


class BridgeBlock(nn.Module):
    """V_L1 -> mixer -> (+ residual) -> V_L2 on tokens.

    Args:
        hidden_size: E (ViT width).
        mixer: V_LLM (a :class:`FrozenLLMBlock`) or any (B, T, d) -> (B, T, d) module.
        mixer_size: d (the mixer's width).
    """

    def __init__(self, hidden_size: int, mixer: nn.Module, mixer_size: int) -> None:
        super().__init__()
        if hidden_size < 1 or mixer_size < 1:
            raise ValueError(f"hidden_size {hidden_size!r} and mixer_size {mixer_size!r} must be >= 1")
        self.l1 = nn.Linear(hidden_size, mixer_size)  # V_L1
        self.mixer = mixer  # V_LLM (frozen) or GELU + LayerNorm
        self.l2 = nn.Linear(mixer_size, hidden_size)  # V_L2

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, E) -> (tokens (B, T, E), mixer output with residual (B, T, d) = V_LLM's features)."""
        adapted = self.l1(tokens)  # (B, T, d)
        mixed = self.mixer(adapted) + adapted  # (B, T, d): llm(x) + x
        return self.l2(mixed), mixed


def mlp_mixer(size: int) -> nn.Module:
    """The ``mlp`` variant's stand-in for V_LLM: GELU then LayerNorm (Section 4.4.1)."""
    return nn.Sequential(nn.GELU(), nn.LayerNorm(size))


def llm_bridge(hidden_size: int, block: FrozenLLMBlock) -> BridgeBlock:
    """V_L1 -> frozen LLM layer -> V_L2, with d = the LLM's hidden size."""
    return BridgeBlock(hidden_size, block, block.hidden_size)
