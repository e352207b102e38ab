"""A run's model at work, shared by training, evaluation and ``mvl predict``.

- :func:`resolve_device` and :func:`autocast`: CPU float32; CUDA with bf16 autocast.
- :func:`build_run_model` / :func:`load_run_model`: build the model a run's settings describe, or
  rebuild the one a checkpoint describes. The frozen LLM block is rebuilt from its source; a
  ``-random`` block is re-drawn from the run's seed (``torch.manual_seed(seed)`` right before
  ``build_model``), so training, evaluation and prediction see the same random weights.
- :func:`predict_logits`: one forward pass when the volume has the model's input size, MONAI
  ``sliding_window_inference`` (Gaussian blending, 25 % overlap) when it does not (``full``
  preprocessing, or any volume larger or smaller than ``img_size``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from medvisionllama.errors import InputError
from medvisionllama.models import ModelConfig, build_model


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given. Inside a
    SLURM job that holds a GPU, ``auto`` means ``cuda`` (medvisionllama.cluster.device)."""
    from medvisionllama.cluster.device import required_device, unusable_cuda_message

    requested = device
    device, required_by = required_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(unusable_cuda_message(requested, required_by))
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
    to_cpu: bool = True,
) -> torch.Tensor:
    """Logits (B, K, X, Y, Z) float32 on CPU (on ``device`` when not ``to_cpu``) of ``image``
    (B, C, X, Y, Z), in eval/no-grad mode of the caller.

    The volume goes through the model directly when its spatial shape equals ``roi_size``;
    otherwise through ``sliding_window_inference`` with windows of ``roi_size``.
    """
    image = image.to(device, non_blocking=True)
    with autocast(device):
        if tuple(image.shape[2:]) == tuple(roi_size):
            logits = model(image)
        else:
            from monai.inferers import sliding_window_inference  # deferred on purpose: MONAI costs seconds

            logits = sliding_window_inference(
                image, roi_size=list(roi_size), sw_batch_size=sw_batch_size, predictor=model,
                overlap=overlap, mode="gaussian", sw_device=device, device=device,
            )
    logits = torch.as_tensor(logits).float()
    return logits.cpu() if to_cpu else logits
