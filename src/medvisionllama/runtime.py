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
import os
from collections.abc import Sequence
from pathlib import Path
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


def _short(digest: str) -> str:
    return f"sha256 {digest[:16]}"


def locate_llm_layer(
    checkpoint: dict[str, Any], *, checkpoint_path: str | Path | None = None, llm_layer: str | Path | None = None,
) -> str | None:
    """The layer file to rebuild the frozen block of ``checkpoint`` from; ``None``: the source its
    model config records (a model without a layer file, or a checkpoint without an ``llm_layer``
    record).

    With a record (``checkpoint.llm_layer_record``), the file must carry the recorded content hash:
    ``llm_layer`` when given (else refused), otherwise the first of the recorded path (relative to
    the current folder, as the pipeline ran), the recorded absolute path and the path relative to
    the checkpoint's folder whose header holds that hash. Only the header is read here; the factory
    recomputes the hash from the tensors before using them (:func:`~medvisionllama.llm.layer_file.read_layer_file`).

    Raises:
        InputError: naming the checkpoint, the hash and where it looked, or the file whose hash
            differs.
    """
    from medvisionllama.llm.layer_file import layer_file_digest

    record = checkpoint.get("llm_layer")
    where = str(checkpoint_path) if checkpoint_path is not None else "the checkpoint"
    if not isinstance(record, dict) or not record.get("sha256"):
        return None if llm_layer is None else str(llm_layer)
    wanted = str(record["sha256"])
    if llm_layer is not None:
        if not str(llm_layer).endswith(".safetensors"):
            raise InputError(f"--llm-layer {llm_layer}: {where} was trained with a layer file of `mvl extract-layer` "
                             f"({_short(wanted)}); give that .safetensors file")
        found = layer_file_digest(llm_layer)
        if found != wanted:
            raise InputError(f"{llm_layer}: holds the LLM layer with {_short(found)}, but {where} was trained with "
                             f"the one with {_short(wanted)}; give the layer file it was trained with")
        return str(llm_layer)
    candidates = [Path(str(record.get("path", ""))), Path(str(record.get("absolute", "")))]
    if checkpoint_path is not None and record.get("from_run"):
        candidates.append(Path(os.path.normpath(Path(checkpoint_path).parent / str(record["from_run"]))))
    differing, seen = [], set()
    for candidate in candidates:
        if not str(candidate) or str(candidate) == "." or not candidate.is_file():
            continue
        if candidate.resolve() in seen:
            continue
        seen.add(candidate.resolve())
        found = layer_file_digest(candidate)  # an unreadable header: one line naming the file
        if found == wanted:
            return str(candidate)
        differing.append(f"{candidate} ({_short(found)})")
    if differing:
        raise InputError(f"{where}: trained with the LLM layer with {_short(wanted)}, but "
                         f"{', '.join(differing)} hold(s) another one (re-extracted from other weights?); "
                         "give the layer file it was trained with (mvl predict --llm-layer FILE) or retrain")
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates if str(c) and str(c) != "."))
    raise InputError(f"{where}: its LLM layer file ({_short(wanted)}) is at none of {looked}; give it with "
                     "--llm-layer FILE (a copy of the run's layer file, or `mvl extract-layer` from the same weights)")


def load_run_model(
    checkpoint: dict[str, Any], device: torch.device, *, llm_layer: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
):
    """The model of a loaded checkpoint, with its trained weights, in eval mode.

    The frozen LLM layer is read again from the layer file :func:`locate_llm_layer` finds (by the
    content hash the checkpoint records; ``llm_layer`` names one explicitly), else from the source
    the checkpoint's model config records, or from ``llm_layer`` when given.
    """
    model_config = dict(checkpoint["model_config"])
    located = locate_llm_layer(checkpoint, checkpoint_path=checkpoint_path, llm_layer=llm_layer)
    if located is not None:
        model_config["llm_weights"] = located
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
