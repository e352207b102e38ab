"""A small Python API for notebooks and scripts: load a trained run, predict, build a model, read
a run's metrics. The pipeline's commands do the same work; this is the library face of it.

>>> import medvisionllama as mvl
>>> run = mvl.load_run("results/runs/Task09_Spleen/vit/hybrid-sequential/64x64x40/seed0")  # doctest: +SKIP
>>> mask = run.predict(image, affine)        # (X, Y, Z) or (X, Y, Z, C) array -> uint8 (X, Y, Z)  # doctest: +SKIP
>>> run.predict_file("ct.nii.gz", "seg.nii.gz")                                           # doctest: +SKIP
>>> mvl.read_metrics(run.path)               # metrics.csv: one row per test case and class  # doctest: +SKIP
>>> net = mvl.build_model("qwen-tiny", in_channels=1, num_classes=2, img_size=(64, 64, 40))  # doctest: +SKIP

A prediction goes through exactly what training saw (the run's checkpoint records the input
size, the CT/MRI normalisation and the channel count: ``data.preprocess.preprocess_image``), the
model (sliding windows when the volume is not the model's input size), and back to the input's
own grid (``restore_to_original``): the mask has the input's shape and lies on its affine.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvisionllama.errors import InputError
from medvisionllama.io_utils import read_csv

CHECKPOINTS = {"best": "checkpoint_best.pt", "last": "checkpoint_last.pt"}


def _results_root(run_dir: Path) -> Path | None:
    """The results folder a run folder lies in (the parent of its ``runs/``), or None."""
    for parent in run_dir.resolve().parents:
        if parent.name == "runs":
            return parent.parent
    return None


def _register_config_llms(run_dir: Path, config: str | Path | None) -> None:
    """Register the LLM folders (``llms:``) of ``config``, or of the results' ``config.yaml``."""
    from medvisionllama.experiments import load_config

    if config is None:
        root = _results_root(run_dir)
        config = root / "config.yaml" if root is not None and (root / "config.yaml").is_file() else None
    if config is not None:
        load_config(config)  # registers its llms:


@dataclass
class Run:
    """A trained run: its model in eval mode, its settings, and what it recorded.

    Attributes:
        path: the run folder.
        model: the network with the checkpoint's weights (``MedVisionLlama``), eval mode.
        config: its ``ModelConfig``.
        data: what it was trained on (input size, kind CT/MRI, channels, classes, class names).
        device: where the model runs.
    """

    path: Path
    model: Any
    config: Any
    data: dict[str, Any]
    device: Any
    info: dict[str, Any] = field(default_factory=dict)  #: run.json (empty when absent)

    @property
    def class_names(self) -> dict[int, str]:
        names = self.data.get("labels") or {}
        return {int(k): str(v) for k, v in names.items()}

    def predict(self, image: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
        """Segment one volume: ``image`` (X, Y, Z) or (X, Y, Z, C) on the grid ``affine`` (4 x 4,
        voxel -> mm; default: 1 mm isotropic) -> uint8 labels (X, Y, Z) on the same grid."""
        import nibabel as nib

        image = np.asarray(image)
        if image.ndim not in (3, 4):
            raise InputError(f"image: expected (X, Y, Z) or (X, Y, Z, C), got shape {image.shape}")
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
        if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise InputError(f"affine: expected a finite, invertible 4 x 4 matrix, got {affine.tolist()}")
        with tempfile.TemporaryDirectory(prefix="mvl-predict-") as tmp:  # the same reader as for files
            path = Path(tmp) / "image.nii.gz"
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
            return self._predict_path(path)

    def predict_file(self, image: str | Path, output: str | Path | None = None) -> np.ndarray:
        """Segment a NIfTI file; writes the labels to ``output`` (a NIfTI on the input's affine)
        when given, and returns them (X, Y, Z)."""
        from medvisionllama.data.io import load_nifti, make_nifti, save_nifti

        labels = self._predict_path(Path(image))
        if output is not None:
            if Path(output).resolve() == Path(image).resolve():
                raise InputError(f"output {output} is the input image: choose another file")
            save_nifti(make_nifti(labels, np.asarray(load_nifti(Path(image)).affine, dtype=float)), Path(output))
        return labels

    def _predict_path(self, path: Path) -> np.ndarray:
        import torch

        from medvisionllama.data.preprocess import preprocess_image, restore_to_original
        from medvisionllama.runtime import predict_logits

        data = self.data
        image, meta = preprocess_image(path, size=data["size"], kind=data["kind"], num_channels=int(data["num_channels"]))
        roi = tuple(int(v) for v in self.config.img_size)
        with torch.no_grad():
            logits = predict_logits(self.model, torch.from_numpy(image)[None], roi, self.device)  # (1, K, X, Y, Z)
        return restore_to_original(logits[0].argmax(0).numpy().astype(np.uint8), meta)  # (X, Y, Z) of the input

    def metrics(self):
        """The run's test metrics (``metrics.csv``; see :func:`read_metrics`)."""
        return read_metrics(self.path)

    def summary(self) -> dict[str, Any]:
        """The run's ``summary.json`` (nnU-Net's evaluation summary, plus ours)."""
        path = self.path / "summary.json"
        if not path.is_file():
            raise InputError(f"{path}: not found (the run has not been evaluated: mvl evaluate)")
        return json.loads(path.read_text())


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    device: str = "cpu",
    llm_weights: str | None = None,
    config: str | Path | None = None,
) -> Run:
    """A trained run from its folder (``results/runs/{task}/{model}/...``), ready to predict.

    ``checkpoint``: ``best`` or ``last``; ``device``: ``cpu``, ``cuda`` or ``auto``;
    ``llm_weights``: the frozen LLM layer file to use (default: the one the checkpoint records, found
    by its content hash at its recorded path or relative to the run folder; a file with another hash
    is refused); ``config``: the pipeline config whose
    ``llms:`` names the run's LLM folder (default: the results folder's ``config.yaml``).
    """
    from medvisionllama.checkpoint import load_checkpoint
    from medvisionllama.runtime import load_run_model, resolve_device

    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint {checkpoint!r}: expected one of {', '.join(CHECKPOINTS)}")
    path = run_dir / CHECKPOINTS[checkpoint]
    if not path.is_file():
        raise InputError(f"{path}: not found (is {run_dir} a trained run folder?)")
    _register_config_llms(run_dir, config)
    ckpt = load_checkpoint(path)
    dev = resolve_device(device)
    # the layer file is found by the content hash the checkpoint records (runtime.locate_llm_layer)
    model, model_config = load_run_model(ckpt, dev, llm_layer=llm_weights, checkpoint_path=path)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return Run(path=run_dir, model=model, config=model_config, data=dict(ckpt["data"]), device=dev, info=info)


def build_model(
    model: str = "vit",
    *,
    in_channels: int,
    num_classes: int,
    img_size: tuple[int, int, int],
    device: str = "cpu",
    **settings: Any,
):
    """A fresh (untrained) network: ``model`` is ``vit``, ``mlp``, an LLM name (a preset or one
    registered from a folder: :func:`medvisionllama.llm.registry.register_folder`) or its
    ``-random``/``-shuffled`` control; ``settings`` are further ``ModelConfig`` fields
    (``hidden_size``, ``patch_size``, ``num_layers``, ``llm_layer``, ``llm_weights``, ...)."""
    from medvisionllama.models import ModelConfig
    from medvisionllama.models import build_model as _build

    try:
        config = ModelConfig(model=model, in_channels=in_channels, num_classes=num_classes,
                             img_size=tuple(img_size), **settings)
    except TypeError as exc:
        raise InputError(f"build_model: {exc}") from None
    return _build(config, device=device)


def read_metrics(run_dir: str | Path):
    """A run's ``metrics.csv`` as a pandas DataFrame: one row per test case and foreground class
    (``case_id, class_index, class_name``, the metrics and their statuses, the run key)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise InputError(f"{path}: not found (the run has not been evaluated: mvl evaluate)")
    return read_csv(path, "metrics.csv of `mvl evaluate`")
