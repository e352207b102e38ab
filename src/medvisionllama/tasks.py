"""Tasks: the ten Medical Segmentation Decathlon tasks, and any task folder of the user's.

A task is a folder in the MSD layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``) under
``data.dir``; ``data.tasks`` may name any such folder (:func:`task_info`). The ten MSD tasks are
known here (:data:`TASKS`): what each one's ``dataset.json`` declares; only they have published
numbers, and a folder that carries an MSD name must hold that task (:func:`msd_mismatch`, checked
by :func:`check_task_folders`), or the paper's numbers would be printed beside other data.

Modalities and label maps are the real tasks' (Antonelli et al., Nature Communications 2022);
``spacing`` and ``shape`` are typical values of the real images (millimetres, voxels) that the
synthetic generator imitates; ``cases`` is the number of labelled training cases of the real
release. The download addresses and checksums are MONAI's (``monai.apps.DecathlonDataset``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medvisionllama.errors import InputError

#: a task folder name (one path segment)
TASK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TaskInfo:
    """Metadata of one MSD task, as its ``dataset.json`` states it."""

    name: str  #: folder name, e.g. ``Task01_BrainTumour``
    description: str
    modality: dict[str, str]  #: channel index (string, as in dataset.json) -> name
    labels: dict[str, str]  #: label value (string) -> name; "0" is background
    kind: str  #: "CT" or "MRI": selects the intensity normalisation
    spacing: tuple[float, float, float]  #: typical voxel size in mm (x, y, z)
    shape: tuple[int, int, int]  #: typical image shape in voxels (x, y, z)
    cases: int  #: labelled training cases in the real release
    msd: bool = True  #: one of the ten MSD tasks (False: a user's task folder)

    @property
    def short(self) -> str:
        """``Task01`` from ``Task01_BrainTumour``."""
        return self.name.split("_", 1)[0]

    @property
    def num_channels(self) -> int:
        return len(self.modality)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in [
        TaskInfo(
            "Task01_BrainTumour",
            "Gliomas segmentation tumour and oedema in on brain images",
            {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "MRI", (1.0, 1.0, 1.0), (240, 240, 155), 484,
        ),
        TaskInfo(
            "Task02_Heart", "Left atrium segmentation",
            {"0": "MRI"}, {"0": "background", "1": "left atrium"},
            "MRI", (1.25, 1.25, 1.37), (320, 320, 110), 20,
        ),
        TaskInfo(
            "Task03_Liver", "Liver and liver tumor segmentation",
            {"0": "CT"}, {"0": "background", "1": "liver", "2": "cancer"},
            "CT", (0.77, 0.77, 1.0), (512, 512, 432), 131,
        ),
        TaskInfo(
            "Task04_Hippocampus", "Left and right hippocampus segmentation",
            {"0": "MRI"}, {"0": "background", "1": "Anterior", "2": "Posterior"},
            "MRI", (1.0, 1.0, 1.0), (36, 50, 35), 260,
        ),
        TaskInfo(
            "Task05_Prostate", "Prostate transitional zone and peripheral zone segmentation",
            {"0": "T2", "1": "ADC"}, {"0": "background", "1": "PZ", "2": "TZ"},
            "MRI", (0.62, 0.62, 3.6), (320, 320, 20), 32,
        ),
        TaskInfo(
            "Task06_Lung", "Lung and cancer segmentation",
            {"0": "CT"}, {"0": "background", "1": "cancer"},
            "CT", (0.78, 0.78, 1.25), (512, 512, 252), 63,
        ),
        TaskInfo(
            "Task07_Pancreas", "Pancreas and cancer segmentation",
            {"0": "CT"}, {"0": "background", "1": "pancreas", "2": "cancer"},
            "CT", (0.8, 0.8, 2.5), (512, 512, 93), 281,
        ),
        TaskInfo(
            "Task08_HepaticVessel", "Hepatic vessels and tumour segmentation",
            {"0": "CT"}, {"0": "background", "1": "Vessel", "2": "Tumour"},
            "CT", (0.8, 0.8, 5.0), (512, 512, 49), 303,
        ),
        TaskInfo(
            "Task09_Spleen", "Spleen segmentation",
            {"0": "CT"}, {"0": "background", "1": "spleen"},
            "CT", (0.79, 0.79, 5.0), (512, 512, 90), 41,
        ),
        TaskInfo(
            "Task10_Colon", "Colon cancer segmentation",
            {"0": "CT"}, {"0": "background", "1": "colon cancer primaries"},
            "CT", (0.78, 0.78, 5.0), (512, 512, 95), 126,
        ),
    ]
}

#: where MONAI's DecathlonDataset downloads each task (tar archives) and their md5 checksums
MSD_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/{task}.tar"


def _msd_task(name: str) -> TaskInfo | None:
    if name in TASKS:
        return TASKS[name]
    return next((task for task in TASKS.values() if task.short == name), None)


def get_task(name: str) -> TaskInfo:
    """The MSD task called ``name`` (``Task01_BrainTumour`` or its short form ``Task01``): what
    synthesising and downloading need (:func:`task_info` takes any task folder)."""
    task = _msd_task(name)
    if task is None:
        raise InputError(f"unknown task {name!r}: expected one of {', '.join(TASKS)} (only these can be "
                         "synthesised or downloaded; a task folder of your own goes into data.dir as it is)")
    return task


#: nominal values of a user's task whose folder cannot be read here (resource estimates only)
_NOMINAL_SPACING, _NOMINAL_SHAPE = (1.0, 1.0, 1.0), (256, 256, 128)


def task_info(name: str, data_dir: str | Path | None = None) -> TaskInfo:
    """Any task: an MSD task by name or short name, else the folder ``{data_dir}/{name}``.

    A user's task reads its ``dataset.json`` (name, modality, labels, numTraining) when the
    folder is there; otherwise (not yet present, or no ``data_dir``) only its name is known
    and the rest is nominal (one channel, one foreground class). Either way ``msd`` is False."""
    msd = _msd_task(name)
    if msd is not None:
        return msd
    if not isinstance(name, str) or not TASK_NAME_RE.fullmatch(name):
        raise InputError(f"task {name!r}: a task is a folder name (letters, digits, '.', '_', '-')")
    dataset = _read_dataset(Path(data_dir) / name) if data_dir is not None else None
    if dataset is None:
        return TaskInfo(name, "", {"0": "image"}, {"0": "background", "1": "foreground"}, "unknown",
                        _NOMINAL_SPACING, _NOMINAL_SHAPE, 0, msd=False)
    modality = {str(k): str(v) for k, v in (dataset.get("modality") or {"0": "image"}).items()}
    labels = {str(k): str(v) for k, v in (dataset.get("labels") or {"0": "background", "1": "foreground"}).items()}
    kind = "CT" if any(v.upper() == "CT" for v in modality.values()) else "MRI"
    cases = dataset.get("numTraining") or len(dataset.get("training") or [])
    return TaskInfo(name, str(dataset.get("description", "")), modality, labels, kind, _NOMINAL_SPACING,
                    _NOMINAL_SHAPE, int(cases), msd=False)


def _read_dataset(task_dir: Path) -> dict | None:
    """``task_dir/dataset.json`` as a mapping, None when absent; ``InputError`` when unreadable."""
    path = task_dir / "dataset.json"
    if not path.is_file():
        return None
    try:
        dataset = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(dataset, dict):
        raise InputError(f"{path}: expected a JSON object")
    return dataset


def _normalised(mapping: object) -> dict[str, str]:
    if not isinstance(mapping, dict):
        return {}
    return {str(k): str(v).strip().lower() for k, v in mapping.items()}


def msd_mismatch(task_dir: str | Path) -> str | None:
    """Why the folder ``task_dir``, named like an MSD task, does not hold that task: its
    ``dataset.json``'s labels or modalities (names compared case-insensitively) are not the
    task's. None when they match, when the folder is not named like an MSD task, or when it has
    no ``dataset.json`` yet (a download will bring the real one)."""
    task_dir = Path(task_dir)
    task = TASKS.get(task_dir.name)
    dataset = _read_dataset(task_dir) if task is not None else None
    if task is None or dataset is None:
        return None
    problems = []
    for key, expected in (("labels", task.labels), ("modality", task.modality)):
        found = _normalised(dataset.get(key))
        if found != _normalised(expected):
            problems.append(f"its {key} {found} are not {task.name}'s {_normalised(expected)}")
    if not problems:
        return None
    return (f"{task_dir / 'dataset.json'}: {'; '.join(problems)}. Refused: the paper's {task.name} numbers would "
            "be printed beside other data; rename the folder (any name is a task, without published numbers)")


def check_task_folders(data_dir: str | Path, tasks: Iterable[str]) -> None:
    """``InputError`` (:func:`msd_mismatch`'s line) for the first folder of ``tasks`` under
    ``data_dir`` that carries an MSD name but holds another task; folders not there pass."""
    for name in tasks:
        reason = msd_mismatch(Path(data_dir) / name)
        if reason:
            raise InputError(reason)
