"""The ten Medical Segmentation Decathlon tasks: what each one's ``dataset.json`` declares.

Modalities and label maps are the real tasks' (Antonelli et al., Nature Communications 2022);
``spacing`` and ``shape`` are typical values of the real images (millimetres, voxels) that the
synthetic generator imitates; ``cases`` is the number of labelled training cases of the real
release. The download addresses and checksums are MONAI's (``monai.apps.DecathlonDataset``).
"""

from __future__ import annotations

from dataclasses import dataclass

from medvisionllama.errors import InputError


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


def get_task(name: str) -> TaskInfo:
    """The task called ``name`` (``Task01_BrainTumour`` or its short form ``Task01``)."""
    if name in TASKS:
        return TASKS[name]
    for task in TASKS.values():
        if task.short == name:
            return task
    raise InputError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
