"""Preprocessing: reorient to RAS, resize, normalise; and the way back to the original grid.

``mvl preprocess`` turns one MSD task folder into arrays the trainer reads directly
(docs/contracts.md): ``cases/{case}_image.npy`` float32 (C, X, Y, Z), ``cases/{case}_label.npy``
uint8 (X, Y, Z) and ``manifest.json``. Steps per case, the same for training cases
(:func:`preprocess_task`) and for new images (:func:`preprocess_image`):

1. load with nibabel and check: every image voxel is finite, image and label shapes, orientations
   and affines agree (:func:`~medvisionllama.data.io.check_same_grid`), label values lie in
   ``dataset.json``'s label map, the channel count equals its modality count;
2. reorient to the closest canonical (RAS) orientation (``nibabel.orientations``; an axis flip
   or permutation, never a resampling);
3. resize to the requested size (``XxYxZ``; ``full`` keeps the canonical grid): images trilinear
   with Gaussian anti-aliasing along shrunk axes (sigma = (scale - 1) / 2, as MONAI's
   ``Resize(anti_aliasing=True)``), labels nearest-exact (both ``torch.nn.functional.interpolate``,
   which MONAI's ``Resize`` calls; torch is imported only when a resize is needed);
4. normalise on the resized grid, per channel (see :data:`NORMALISATION`).

:func:`restore_to_original` undoes steps 3 and 2 for a predicted label volume, so that saving it
with the original affine lines up with the input image.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from nibabel import orientations
from scipy import ndimage
from tqdm import tqdm

from medvisionllama.data.io import (
    LabelledCase,
    check_finite,
    check_same_grid,
    list_labelled_cases,
    load_nifti,
    read_dataset_json,
)
from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_dir, read_json
from medvisionllama.vocabulary import parse_size, size_name

#: what the normalisation does, per kind of image (recorded in the manifest)
NORMALISATION: dict[str, str] = {
    "CT": (
        "per channel: foreground-ish voxels are those above -500 HU (all voxels if fewer than 10); "
        "clip the image to their 0.5-99.5 percentile window, then z-score with the mean and "
        "standard deviation of the clipped foreground-ish voxels"
    ),
    "MRI": "per channel: z-score over the non-zero voxels; zero voxels stay 0",
}
RESIZE = (
    "image: trilinear (align_corners=False), Gaussian anti-aliasing sigma=(scale-1)/2 along shrunk "
    "axes; label: nearest-exact; 'full' keeps the canonical grid"
)
#: HU above which a CT voxel counts as foreground-ish (body rather than air)
CT_BODY_THRESHOLD = -500.0
CANONICAL = ("R", "A", "S")


def modality_kind(modality: dict[str, str]) -> str:
    """``"CT"`` when every channel of ``dataset.json``'s ``modality`` is CT, else ``"MRI"``."""
    return "CT" if all(str(name).upper() == "CT" for name in modality.values()) else "MRI"


# --------------------------------------------------------------------------- array operations
def resize_image(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize of ``image`` (C, X, Y, Z) float32 to (C, *shape), anti-aliased when shrinking."""
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    import torch
    import torch.nn.functional as F

    scale = np.asarray(image.shape[1:], dtype=float) / np.asarray(shape, dtype=float)
    sigma = np.maximum(0.0, (scale - 1.0) / 2.0)
    if np.any(sigma > 0):
        image = ndimage.gaussian_filter(image, sigma=(0.0, *sigma), mode="nearest")
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]  # (1, C, X, Y, Z)
    out = F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0].numpy()  # (C, *shape)


def resize_label(label: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-exact resize of an integer ``label`` (X, Y, Z) to ``shape``; dtype kept."""
    if tuple(label.shape) == tuple(shape):
        return label
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(label.astype(np.float32))[None, None]  # (1, 1, X, Y, Z)
    out = F.interpolate(tensor, size=tuple(shape), mode="nearest-exact")
    return out[0, 0].numpy().astype(label.dtype)  # (*shape)


def normalise(image: np.ndarray, kind: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Normalise ``image`` (C, X, Y, Z) per channel as :data:`NORMALISATION` says.

    Returns the float32 image and, per channel, ``{"clip": [low, high] | None, "mean", "std"}``.
    """
    if kind not in NORMALISATION:
        raise ValueError(f"kind must be one of {list(NORMALISATION)}, got {kind!r}")
    out = np.empty(image.shape, dtype=np.float32)
    stats: list[dict[str, Any]] = []
    for c, channel in enumerate(image.astype(np.float32)):
        clip = None
        if kind == "CT":
            mask = channel > CT_BODY_THRESHOLD
            if mask.sum() < 10:
                mask = np.ones_like(mask)
            low, high = (float(v) for v in np.percentile(channel[mask], [0.5, 99.5]))
            channel = np.clip(channel, low, high)
            clip = [low, high]
        else:
            mask = channel != 0
        values = channel[mask]
        mean = float(values.mean()) if values.size else 0.0
        std = float(values.std()) if values.size else 0.0
        scaled = (channel - mean) / (std if std > 0 else 1.0)
        out[c] = scaled if kind == "CT" else np.where(mask, scaled, 0.0)
        stats.append({"clip": clip, "mean": mean, "std": std})
    return out, stats


# --------------------------------------------------------------------------- images and labels
def _spacing(affine: np.ndarray) -> list[float]:
    """Voxel size along each array axis: the norms of the affine's columns."""
    return [float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))]


