"""Synthetic MSD tasks: small, learnable stand-ins written in exactly the MSD layout.

``mvl synthesize`` writes ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and ``dataset.json`` as the
Medical Segmentation Decathlon does (Antonelli et al., Nature Communications 2022), so that every
later stage runs unchanged on synthetic and on real data. Each task keeps its real modality,
label map, channel count (4D X×Y×Z×C files for multi-modal tasks), voxel anisotropy and a typical
orientation (CT in an LPS-like frame, one MRI task in a permuted, coronal-like frame), scaled
down so that the largest dimension is at most ``max_dim``.

Contents imitate anatomy: a body (or head) ellipsoid with smooth texture, organs without a label
(the liver around hepatic vessels, the lungs around a lung tumour), and one randomly placed,
randomly sized ellipsoid per foreground class, nested where the real task nests them (cancer in
the liver, the tumour core in the oedema). Every class has its own intensity in every channel,
well above the noise, so a small model learns the task in a few epochs. CT is stored in
Hounsfield units (int16), MRI in arbitrary positive units (float32), labels as uint8.

Case files are named as the real task names them behind a ``synthetic_`` prefix
(``synthetic_BRATS_001``), so a synthetic case never passes for an MSD one.

Each case is drawn from its own generator seeded by ``(seed, task number, split, case index)``:
the same seed gives the same bytes, and adding cases leaves earlier cases unchanged.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medvisionllama.data.io import make_nifti, nifti_to_gz_bytes
from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_dir
from medvisionllama.tasks import TaskInfo, get_task

#: unlabelled cases written to ``imagesTs/`` per task
NUM_TEST_CASES = 2
#: no synthetic dimension is smaller than this, so thin-slab tasks keep a few slices per structure
MIN_DIM = 8


@dataclass(frozen=True)
class Structure:
    """One ellipsoid of a synthetic anatomy.

    Semi-axes are ``size`` times the field of view along each axis (times a random factor in
    0.8–1.2); ``elongation`` > 1 stretches one random direction into a tube (vessels). A
    structure with a ``parent`` is centred inside that structure and clipped to it.
    """

    name: str
    label: int  #: 0 for unlabelled anatomy (still painted with its own intensity)
    intensity: tuple[float, ...]  #: mean value per channel
    size: float
    parent: str | None = None  #: None: inside the body
    elongation: float = 1.0
    count: int = 1


@dataclass(frozen=True)
class Anatomy:
    """How one task's synthetic cases look."""

    outside: tuple[float, ...]  #: per channel, outside the body (air, or 0 for skull-stripped MRI)
    body: tuple[float, ...]  #: per channel, body tissue
    body_size: tuple[float, float, float]  #: body semi-axes as fractions of the field of view
    noise: tuple[float, ...]  #: white-noise standard deviation per channel
    texture: tuple[float, ...]  #: smooth-texture standard deviation per channel
    structures: tuple[Structure, ...]  #: painted in order: parents before children
    orientation: tuple[str, str, str]  #: axis codes of the affine (nibabel ``aff2axcodes``)
    case_name: tuple[str, int, int]  #: (prefix, first index, zero-padding), e.g. ("la_", 1, 3)
    dataset_name: str  #: the ``name`` field of the real dataset.json
    reference: str
    release: str


_LPS = ("L", "P", "S")
_RAS = ("R", "A", "S")
#: CT body: a fat and soft-tissue mix (about 0 HU on average) in air
_CT_BODY = dict(outside=(-1000.0,), body=(0.0,), noise=(8.0,), texture=(6.0,), orientation=_LPS)
_MSKCC = "Memorial Sloan Kettering Cancer Center"

