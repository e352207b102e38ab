"""Inference helpers of evaluation and ``mvl predict`` that training does not need:
:func:`largest_foreground_slice` and :func:`activation_maps` (the channel-mean |activation| at
V_E, V_LLM and V_D on one axial slice). Building, loading and running a run's model lives in
:mod:`medvisionllama.runtime`, which training shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medvisionllama.runtime import autocast


def largest_foreground_slice(label: np.ndarray) -> int:
    """Axial (z) index with the most foreground voxels in ``label`` (X, Y, Z); the middle slice if none."""
    per_slice = (np.asarray(label) > 0).sum(axis=(0, 1))
    return int(per_slice.argmax()) if per_slice.any() else label.shape[2] // 2


def _activation_slice(feature: torch.Tensor, spatial: Sequence[int], z: int) -> np.ndarray:
    """Channel-mean |feature| on axial slice ``z`` of a volume of shape ``spatial`` (X, Y, Z), as (X, Y).

    ``feature`` is a feature map (1, C, x, y, z): the model returns every level as a volume.
    """
    f = feature.detach().float()
    if f.ndim != 5:
        raise ValueError(f"feature of shape {tuple(f.shape)}: expected (1, C, x, y, z)")
    f = f.abs().mean(dim=1, keepdim=True)  # (1, 1, x, y, z)
    f = F.interpolate(f, size=tuple(spatial), mode="trilinear", align_corners=False)  # (1, 1, X, Y, Z)
    return f[0, 0, :, :, z].cpu().numpy().astype(np.float32)


@torch.no_grad()
def activation_maps(model: torch.nn.Module, image: torch.Tensor, z: int, device: torch.device) -> dict[str, np.ndarray]:
    """``{"act_V_E", "act_V_LLM" (when the model has a bridge), "act_V_D"}``: (X, Y) maps of slice ``z``.

    ``image`` (1, C, X, Y, Z) must have the model's input size (crop or resize before calling).
    """
    model.eval()
    with autocast(device):
        _, features = model(image.to(device), return_features=True)
    spatial = tuple(image.shape[2:])
    out = {}
    for name in ("V_E", "V_LLM", "V_D"):
        feature = features.get(name)
        if feature is not None:
            out[f"act_{name}"] = _activation_slice(feature, spatial, z)
    return out
