"""Training data: preprocessed cases as tensors, seeded augmentation, and seeded data loaders.

Reproducibility rests on two choices:

- **Augmentation randomness is a function of (seed, epoch, case index)**, not of a stream that
  workers or an interruption could advance differently: each ``__getitem__`` reseeds the MONAI
  transforms from those three numbers. A resumed run, any ``num_workers``, and a straight run
  therefore draw the same augmentations.
- **Shuffling uses a dedicated ``torch.Generator``** whose state is saved in every checkpoint
  (with the torch, NumPy and Python RNG states) and restored on resume.
- **The epoch travels with each index** (:class:`EpochSampler` yields ``(epoch, index)``), because
  DataLoader workers are persistent (they keep their own copy of the dataset from the first
  epoch on, so an epoch set on the main process's dataset would never reach them). The sampler
  draws from the generators exactly as a plain DataLoader did, whether or not workers persist,
  so runs shuffle (and drop out) as before and a resumed run equals a straight one.

Augmentation (the paper applies it "where the number of images was substantially low"): random
flips along each axis, a small random rotation, and a random intensity shift, applied identically
to the image and its label (nearest-neighbour for the label). ``auto`` turns it on for tasks with
fewer than :data:`AUGMENT_AUTO_BELOW` training cases.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medvisionllama.errors import InputError

#: ``--augment auto`` augments when the training split has fewer cases than this
AUGMENT_AUTO_BELOW = 30


def resolve_augment(augment: str | bool, num_train_cases: int) -> bool:
    """``"on"``/``"off"``/``"auto"`` (or a bool) -> whether to augment."""
    if isinstance(augment, bool):
        return augment
    if augment == "on":
        return True
    if augment == "off":
        return False
    if augment == "auto":
        return num_train_cases < AUGMENT_AUTO_BELOW
    raise InputError(f"--augment {augment!r}: expected auto, on or off")


def build_augmentation(roi_size: Sequence[int] | None = None):
    """The MONAI dictionary transforms applied to ``{"image": (C,X,Y,Z), "label": (1,X,Y,Z)}``.

    ``roi_size``: when given (training on ``full`` volumes), a random crop of that size is taken
    first (volumes smaller than it are zero-padded).
    """
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandRotated,
        RandShiftIntensityd,
        RandSpatialCropd,
        SpatialPadd,
    )

    keys = ["image", "label"]
    transforms = []
    if roi_size is not None:
        transforms += [SpatialPadd(keys, spatial_size=list(roi_size)), RandSpatialCropd(keys, roi_size=list(roi_size), random_size=False)]
    transforms += [
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
        RandRotated(
            keys, range_x=0.26, range_y=0.26, range_z=0.26, prob=0.3,  # up to ~15 degrees
            mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True,
        ),
        RandShiftIntensityd("image", offsets=0.1, prob=0.5),
    ]
    return Compose(transforms)


def build_random_crop(roi_size: Sequence[int]):
    """Pad-then-random-crop to ``roi_size`` (training on ``full`` volumes without augmentation)."""
    from monai.transforms import Compose, RandSpatialCropd, SpatialPadd

    keys = ["image", "label"]
    return Compose([SpatialPadd(keys, spatial_size=list(roi_size)), RandSpatialCropd(keys, roi_size=list(roi_size), random_size=False)])


class CaseDataset(Dataset):
    """Preprocessed cases of one split as ``(image float32 (C,X,Y,Z), label int64 (X,Y,Z), case_id)``.

    Args:
        load_case: ``case_id -> (image (C,X,Y,Z) float32, label (X,Y,Z) uint8)``.
        case_ids: the split's case ids, in order.
        transform: MONAI dictionary transform (random), or ``None``.
        seed: base seed of the augmentation randomness.
        cache: keep loaded arrays in memory (the preprocessed sizes are small).
    """

    def __init__(
        self,
        load_case: Callable[[str], tuple[np.ndarray, np.ndarray]],
        case_ids: Sequence[str],
        *,
        transform=None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if not case_ids:
            raise ValueError("case_ids is empty")
        self.load_case = load_case
        self.case_ids = list(case_ids)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.cache = cache
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating a loader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.case_ids)

    def _load(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        if case_id in self._cache:
            return self._cache[case_id]
        image, label = self.load_case(case_id)
        if image.ndim != 4 or label.shape != image.shape[1:]:
            raise InputError(
                f"case {case_id!r}: image shape {image.shape} and label shape {label.shape} do not match (C,X,Y,Z) / (X,Y,Z)"
            )
        if self.cache:
            self._cache[case_id] = (image, label)
        return image, label

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Case ``index`` as drawn in the dataset's epoch, or ``(epoch, index)`` (the sampler's
        form, which carries the epoch into DataLoader workers)."""
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        case_id = self.case_ids[index]
        image, label = self._load(case_id)
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        label_t = torch.from_numpy(np.ascontiguousarray(label)).long()
        if self.transform is not None:
            # the draw depends only on (seed, epoch, index): identical across resume and workers
            self.transform.set_random_state(seed=(self.seed * 1_000_003 + epoch * 7919 + index) % (2**32))
            out = self.transform({"image": image_t, "label": label_t[None].float()})
            # plain tensors: MONAI's MetaTensor would route every later op through its
            # __torch_function__ (seconds per run for these tiny models)
            image_t = torch.as_tensor(out["image"]).as_subclass(torch.Tensor).float().contiguous()
            label_t = torch.as_tensor(out["label"]).as_subclass(torch.Tensor)[0].round().long().contiguous()
        return image_t, label_t, case_id


def seed_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """Seed NumPy and Python in a DataLoader worker from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class EpochSampler(Sampler):
    """``(epoch, index)`` for every case of ``dataset``, shuffled by ``generator`` or in order, where
    ``epoch`` is the dataset's (:meth:`CaseDataset.set_epoch`) when iteration starts.

    Each pass draws from the generators what a plain ``DataLoader(shuffle=..., generator=...)``
    drew: one int64 (its workers' base seed, from ``generator``, or torch's global generator when
    ``None``) when the pass starts, then a permutation, then an empty one at the end (PyTorch's
    ``RandomSampler``). Persistent workers would skip the first draw after the first epoch; here
    it is made every pass, so the RNG states a checkpoint saves do not depend on the workers.
    """

    def __init__(self, dataset: CaseDataset, *, shuffle: bool, generator: torch.Generator | None) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        epoch, n = self.dataset.epoch, len(self.dataset)
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if not self.shuffle:
            yield from ((epoch, i) for i in range(n))
            return
        yield from ((epoch, i) for i in torch.randperm(n, generator=self.generator).tolist())
        torch.randperm(n, generator=self.generator)


def make_loader(
    dataset: CaseDataset,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with seeded shuffling (:class:`EpochSampler`), seeded workers that persist
    across epochs, and 4 batches prefetched per worker."""
    workers = dict(persistent_workers=True, prefetch_factor=4) if num_workers > 0 else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, shuffle=shuffle, generator=generator),
        # the loader's own draws (its workers' base seed) come from a generator of their own:
        # the sampler makes the draws the RNG states depend on
        generator=torch.Generator().manual_seed(0),
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        pin_memory=pin_memory,
        drop_last=False,
        **workers,
    )
