"""Reading and writing MSD task folders: ``dataset.json``, labelled cases, NIfTI files.

Every stage reads raw data through these helpers, so a broken task folder fails the same way
everywhere: an :class:`~medvisionllama.errors.InputError` that names the file and the problem.
NIfTI files are written with fixed gzip headers (no timestamp), so the same array and affine
always give the same bytes.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path, read_json

#: keys every MSD ``dataset.json`` must hold for the pipeline to use it
REQUIRED_KEYS: tuple[str, ...] = ("name", "modality", "labels", "numTraining", "training")

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

#: largest difference allowed between an image's and its label's affine: in the translation
#: column (mm) and in the 3x3 rotation/scale part (unitless: direction cosines times spacing)
AFFINE_TOLERANCE_MM = 1e-3
AFFINE_TOLERANCE_LINEAR = 1e-4


@dataclass(frozen=True)
class LabelledCase:
    """One labelled training case of a task: its id and the two files."""

    case_id: str  #: file name without ``.nii.gz``, e.g. ``BRATS_001``
    image: Path  #: ``{task_dir}/imagesTr/{case_id}.nii.gz``
    label: Path  #: ``{task_dir}/labelsTr/{case_id}.nii.gz``


def case_id_from_path(path: str | Path) -> str:
    """``./imagesTr/la_003.nii.gz`` -> ``la_003``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_dvc_cache_object(path: Path) -> bool:
    """True for a file in a DVC (3.x) cache: ``{cache}/files/md5/{2 hex}/{30 hex}``."""
    hexdigits = set("0123456789abcdef")
    parts = path.parts
    return (
        len(parts) >= 4 and parts[-4:-2] == ("files", "md5") and len(parts[-2]) == 2 and len(parts[-1]) == 30
        and set(parts[-2] + parts[-1]) <= hexdigits
    )


def check_inside_task(task_dir: Path, path: Path, *, dataset_path: str | Path, entry: str) -> Path:
    """``path`` unchanged if it lies inside ``task_dir`` once ``..``, absolute paths and symlinks
    are resolved; else an ``InputError`` naming ``dataset_path`` and ``entry``.

    Resolving follows symlinks, so a link inside the folder that points out of it is refused too;
    the one exception is a file that is itself a link into a DVC cache (what
    ``dvc config cache.type symlink`` checks out), as long as the link lies inside the folder.
    """
    root = task_dir.resolve()
    resolved = path.resolve()
    if resolved != root and resolved.is_relative_to(root):
        return path
    link_inside = path.is_symlink() and path.parent.resolve().is_relative_to(root)
    if link_inside and _is_dvc_cache_object(resolved):
        return path
    raise InputError(
        f"{dataset_path}: {entry} resolves to {resolved}, outside the task folder {root}; "
        "every file a task lists must lie inside its folder"
    )


def listed_files(
    task_dir: str | Path, dataset: dict[str, Any], *, dataset_path: str | Path | None = None
) -> list[tuple[str, str, Path]]:
    """Every file ``dataset.json`` lists: ``(entry, path as written, task_dir / path)``.

    ``entry`` is ``training[i].image``, ``training[i].label`` or ``test[i]``. Each file is checked
    with :func:`check_inside_task` (``dataset_path`` names dataset.json in messages; default
    ``task_dir/dataset.json``); whether it exists is the caller's question. Entries of the wrong
    shape are skipped here (:func:`read_dataset_json` refuses them).

    Raises:
        InputError: an entry that resolves outside ``task_dir``.
    """
    task_dir = Path(task_dir)
    dataset_path = dataset_path or task_dir / "dataset.json"
    found: list[tuple[str, str, Path]] = []
    training = dataset.get("training")
    for index, item in enumerate(training if isinstance(training, list) else []):
        if isinstance(item, dict):
            found += [(f"training[{index}].{role}", item[role], task_dir / item[role])
                      for role in ("image", "label") if isinstance(item.get(role), str)]
    test = dataset.get("test")
    for index, item in enumerate(test if isinstance(test, list) else []):
        rel = item.get("image") if isinstance(item, dict) else item
        if isinstance(rel, str):
            found.append((f"test[{index}]", rel, task_dir / rel))
    for entry, rel, file in found:
        check_inside_task(task_dir, file, dataset_path=dataset_path, entry=f"{entry} {rel!r}")
    return found


def read_dataset_json(task_dir: str | Path) -> dict[str, Any]:
    """Read and check ``{task_dir}/dataset.json``.

    Checks that the file exists and is a JSON object, that it holds :data:`REQUIRED_KEYS` with
    the right types, that every file it lists (``training`` and ``test``) lies inside
    ``task_dir`` (:func:`listed_files`), and that every ``training`` entry names an image and a
    label file that exist (``test`` files need not exist: no stage reads them).

    Raises:
        InputError: naming ``dataset.json`` (or the missing file) and the problem.
    """
    task_dir = Path(task_dir)
    path = task_dir / "dataset.json"
    if not task_dir.is_dir():
        raise InputError(f"{task_dir}: task folder does not exist")
    dataset = read_json(path, missing="missing (an MSD task folder holds dataset.json, imagesTr/, labelsTr/)")
    check_inside_task(task_dir, path, dataset_path=path, entry="dataset.json (a link)")
    if not isinstance(dataset, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(dataset).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in dataset]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in ("modality", "labels"):
        if not isinstance(dataset[key], dict) or not dataset[key]:
            raise InputError(f"{path}: {key!r} must be a non-empty object, got {dataset[key]!r}")
    try:
        label_values = sorted(int(value) for value in dataset["labels"])
    except ValueError as exc:
        raise InputError(f"{path}: label keys must be integers, got {list(dataset['labels'])}") from exc
    if any(value < 0 or value > 255 for value in label_values):
        raise InputError(f"{path}: label values must lie in 0..255, got {label_values}")
    training = dataset["training"]
    if not isinstance(training, list):
        raise InputError(f"{path}: 'training' must be a list of {{image, label}} objects")
    for index, entry in enumerate(training):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(entry.get("label"), str):
            raise InputError(f"{path}: training[{index}] must be an object with string 'image' and 'label', got {entry!r}")
    for entry, rel, file in listed_files(task_dir, dataset, dataset_path=path):
        if entry.startswith("training[") and not file.is_file():
            index, role = entry[len("training["):].split("].")
            raise InputError(f"{path}: training[{index}] names {role} {rel!r}, but {file} does not exist")
    return dataset


