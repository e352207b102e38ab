"""Inference helpers shared by validation, evaluation and ``mvl predict``.

- :func:`resolve_device` and :func:`autocast`: CPU float32; CUDA with bf16 autocast.
- :func:`predict_logits`: one forward pass when the volume has the model's input size, MONAI
  ``sliding_window_inference`` (Gaussian blending, 25 % overlap) when it does not (``full``
  preprocessing, or any volume larger or smaller than ``img_size``).
- :func:`build_run_model` / :func:`load_run_model`: rebuild the model a checkpoint describes.
  The frozen LLM block is rebuilt from its source; a ``-random`` block is re-drawn from the run's
  seed (``torch.manual_seed(seed)`` right before ``build_model``), so training, evaluation and
  prediction see the same random weights.
- :func:`activation_maps`: the channel-mean |activation| at V_E, V_LLM and V_D on one axial slice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medvisionllama.errors import InputError


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device!r}: CUDA is not available on this machine")
    if dev.type not in {"cpu", "cuda"}:
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing (float32) on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_run_model(model_config: dict[str, Any], seed: int, device: torch.device, *, load_weights: bool = True):
    """Build the model of a run (seeded, so a ``-random`` frozen block is the run's own)."""
    from medvisionllama.models import ModelConfig, build_model

    config = ModelConfig.from_dict(dict(model_config))
    torch.manual_seed(int(seed))
    return build_model(config, device=device, load_weights=load_weights), config


def load_run_model(checkpoint: dict[str, Any], device: torch.device, *, llm_weights: str | None = None):
    """The model of a loaded checkpoint, with its trained weights, in eval mode.

    The frozen LLM layer is read again from the source the checkpoint records, or from
    ``llm_weights`` when given (e.g. where the run's ``results/llm/*.safetensors`` is elsewhere).
    """
    model_config = dict(checkpoint["model_config"])
    if llm_weights is not None:
        model_config["llm_weights"] = llm_weights
    model, config = build_run_model(model_config, checkpoint["seed"], device)
    model.load_trainable_state_dict(checkpoint["model_state"])
    model.eval()
    return model, config


def predict_logits(
    model: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    device: torch.device,
    *,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Logits (B, K, X, Y, Z) float32 on CPU of ``image`` (B, C, X, Y, Z), in eval/no-grad mode of the caller.

    The volume goes through the model directly when its spatial shape equals ``roi_size``;
    otherwise through ``sliding_window_inference`` with windows of ``roi_size``.
    """
    image = image.to(device, non_blocking=True)
    with autocast(device):
        if tuple(image.shape[2:]) == tuple(roi_size):
            logits = model(image)
        else:
            from monai.inferers import sliding_window_inference  # imported only when needed: seconds

            logits = sliding_window_inference(
                image, roi_size=list(roi_size), sw_batch_size=sw_batch_size, predictor=model,
                overlap=overlap, mode="gaussian", sw_device=device, device=device,
            )
    return torch.as_tensor(logits).float().cpu()


def largest_foreground_slice(label: np.ndarray) -> int:
    """Axial (z) index with the most foreground voxels in ``label`` (X, Y, Z); the middle slice if none."""
    per_slice = (np.asarray(label) > 0).sum(axis=(0, 1))
    return int(per_slice.argmax()) if per_slice.any() else label.shape[2] // 2


def _activation_slice(feature: torch.Tensor, spatial: Sequence[int], z: int) -> np.ndarray:
    """Channel-mean |feature| on axial slice ``z`` of a volume of shape ``spatial`` (X, Y, Z), as (X, Y).

    ``feature`` is (1, C, x, y, z) (a feature map) or (1, T, E) (tokens on a grid of T = x*y*z,
    with x:y:z in the proportions of ``spatial``).
    """
    f = feature.detach().float()
    if f.ndim == 3:  # (1, T, E) tokens -> (1, 1, gx, gy, gz)
        t = f.shape[1]
        grid = _token_grid(t, spatial)
        f = f.abs().mean(dim=2).reshape(1, 1, *grid)  # (1, 1, gx, gy, gz)
    elif f.ndim == 5:  # (1, C, x, y, z)
        f = f.abs().mean(dim=1, keepdim=True)  # (1, 1, x, y, z)
    else:
        raise ValueError(f"feature of shape {tuple(f.shape)}: expected (1, T, E) or (1, C, x, y, z)")
    f = F.interpolate(f, size=tuple(spatial), mode="trilinear", align_corners=False)  # (1, 1, X, Y, Z)
    return f[0, 0, :, :, z].cpu().numpy().astype(np.float32)


def _token_grid(num_tokens: int, spatial: Sequence[int]) -> tuple[int, int, int]:
    """The (gx, gy, gz) token grid with gx*gy*gz = ``num_tokens`` and the proportions of ``spatial``."""
    x, y, z = spatial
    for p in range(1, max(spatial) + 1):
        if x % p == 0 and y % p == 0 and z % p == 0 and (x // p) * (y // p) * (z // p) == num_tokens:
            return x // p, y // p, z // p
    raise ValueError(f"{num_tokens} tokens do not tile a volume of shape {tuple(spatial)} with cubic patches")


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