ANATOMIES: dict[str, Anatomy] = {
    # channels: FLAIR, T1w, t1gd, T2w; skull-stripped (zero outside the brain)
    "Task01_BrainTumour": Anatomy(
        outside=(0.0, 0.0, 0.0, 0.0), body=(400.0, 500.0, 450.0, 350.0), body_size=(0.42, 0.45, 0.42),
        noise=(25.0, 25.0, 25.0, 25.0), texture=(20.0, 20.0, 20.0, 20.0),
        structures=(
            Structure("edema", 1, (750.0, 380.0, 420.0, 700.0), 0.32),
            Structure("enhancing tumour", 3, (550.0, 420.0, 950.0, 480.0), 0.23, parent="edema"),
            Structure("non-enhancing tumor", 2, (450.0, 250.0, 280.0, 850.0), 0.17, parent="enhancing tumour"),
        ),
        orientation=_RAS, case_name=("BRATS_", 1, 3), dataset_name="BRATS",
        reference="https://www.med.upenn.edu/sbia/brats2017.html", release="2.0 04/05/2018",
    ),
    "Task02_Heart": Anatomy(
        outside=(40.0,), body=(220.0,), body_size=(0.45, 0.40, 0.48), noise=(20.0,), texture=(20.0,),
        structures=(Structure("left atrium", 1, (520.0,), 0.21),),
        orientation=("L", "A", "S"), case_name=("la_", 1, 3), dataset_name="LeftAtrium",
        reference="King's College London", release="1.0 04/05/2018",
    ),
    "Task03_Liver": Anatomy(
        **_CT_BODY, body_size=(0.44, 0.36, 5.0),
        structures=(
            Structure("liver", 1, (120.0,), 0.28),
            Structure("cancer", 2, (40.0,), 0.17, parent="liver"),
        ),
        case_name=("liver_", 0, 0), dataset_name="LITS",
        reference="https://competitions.codalab.org/competitions/17094", release="1.0 04/05/2018",
    ),
    # a crop around the hippocampus: tissue fills the field of view; coronal-like frame
    "Task04_Hippocampus": Anatomy(
        outside=(300.0,), body=(300.0,), body_size=(5.0, 5.0, 5.0), noise=(25.0,), texture=(25.0,),
        structures=(
            Structure("Anterior", 1, (650.0,), 0.22),
            Structure("Posterior", 2, (480.0,), 0.22),
        ),
        orientation=("R", "S", "A"), case_name=("hippocampus_", 1, 3), dataset_name="Hippocampus",
        reference="Vanderbilt University Medical Center", release="1.0 04/05/2018",
    ),
    # channels: T2, ADC; the peripheral zone wraps the transitional zone
    "Task05_Prostate": Anatomy(
        outside=(30.0, 80.0), body=(280.0, 1400.0), body_size=(0.46, 0.40, 5.0),
        noise=(20.0, 80.0), texture=(20.0, 80.0),
        structures=(
            Structure("PZ", 1, (560.0, 1900.0), 0.28),
            Structure("TZ", 2, (180.0, 900.0), 0.20, parent="PZ"),
        ),
        orientation=_RAS, case_name=("prostate_", 0, 2), dataset_name="PROSTATE",
        reference="Radboud University, Nijmegen Medical Centre", release="1.0 04/05/2018",
    ),
    "Task06_Lung": Anatomy(
        **_CT_BODY, body_size=(0.44, 0.36, 5.0),
        structures=(
            Structure("lung", 0, (-850.0,), 0.28),
            Structure("cancer", 1, (70.0,), 0.19, parent="lung"),
        ),
        case_name=("lung_", 1, 3), dataset_name="Lung",
        reference="The Cancer Imaging Archive", release="1.0 04/05/2018",
    ),
    "Task07_Pancreas": Anatomy(
        **_CT_BODY, body_size=(0.44, 0.36, 5.0),
        structures=(
            Structure("pancreas", 1, (130.0,), 0.26, elongation=1.6),
            Structure("cancer", 2, (50.0,), 0.17, parent="pancreas"),
        ),
        case_name=("pancreas_", 1, 3), dataset_name="Pancreas", reference=_MSKCC, release="1.0 04/05/2018",
    ),
    "Task08_HepaticVessel": Anatomy(
        **_CT_BODY, body_size=(0.44, 0.36, 5.0),
        structures=(
            Structure("liver", 0, (110.0,), 0.33),
            Structure("Vessel", 1, (250.0,), 0.09, parent="liver", elongation=3.5, count=3),
            Structure("Tumour", 2, (40.0,), 0.16, parent="liver"),
        ),
        case_name=("hepaticvessel_", 1, 3), dataset_name="HepaticVessel", reference=_MSKCC,
        release="1.0 04/05/2018",
    ),
    "Task09_Spleen": Anatomy(
        **_CT_BODY, body_size=(0.44, 0.36, 5.0),
        structures=(Structure("spleen", 1, (120.0,), 0.21),),
        case_name=("spleen_", 1, 0), dataset_name="Spleen", reference=_MSKCC, release="1.0 06/08/2018",
    ),
    "Task10_Colon": Anatomy(
        **_CT_BODY, body_size=(0.44, 0.36, 5.0),
        structures=(Structure("colon cancer primaries", 1, (90.0,), 0.19),),
        case_name=("colon_", 1, 3), dataset_name="ColonCancer", reference=_MSKCC, release="1.0 04/05/2018",
    ),
}