def preprocess_image(
    image_path: str | Path, *, size: str, kind: str, num_channels: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load, reorient, resize and normalise one image, as for training.

    Args:
        image_path: a NIfTI image, (X, Y, Z) or (X, Y, Z, C).
        size: ``XxYxZ`` or ``full``.
        kind: ``"CT"`` or ``"MRI"`` (the manifest's ``kind``).
        num_channels: channels the image must have (the manifest's ``num_channels``).

    Returns:
        ``(image, meta)``: float32 (C, X, Y, Z), and what :func:`restore_to_original` needs
        (original shape, spacing, affine and orientation, canonical shape and spacing, the
        preprocessed shape and spacing) plus the normalisation statistics.

    Raises:
        InputError: a missing or corrupt file, NaN or infinite voxels, a wrong channel count, an
            invalid size.
    """
    dims = parse_size(size)
    image_path = Path(image_path)
    img = load_nifti(image_path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]  # (X, Y, Z, 1, C) -> (X, Y, Z, C)
    if data.ndim == 3:
        data = data[..., None]  # (X, Y, Z, 1)
    if data.ndim != 4:
        raise InputError(f"{image_path}: expected a 3D or 4D (X, Y, Z, C) image, got shape {data.shape}")
    if data.shape[3] != num_channels:
        raise InputError(
            f"{image_path}: has {data.shape[3]} channel(s) (shape {data.shape}), "
            f"but dataset.json's modality lists {num_channels}"
        )
    check_finite(data, image_path)
    affine = np.asarray(img.affine, dtype=float)
    ornt = orientations.io_orientation(affine)
    canonical = orientations.apply_orientation(data, ornt)  # (X', Y', Z', C) in RAS
    canonical_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape[:3])
    image = np.moveaxis(canonical.astype(np.float32), -1, 0)  # (C, X', Y', Z')
    canonical_shape = tuple(int(d) for d in image.shape[1:])
    out_shape = canonical_shape if dims is None else dims
    image, stats = normalise(resize_image(image, out_shape), kind)
    canonical_spacing = _spacing(canonical_affine)
    meta = {
        "source": str(image_path),
        "num_channels": int(num_channels),
        "original_shape": [int(d) for d in data.shape[:3]],
        "original_spacing": _spacing(affine),
        "original_affine": affine.tolist(),
        "original_orientation": list(orientations.aff2axcodes(affine)),
        "canonical_shape": list(canonical_shape),
        "canonical_spacing": canonical_spacing,
        "shape": [int(d) for d in out_shape],
        "spacing": [sp * n / m for sp, n, m in zip(canonical_spacing, canonical_shape, out_shape)],
        "intensity": stats,
    }
    return image, meta


def preprocess_label(label_path: str | Path, meta: dict[str, Any], label_values: list[int]) -> np.ndarray:
    """Load a label, check it against its image's ``meta`` and the label map, reorient and resize.

    Returns uint8 (X, Y, Z) on the grid of the preprocessed image.

    Raises:
        InputError: naming the file when its shape, orientation or affine differs from the
            image's (naming both), or when it holds non-integer values or values outside
            ``label_values``.
    """
    label_path = Path(label_path)
    img = load_nifti(label_path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # (X, Y, Z, 1) -> (X, Y, Z)
    if list(data.shape) != meta["original_shape"]:
        raise InputError(
            f"image {meta['source']} has shape {tuple(meta['original_shape'])} but label {label_path} "
            f"has shape {tuple(data.shape)}: they must match"
        )
    axcodes = list(orientations.aff2axcodes(img.affine))
    if axcodes != meta["original_orientation"]:
        raise InputError(
            f"image {meta['source']} has orientation {''.join(meta['original_orientation'])} but label "
            f"{label_path} has {''.join(axcodes)}: they must match"
        )
    check_same_grid(np.asarray(meta["original_affine"]), meta["source"], img.affine, label_path)
    values = np.unique(data)
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise InputError(f"{label_path}: label values must be integers, got {values[:10].tolist()}")
    bad = sorted(set(int(v) for v in values) - set(label_values))
    if bad:
        raise InputError(
            f"{label_path}: label values {bad} are not in dataset.json's label map (allowed: {label_values})"
        )
    label = orientations.apply_orientation(data.astype(np.uint8), orientations.io_orientation(img.affine))
    return resize_label(np.ascontiguousarray(label), tuple(meta["shape"]))


def restore_to_original(label: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Map a label volume on the preprocessed grid back to the original image grid.

    ``label`` is (X, Y, Z) with ``meta["shape"]``; ``meta`` is a manifest case entry or the meta
    of :func:`preprocess_image`. Nearest-exact resize to the canonical shape, then the inverse of
    the reorientation: the result has ``meta["original_shape"]`` and lines up with the input
    image when saved with ``meta["original_affine"]``. The dtype is kept.
    """
    if label.ndim != 3 or list(label.shape) != list(meta["shape"]):
        raise ValueError(f"label must have the preprocessed shape {tuple(meta['shape'])}, got {label.shape}")
    canonical = resize_label(label, tuple(meta["canonical_shape"]))
    back = orientations.ornt_transform(
        orientations.axcodes2ornt(CANONICAL), orientations.axcodes2ornt(tuple(meta["original_orientation"]))
    )
    return np.ascontiguousarray(orientations.apply_orientation(canonical, back))


# --------------------------------------------------------------------------- task and manifest
def _preprocess_case(
    case: LabelledCase, cases_dir: Path, size: str, kind: str, num_channels: int, label_values: list[int]
) -> dict[str, Any]:
    """Preprocess one labelled case, write its two arrays under ``cases_dir``, return its entry."""
    image, meta = preprocess_image(case.image, size=size, kind=kind, num_channels=num_channels)
    label = preprocess_label(case.label, meta, label_values)
    files = {"image": f"cases/{case.case_id}_image.npy", "label": f"cases/{case.case_id}_label.npy"}
    np.save(cases_dir / f"{case.case_id}_image.npy", image)
    np.save(cases_dir / f"{case.case_id}_label.npy", label)
    return {"case_id": case.case_id, "files": files, "label_source": str(case.label), **meta}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def preprocess_task(task_dir: Path, size: str, output: Path, workers: int = 1) -> dict[str, Any]:
    """Preprocess every labelled case of ``task_dir`` at ``size`` into ``output`` (atomically).

    Args:
        task_dir: an MSD task folder.
        size: ``XxYxZ`` or ``full``.
        output: the folder to write (``manifest.json`` and ``cases/``); replaced if it exists and
            its content differs (left untouched, modification times included, when the new folder
            is byte-identical), and absent after any failure.
        workers: processes (1: in this process).

    Returns:
        The manifest (also written as ``output/manifest.json``).
    """
    dims = parse_size(size)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    task_dir = Path(task_dir)
    dataset = read_dataset_json(task_dir)
    cases = list_labelled_cases(task_dir, dataset)
    if not cases:
        raise InputError(f"{task_dir / 'dataset.json'}: lists no labelled cases under 'training'")
    kind = modality_kind(dataset["modality"])
    num_channels = len(dataset["modality"])
    label_values = sorted(int(k) for k in dataset["labels"])
    size = size_name(dims)
    entries: dict[str, dict[str, Any]] = {}
    try:
        manifest = _preprocess_into(task_dir, dataset, cases, size, dims, kind, num_channels, label_values,
                                    Path(output), workers, entries)
    except _Unchanged as unchanged:
        return unchanged.manifest
    return manifest


class _Unchanged(Exception):
    """Raised inside ``atomic_dir`` when the new folder equals the existing one: the temporary
    folder is dropped and the existing output (its modification times) stays as it was."""

    def __init__(self, manifest: dict[str, Any]):
        super().__init__("unchanged")
        self.manifest = manifest


def _visible_files(folder: Path) -> dict[str, Path]:
    """Relative path -> file below ``folder``, hidden names (``.snakemake_timestamp``) left out."""
    out = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = path
    return out


def same_tree(new: Path, old: Path) -> bool:
    """Whether ``old`` is a folder holding exactly the visible files of ``new``, byte for byte."""
    if not old.is_dir():
        return False
    a, b = _visible_files(new), _visible_files(old)
    if a.keys() != b.keys():
        return False
    return all(a[k].stat().st_size == b[k].stat().st_size and a[k].read_bytes() == b[k].read_bytes() for k in a)


def _preprocess_into(task_dir, dataset, cases, size, dims, kind, num_channels, label_values, output: Path,
                     workers: int, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The work of :func:`preprocess_task`: build the folder beside ``output``, then put it in place
    unless ``output`` already holds the same bytes (then raise :class:`_Unchanged`: written only
    when the content changes, so a re-run by `dvc repro` leaves Snakemake nothing to re-run)."""
    with atomic_dir(output) as tmp:
        cases_dir = tmp / "cases"
        cases_dir.mkdir()
        args = (cases_dir, size, kind, num_channels, label_values)
        progress = tqdm(total=len(cases), desc=f"preprocess {task_dir.name} {size}", unit="case", file=sys.stderr)
        with progress:
            if workers == 1:
                for case in cases:
                    entries[case.case_id] = _preprocess_case(case, *args)
                    progress.update()
            else:
                context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
                with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
                    futures = [pool.submit(_preprocess_case, case, *args) for case in cases]
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            entry = future.result()
                            entries[entry["case_id"]] = entry
                            progress.update()
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
        for entry in entries.values():  # paths relative to the task folder, as dataset.json has them
            entry["source"] = Path(os.path.relpath(entry["source"], task_dir)).as_posix()
            entry["label_source"] = Path(os.path.relpath(entry["label_source"], task_dir)).as_posix()
        manifest = {
            "task": task_dir.name,
            "dataset_name": dataset["name"],
            "size": size,
            "shape": None if dims is None else list(dims),
            "modality": dataset["modality"],
            "labels": dataset["labels"],
            "num_channels": num_channels,
            "num_classes": len(label_values),
            "kind": kind,
            "orientation": "".join(CANONICAL),
            "resize": RESIZE,
            "normalisation": NORMALISATION[kind],
            "cases": [entries[case.case_id] for case in cases],
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if same_tree(tmp, output):
            raise _Unchanged(manifest)
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a preprocessed folder (``results/preprocessed/{task}/{size}/``).

    Raises:
        InputError: the manifest is missing, not JSON, or lacks ``cases``/``size``/``kind``.
    """
    path = Path(folder) / "manifest.json"
    manifest = read_json(path, missing="missing (run `mvl preprocess` first)")
    missing = [k for k in ("task", "size", "kind", "num_channels", "labels", "cases") if k not in manifest]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}")
    return manifest


def manifest_case(manifest: dict[str, Any], case_id: str) -> dict[str, Any]:
    """The manifest entry of ``case_id`` (the ``meta`` :func:`restore_to_original` takes)."""
    for entry in manifest["cases"]:
        if entry["case_id"] == case_id:
            return entry
    raise InputError(f"case {case_id!r} is not in the manifest of {manifest['task']} {manifest['size']}")


def load_preprocessed_case(folder: str | Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of one preprocessed case: float32 (C, X, Y, Z) and uint8 (X, Y, Z).

    Raises:
        InputError: a missing array file, or image and label whose spatial shapes differ.
    """
    folder = Path(folder)
    arrays = []
    for role in ("image", "label"):
        path = folder / "cases" / f"{case_id}_{role}.npy"
        if not path.is_file():
            raise InputError(f"{path}: missing preprocessed {role} of case {case_id!r}")
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: unreadable .npy ({exc})") from exc
    image, label = arrays
    if image.ndim != 4 or label.ndim != 3 or image.shape[1:] != label.shape:
        raise InputError(f"{folder / 'cases'}: case {case_id!r} has image {image.shape} and label {label.shape}")
    return image, label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl preprocess", description="Reorient, resize and normalise one task.")
    parser.add_argument("--task-dir", required=True, type=Path, help="MSD task folder (holds dataset.json)")
    parser.add_argument("--size", required=True, help="input size XxYxZ (e.g. 64x64x40) or 'full'")
    parser.add_argument("--output", required=True, type=Path, help="folder to write (manifest.json, cases/)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    preprocess_task(task_dir=args.task_dir, size=args.size, output=args.output, workers=args.workers)
    return 0