def list_labelled_cases(task_dir: str | Path, dataset: dict[str, Any] | None = None) -> list[LabelledCase]:
    """The labelled cases ``dataset.json`` lists under ``training``, sorted by case id.

    ``dataset`` is the already-read ``dataset.json`` (read and checked here when ``None``).

    Raises:
        InputError: an unreadable ``dataset.json`` (see :func:`read_dataset_json`), or two
            entries with the same case id.
    """
    task_dir = Path(task_dir)
    if dataset is None:
        dataset = read_dataset_json(task_dir)
    else:
        listed_files(task_dir, dataset)  # an already-read dataset is held to the same folder rule
    cases: dict[str, LabelledCase] = {}
    for entry in dataset["training"]:
        case_id = case_id_from_path(entry["image"])
        if case_id in cases:
            raise InputError(f"{task_dir / 'dataset.json'}: case {case_id!r} is listed twice under 'training'")
        cases[case_id] = LabelledCase(case_id, task_dir / entry["image"], task_dir / entry["label"])
    return [cases[case_id] for case_id in sorted(cases)]


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Load a NIfTI file and read its voxels now, so a damaged file fails here, not later.

    The returned image holds its data in memory (``np.asanyarray(img.dataobj)`` is free).

    Raises:
        InputError: ``{path}: missing`` or ``{path}: corrupt or truncated NIfTI (...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing NIfTI file")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)  # forces decompression and reading of every voxel
    except (ImageFileError, EOFError, zlib.error, OSError, ValueError) as exc:
        raise InputError(f"{path}: corrupt or truncated NIfTI ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise InputError(f"{path}: expected a NIfTI image, got {type(img).__name__}")
    return type(img)(data, img.affine, img.header)


def nifti_to_gz_bytes(img: nib.Nifti1Image, compresslevel: int = 6) -> bytes:
    """The ``.nii.gz`` bytes of ``img`` with a fixed gzip header (mtime 0): same input, same bytes."""
    return gzip.compress(img.to_bytes(), compresslevel=compresslevel, mtime=0)


def save_nifti(img: nib.Nifti1Image, path: str | Path) -> None:
    """Write ``img`` to ``path`` (``.nii.gz``: deterministic bytes; ``.nii``: plain) atomically."""
    path = Path(path)
    payload = nifti_to_gz_bytes(img) if path.name.endswith(".gz") else img.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def make_nifti(data: np.ndarray, affine: np.ndarray, spacing_unit: str = "mm") -> nib.Nifti1Image:
    """A NIfTI image of ``data`` with ``affine`` as both qform and sform (scanner space, code 1).

    ``data`` is (X, Y, Z) or (X, Y, Z, C) as the MSD stores multi-modal images.
    """
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz=spacing_unit, t="sec")
    return img


def check_finite(array: np.ndarray, path: str | Path) -> None:
    """Refuse an image holding NaN or infinite voxels (one NaN turns a normalised case into NaN).

    ``array`` is the voxel data of ``path`` (any shape); integer arrays pass without a scan.

    Raises:
        InputError: ``{path}: N non-finite voxel(s) (NaN or Inf) out of M: ...``.
    """
    array = np.asanyarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(
            f"{path}: {bad} non-finite voxel(s) (NaN or Inf) out of {array.size}: "
            "replace or mask them before running mvl"
        )


def check_same_grid(image_affine: np.ndarray, image_path: str | Path, label_affine: np.ndarray, label_path: str | Path) -> None:
    """Refuse a label whose voxel-to-world affine differs from its image's.

    The affines are nibabel's (``img.affine``: the sform, else the qform), 4x4. They must agree
    within :data:`AFFINE_TOLERANCE_MM` in translation and :data:`AFFINE_TOLERANCE_LINEAR` in the
    rotation/scale part (float32 header round-off is far below both).

    Raises:
        InputError: naming both files and how far apart the affines are.
    """
    a, b = np.asarray(image_affine, dtype=float), np.asarray(label_affine, dtype=float)
    shift = float(np.abs(a[:3, 3] - b[:3, 3]).max())
    linear = float(np.abs(a[:3, :3] - b[:3, :3]).max())
    if shift > AFFINE_TOLERANCE_MM or linear > AFFINE_TOLERANCE_LINEAR:
        raise InputError(
            f"label {label_path} does not lie on the grid of image {image_path}: their affines differ by "
            f"{shift:.4g} mm in translation and {linear:.4g} in rotation/scale "
            f"(tolerance {AFFINE_TOLERANCE_MM:g} mm, {AFFINE_TOLERANCE_LINEAR:g})"
        )