def synthetic_grid(task: TaskInfo, max_dim: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and spacing of a task's synthetic images: the typical shape scaled so the largest
    dimension is at most ``max_dim`` (each at least :data:`MIN_DIM`), spacing scaled up so the
    field of view in millimetres stays the real one."""
    scale = min(1.0, max_dim / max(task.shape))
    shape = tuple(max(MIN_DIM, round(dim * scale)) for dim in task.shape)
    spacing = tuple(float(sp * dim / new) for sp, dim, new in zip(task.spacing, task.shape, shape))
    return shape, spacing  # type: ignore[return-value]


def orientation_affine(axcodes: tuple[str, str, str], spacing: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A 4×4 affine whose array axes point along ``axcodes`` (e.g. L, P, S) with the volume's
    centre at the world origin."""
    world_axis = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (code, sp) in enumerate(zip(axcodes, spacing)):
        affine[world_axis[code], axis] = sp if code in "RAS" else -sp
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape[:3], dtype=float) - 1.0) / 2.0)
    return affine


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3×3 rotation (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid(coords: np.ndarray, center: np.ndarray, semi_axes: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Boolean mask of an ellipsoid. ``coords`` is (3, X, Y, Z) in field-of-view fractions."""
    offset = coords - center[:, None, None, None]  # (3, X, Y, Z)
    local = np.einsum("ij,i...->j...", rotation, offset)  # (3, X, Y, Z) in the ellipsoid's frame
    return np.sum((local / semi_axes[:, None, None, None]) ** 2, axis=0) <= 1.0


def _case_rng(seed: int, task: TaskInfo, split: int, index: int) -> np.random.Generator:
    """The generator of one case: depends only on (seed, task number, split, case index)."""
    return np.random.default_rng([seed, int(task.short[4:]), split, index])


def synthesize_case(
    task: TaskInfo, rng: np.random.Generator, max_dim: int = 48
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case: ``(image, label, affine)``.

    ``image`` is (X, Y, Z) or, for multi-modal tasks, (X, Y, Z, C); int16 HU for CT, float32 for
    MRI. ``label`` is uint8 (X, Y, Z).
    """
    anatomy = ANATOMIES[task.name]
    base_shape, spacing = synthetic_grid(task, max_dim)
    # cases differ a little in extent, as real ones do (never above max_dim, never below MIN_DIM)
    shape = tuple(max(MIN_DIM, int(round(dim * rng.uniform(0.88, 1.0)))) for dim in base_shape)
    coords = np.stack(
        np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in shape], indexing="ij")
    )  # (3, X, Y, Z), each in (-0.5, 0.5)

    body_semi = np.asarray(anatomy.body_size) * rng.uniform(0.95, 1.05, 3)
    masks: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # name -> (center, semi, mask)
    body = _ellipsoid(coords, np.zeros(3), body_semi, np.eye(3))
    masks["body"] = [(np.zeros(3), body_semi, body)]

    num_channels = task.num_channels
    mean = np.empty((num_channels, *shape), dtype=np.float32)  # (C, X, Y, Z)
    for c in range(num_channels):
        mean[c] = np.where(body, anatomy.body[c], anatomy.outside[c])
    label = np.zeros(shape, dtype=np.uint8)

    for structure in anatomy.structures:
        parents = masks[structure.parent or "body"]
        placed = []
        for _ in range(structure.count):
            p_center, p_semi, p_mask = parents[rng.integers(len(parents))]
            semi = structure.size * rng.uniform(0.8, 1.2, 3)
            rotation, extent = np.eye(3), semi.copy()
            if structure.elongation != 1.0:  # a tube along a random direction (clipped to its parent)
                semi[0] *= structure.elongation
                rotation, extent = _random_rotation(rng), np.full(3, semi.min())
            # centre inside the parent, and far enough from the field-of-view border
            room = np.clip(np.minimum(p_semi - extent, 0.5 - extent), 0.0, None)
            center = np.clip(p_center + 0.6 * room * rng.uniform(-1.0, 1.0, 3), extent - 0.5, 0.5 - extent)
            mask = _ellipsoid(coords, center, semi, rotation)
            if structure.parent is not None:
                mask &= p_mask
            placed.append((center, semi, mask))
            shade = rng.normal(1.0, 0.04)  # a case-to-case contrast change
            for c in range(num_channels):
                mean[c][mask] = anatomy.body[c] + shade * (structure.intensity[c] - anatomy.body[c])
            if structure.label:
                label[mask] = structure.label
        masks[structure.name] = placed

    # partial-volume edges, then smooth tissue texture and white noise
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    texture /= texture.std() + 1e-12
    image = np.empty_like(mean)
    for c in range(num_channels):
        smooth = ndimage.gaussian_filter(mean[c], sigma=0.6)
        image[c] = smooth + body * anatomy.texture[c] * texture + anatomy.noise[c] * rng.standard_normal(shape)
    if task.kind == "CT":
        stored = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    else:
        stored = np.abs(image).astype(np.float32)  # magnitude images are non-negative
        if anatomy.outside[0] == 0.0:
            stored *= body  # skull-stripped: exactly zero outside the brain
    stored = np.moveaxis(stored, 0, -1)  # (X, Y, Z, C), the MSD's layout for multi-modal images
    if num_channels == 1:
        stored = stored[..., 0]  # (X, Y, Z)
    affine = orientation_affine(anatomy.orientation, spacing, shape)
    return np.ascontiguousarray(stored), label, affine


