"""Attention blocks of the ViT encoder and the encoder block that combines them.

Hybrid Attention (MedVisionLlama, Section 3.2, Figure 2) = Efficient Attention (global context,
linear in the number of tokens) + Channel Attention (re-weights the E feature channels). The
order of the two is a strategy (Appendix A): ``sequential`` (the paper's default), ``parallel``,
``interleaved``. The ablation (Table 3) swaps Hybrid Attention for ``spatial`` attention, which we
read as standard multi-head softmax self-attention over the token positions.
Shapes: B batch, T tokens, E embedding, H heads, D = E / H head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvisionllama.models.blocks import MLPBlock
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION

ATTENTION_STRATEGIES = ATTENTIONS  # the vocabulary's names; kept as the models package's public name


def _check_heads(hidden_size: int, num_heads: int) -> None:
    if num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads!r}")


class EfficientAttentionBlock(nn.Module):
    """Efficient Attention (Shen et al., "Efficient Attention: Attention with Linear
    Complexities", WACV 2021): per head, E(Q, K, V) = softmax_features(Q) · (softmax_positions(K)ᵀ V).
    Queries are normalised over their D features, keys over the T positions for each channel; the
    D×D context is formed first, so cost and memory are linear in T.

    Args:
        hidden_size: E.
        num_heads: H (E divisible by H).
        dropout: dropout on the output projection (training only).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check_heads(hidden_size, num_heads)
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        batch, count, width = tokens.shape
        qkv = self.qkv(tokens).view(batch, count, 3, self.num_heads, width // self.num_heads)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        q = q.softmax(dim=-1)  # over each query's D features
        k = k.softmax(dim=-2)  # over the T positions, per channel
        context = k.transpose(-2, -1) @ v  # (B, H, D, D)
        out = (q @ context).transpose(1, 2).reshape(batch, count, width)  # (B, H, T, D) -> (B, T, E)
        return self.dropout(self.proj(out))


class ChannelAttentionBlock(nn.Module):
    """Channel attention as in CBAM (Woo et al., ECCV 2018) on tokens: a shared MLP (E -> E/r ->
    E) over the average- and the max-pooled token features, summed, a sigmoid gate per channel,
    multiplied onto every token.

    Args:
        hidden_size: E.
        reduction: r (hidden width max(E // r, 1)).
    """

    def __init__(self, hidden_size: int, reduction: int = 8) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction {reduction!r} must be >= 1")
        hidden = max(hidden_size // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, hidden_size, bias=False))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        avg = tokens.mean(dim=1)  # (B, E)
        peak = tokens.amax(dim=1)  # (B, E)
        gate = torch.sigmoid(self.mlp(avg) + self.mlp(peak))  # (B, E)
        return tokens * gate.unsqueeze(1)  # (B, T, E)


class SpatialAttentionBlock(nn.Module):
    """Standard multi-head softmax self-attention over token positions (the ablation, Table 3):
    cost quadratic in T. Non-causal; dropout on the attention weights only while training.

    Args:
        hidden_size: E.
        num_heads: H.
        dropout: attention and projection dropout.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check_heads(hidden_size, num_heads)
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        batch, count, width = tokens.shape
        qkv = self.qkv(tokens).view(batch, count, 3, self.num_heads, width // self.num_heads)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, count, width)  # (B, H, T, D) -> (B, T, E)
        return self.dropout(self.proj(out))


class EncoderBlock(nn.Module):
    """One ViT encoder block (MedVisionLlama, Figure 2): pre-norm attention with residuals, then a
    pre-norm MLP with a residual. ``attention`` picks the arrangement (EA: efficient attention,
    CA: channel attention, SA: spatial attention; every step is ``x = x + step(norm(x))``):

    - ``hybrid-sequential``: EA, then CA.
    - ``hybrid-parallel``: EA and CA on the same normed input, summed (one norm fewer).
    - ``hybrid-interleaved``: EA, CA, EA, CA (two of each, separate weights: the largest variant,
      as in Appendix Table 1).
    - ``spatial``: SA alone.

    Args:
        hidden_size: E.
        num_heads: H.
        mlp_dim: MLP width.
        attention: one of ATTENTION_STRATEGIES.
        channel_reduction: r of the channel attention.
        dropout: dropout rate (training only).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        attention: str = DEFAULT_ATTENTION,
        channel_reduction: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_STRATEGIES:
            raise ValueError(f"attention {attention!r} is not one of {ATTENTION_STRATEGIES}")
        self.attention = attention
        if attention == "spatial":
            kinds = ["spatial"]
        elif attention == "hybrid-interleaved":
            kinds = ["efficient", "channel", "efficient", "channel"]
        else:
            kinds = ["efficient", "channel"]
        self.steps = nn.ModuleList()
        for kind in kinds:
            if kind == "efficient":
                self.steps.append(EfficientAttentionBlock(hidden_size, num_heads, dropout))
            elif kind == "channel":
                self.steps.append(ChannelAttentionBlock(hidden_size, channel_reduction))
            else:
                self.steps.append(SpatialAttentionBlock(hidden_size, num_heads, dropout))
        num_norms = 1 if attention == "hybrid-parallel" else len(kinds)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_norms))
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = MLPBlock(hidden_size, mlp_dim, dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        x = tokens
        if self.attention == "hybrid-parallel":
            normed = self.norms[0](x)
            x = x + self.steps[0](normed) + self.steps[1](normed)
        else:
            for norm, step in zip(self.norms, self.steps):
                x = x + step(norm(x))
        return x + self.mlp(self.mlp_norm(x))
