"""Token-level building blocks of the ViT: patch embedding, multi-scale fusion, MLP.

Shapes: B batch, C_in input channels, (X, Y, Z) the input volume, P the patch size,
(GX, GY, GZ) = (X/P, Y/P, Z/P) the token grid, T = GX*GY*GZ tokens, E the embedding size.
Tokens are flattened from the grid in C order (x slowest, z fastest).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(B, T, E) -> (B, E, GX, GY, GZ)."""
    batch, count, channels = tokens.shape
    if count != math.prod(grid):
        raise ValueError(f"{count} tokens do not fill a grid of {grid}")
    return tokens.transpose(1, 2).reshape(batch, channels, *grid)  # (B, E, GX, GY, GZ)


def grid_to_tokens(volume: torch.Tensor) -> torch.Tensor:
    """(B, E, GX, GY, GZ) -> (B, T, E)."""
    return volume.flatten(2).transpose(1, 2)  # (B, T, E)


class PatchEmbeddingBlock(nn.Module):
    """Non-overlapping P×P×P patches -> E (a strided Conv3d), plus a learned position embedding
    (MedVisionLlama, Section 3.2). The position table is made for ``img_size``; other inputs
    (any size divisible by P) get it trilinearly resampled to their grid.

    Args:
        in_channels: C_in (image modalities).
        hidden_size: E.
        img_size: (X, Y, Z) the model is built for; each divisible by ``patch_size``.
        patch_size: P.
        dropout: dropout on the embedded tokens (training only).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        img_size: tuple[int, int, int],
        patch_size: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_size < 1 or patch_size < 1:
            raise ValueError(f"in_channels, hidden_size, patch_size must be >= 1, got {(in_channels, hidden_size, patch_size)}")
        if len(img_size) != 3 or any(s % patch_size for s in img_size):
            raise ValueError(f"img_size {tuple(img_size)} must be 3 sizes divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = tuple(s // patch_size for s in img_size)
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, math.prod(self.grid), hidden_size))  # (1, T, E)
        nn.init.trunc_normal_(self.position, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def grid_for(self, spatial: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid of an input of spatial size ``spatial``; ValueError if P does not divide it."""
        if len(spatial) != 3 or any(s % self.patch_size for s in spatial):
            raise ValueError(f"input size {tuple(spatial)} is not 3D or not divisible by patch_size {self.patch_size}")
        return tuple(s // self.patch_size for s in spatial)

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(1, T, E) for ``grid``: the learned table, resampled when ``grid`` differs from it."""
        if tuple(grid) == self.grid:
            return self.position
        table = tokens_to_grid(self.position, self.grid)  # (1, E, GX0, GY0, GZ0)
        table = F.interpolate(table, size=grid, mode="trilinear", align_corners=False)  # (1, E, GX, GY, GZ)
        return grid_to_tokens(table)  # (1, T, E)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(B, C_in, X, Y, Z) -> tokens (B, T, E) and their grid (GX, GY, GZ)."""
        grid = self.grid_for(tuple(x.shape[2:]))
        tokens = grid_to_tokens(self.proj(x))  # (B, E, GX, GY, GZ) -> (B, T, E)
        return self.dropout(tokens + self.position_embedding(grid)), grid


class MultiScaleFusionBlock(nn.Module):
    """Multi-scale fusion on the token grid (MedVisionLlama, Section 3.2): depthwise 3D
    convolutions with kernels 3, 5 and 7 (one filter per channel each), concatenated and fused by
    a 1×1×1 convolution, added to the tokens (residual).

    Args:
        hidden_size: E.
        kernel_sizes: the scales (odd).
    """

    def __init__(self, hidden_size: int, kernel_sizes: tuple[int, ...] = (3, 5, 7)) -> None:
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes {tuple(kernel_sizes)} must be odd and >= 1")
        self.norm = nn.LayerNorm(hidden_size)
        self.branches = nn.ModuleList(
            nn.Conv3d(hidden_size, hidden_size, kernel_size=k, padding=k // 2, groups=hidden_size) for k in kernel_sizes
        )
        self.fuse = nn.Conv3d(hidden_size * len(kernel_sizes), hidden_size, kernel_size=1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, T, E) on ``grid`` -> (B, T, E)."""
        volume = tokens_to_grid(self.norm(tokens), grid)  # (B, E, GX, GY, GZ)
        scales = torch.cat([branch(volume) for branch in self.branches], dim=1)  # (B, 3E, GX, GY, GZ)
        return tokens + grid_to_tokens(self.fuse(scales))  # (B, T, E)


class MLPBlock(nn.Module):
    """Transformer MLP: Linear E -> hidden, GELU, dropout, Linear hidden -> E, dropout."""

    def __init__(self, hidden_size: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout {dropout!r} must be in [0, 1)")
        self.net = nn.Sequential(
            nn.Linear(hidden_size, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, hidden_size),
            nn.Dropout(dropout),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        return self.net(tokens)