#: every synthetic case name starts with this, so that no figure, table or file of a synthetic run can
#: pass for an MSD case (``synthetic_BRATS_001``, not ``BRATS_001``); MSD's ``{prefix}_{NNN}`` shape is kept
SYNTHETIC_CASE_PREFIX = "synthetic_"


def case_name(task: TaskInfo, index: int) -> str:
    """The file stem of case ``index``: the real task's naming behind ``SYNTHETIC_CASE_PREFIX``.

    E.g. ``synthetic_BRATS_001``, ``synthetic_liver_0``.
    """
    prefix, first, width = ANATOMIES[task.name].case_name
    return f"{SYNTHETIC_CASE_PREFIX}{prefix}{index + first:0{width}d}"


def dataset_json(task: TaskInfo, train_ids: list[str], test_ids: list[str], seed: int) -> dict:
    """The ``dataset.json`` of a synthetic task, with the real task's fields."""
    anatomy = ANATOMIES[task.name]
    return {
        "name": anatomy.dataset_name,
        "description": task.description,
        "reference": anatomy.reference,
        "licence": "CC-BY-SA 4.0",
        "release": f"{anatomy.release} (synthetic stand-in, medvisionllama seed {seed})",
        "tensorImageSize": "4D" if task.num_channels > 1 else "3D",
        "modality": dict(task.modality),
        "labels": dict(task.labels),
        "numTraining": len(train_ids),
        "numTest": len(test_ids),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train_ids],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test_ids],
    }


def synthesize_task(task: str, output: Path, cases: int, seed: int, max_dim: int = 48) -> Path:
    """Write a synthetic MSD task folder to ``output`` (atomically) and return ``output``.

    Args:
        task: ``Task01_BrainTumour`` or its short form ``Task01``.
        output: the task folder to write; replaced if it exists.
        cases: labelled training cases (``imagesTr``/``labelsTr``); ``imagesTs`` gets
            :data:`NUM_TEST_CASES` unlabelled ones.
        seed: non-negative; the same seed gives byte-identical files.
        max_dim: the largest image dimension (at least :data:`MIN_DIM`).
    """
    info = get_task(task)
    if cases < 1:
        raise InputError(f"--cases must be at least 1, got {cases}")
    if seed < 0:
        raise InputError(f"--seed must be non-negative, got {seed}")
    if max_dim < MIN_DIM:
        raise InputError(f"--max-dim must be at least {MIN_DIM}, got {max_dim}")
    output = Path(output)
    train_ids = [case_name(info, i) for i in range(cases)]
    test_ids = [case_name(info, cases + i) for i in range(NUM_TEST_CASES)]
    with atomic_dir(output) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for split, ids in ((0, train_ids), (1, test_ids)):
            for offset, case_id in enumerate(ids):
                index = offset if split == 0 else cases + offset
                image, label, affine = synthesize_case(info, _case_rng(seed, info, split, index), max_dim)
                folder = "imagesTr" if split == 0 else "imagesTs"
                (tmp / folder / f"{case_id}.nii.gz").write_bytes(nifti_to_gz_bytes(make_nifti(image, affine)))
                if split == 0:
                    (tmp / "labelsTr" / f"{case_id}.nii.gz").write_bytes(nifti_to_gz_bytes(make_nifti(label, affine)))
        (tmp / "dataset.json").write_text(json.dumps(dataset_json(info, train_ids, test_ids, seed), indent=4) + "\n")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl synthesize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help="MSD task, e.g. Task01_BrainTumour or Task01")
    parser.add_argument("--output", required=True, type=Path, help="task folder to write (MSD layout)")
    parser.add_argument("--cases", type=int, default=10, help="labelled training cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-dim", type=int, default=48, help="largest image dimension (default 48)")
    args = parser.parse_args(argv)
    synthesize_task(task=args.task, output=args.output, cases=args.cases, seed=args.seed, max_dim=args.max_dim)
    return 0
