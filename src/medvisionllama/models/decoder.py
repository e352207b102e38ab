"""V_D: from the token grid back to class logits at the input resolution (MedVisionLlama, Section 3.2).

The patch size P is undone in stages, one per prime factor of P (P = 8: ×2, ×2, ×2; P = 6: ×2, ×3).
Each stage is a transposed convolution (kernel = stride = factor), instance norm, GELU, then a
3×3×3 convolution, instance norm, GELU; the width halves at each stage. A 1×1×1 convolution
gives the class logits.
"""

from __future__ import annotations

import torch
from torch import nn


def upsampling_factors(patch_size: int) -> list[int]:
    """Prime factors of ``patch_size``, smallest first (their product is ``patch_size``)."""
    if patch_size < 1:
        raise ValueError(f"patch_size {patch_size!r} must be >= 1")
    factors, rest, p = [], patch_size, 2
    while rest > 1:
        while rest % p == 0:
            factors.append(p)
            rest //= p
        p += 1
    return factors


def decoder_widths(hidden_size: int, patch_size: int, min_channels: int = 8) -> list[int]:
    """Output channels of each upsampling stage: E/2, E/4, ... (at least ``min_channels``)."""
    return [max(hidden_size // 2 ** (i + 1), min_channels) for i in range(len(upsampling_factors(patch_size)))]


class UpsampleStageBlock(nn.Module):
    """×factor upsampling: ConvTranspose3d(k = s = factor) -> IN -> GELU -> Conv3d 3³ -> IN -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=factor, stride=factor),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.GELU(),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.GELU(),
        )

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C_in, x, y, z) -> (B, C_out, f·x, f·y, f·z)."""
        return self.net(volume)


class DecoderBlock(nn.Module):
    """V_D: (B, E, GX, GY, GZ) -> logits (B, num_classes, P·GX, P·GY, P·GZ).

    Args:
        hidden_size: E.
        patch_size: P (the total upsampling).
        num_classes: output channels.
    """

    def __init__(self, hidden_size: int, patch_size: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes!r} must be >= 1")
        widths = decoder_widths(hidden_size, patch_size)
        stages, width = [], hidden_size
        for factor, out in zip(upsampling_factors(patch_size), widths):
            stages.append(UpsampleStageBlock(width, out, factor))
            width = out
        self.stages = nn.Sequential(*stages)
        self.out_channels = width
        self.head = nn.Conv3d(width, num_classes, kernel_size=1)

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, E, GX, GY, GZ) -> (logits (B, num_classes, X, Y, Z), features (B, ch, X, Y, Z))."""
        features = self.stages(volume)  # (B, ch, X, Y, Z); V_D in the paper's Figure 4
        return self.head(features), features
