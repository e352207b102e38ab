"""Preprocessing at the paper's real sizes: the project's path beside the equivalent MONAI chain.

Run by hand (not a test; each measurement in a fresh process, so peak memory is that one case's):

    python benchmarks/bench_preprocess.py                       # both cases, both sizes, 3 repeats
    python benchmarks/bench_preprocess.py --cases ct --sizes 128x128x80 --repeats 1

Cases (written once into ``--workdir`` as ``.nii.gz``, as the Decathlon ships them):

* ``brats``: an MSD BrainTumour-like MRI case, 4 x 240 x 240 x 155 float32 (a skull-stripped brain:
  zero outside an ellipsoid), LPS-oriented like the Decathlon's NIfTI files;
* ``ct``: a CT case, 512 x 512 x 300 int16 HU (air -1000 around a body ellipsoid), LPS.

Paths compared, each from the file on disk to the normalised float32 (C, X, Y, Z) array:

* ``project``: :func:`medvisionllama.data.preprocess.preprocess_image` (nibabel, reorientation by
  axis flips, Gaussian anti-aliasing + trilinear resize, the per-modality normalisation);
* ``monai``: ``LoadImage -> EnsureChannelFirst -> Orientation("RAS") -> Resize(trilinear,
  anti_aliasing=True) -> normalisation`` where the normalisation is ``NormalizeIntensity(nonzero,
  channel_wise)`` for MRI and ``ClipIntensityPercentiles(0.5, 99.5) -> NormalizeIntensity`` for CT
  (MONAI has no "percentiles of the voxels above -500 HU"; the chain does the same amount of work).

Reported per (case, size, path): seconds per case (median of ``--repeats`` fresh processes; each
process times one call after its imports, so interpreter and import start-up are excluded and
listed apart), peak resident memory of that process (``ru_maxrss``), and, for the project path, the
largest absolute difference to MONAI's output after both are normalised (the resize is the same
operation in both, so the arrays agree up to float rounding and the CT normalisation's mask).
Prints a Markdown table (paste it into benchmarks/results/preprocess.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fresh_process import measure_in_child, peak_rss_mb

CASES = {
    "brats": {"shape": (240, 240, 155), "channels": 4, "kind": "MRI"},
    "ct": {"shape": (512, 512, 300), "channels": 1, "kind": "CT"},
}
SIZES = ("128x128x80", "full")


def write_case(name: str, workdir: Path) -> Path:
    """The case's NIfTI file in ``workdir`` (made once, seeded)."""
    import nibabel as nib

    spec = CASES[name]
    path = workdir / f"{name}.nii.gz"
    if path.exists():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, y, z = spec["shape"]
    gx, gy, gz = np.ogrid[:x, :y, :z]
    inside = ((gx - x / 2) / (0.42 * x)) ** 2 + ((gy - y / 2) / (0.38 * y)) ** 2 + ((gz - z / 2) / (0.48 * z)) ** 2 < 1
    if spec["kind"] == "MRI":
        data = np.zeros((x, y, z, spec["channels"]), dtype=np.float32)
        for c in range(spec["channels"]):
            data[..., c] = np.where(inside, rng.normal(300 + 100 * c, 60, size=(x, y, z)), 0).astype(np.float32)
        spacing = (1.0, 1.0, 1.0)
    else:
        data = np.full((x, y, z), -1000, dtype=np.int16)
        data[inside] = rng.normal(40, 120, size=int(inside.sum())).astype(np.int16)
        spacing = (0.8, 0.8, 1.5)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS, as the Decathlon's files
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), tmp)
    tmp.replace(path)
    return path


def _monai_chain(kind: str, size: str):
    from monai.transforms import (
        ClipIntensityPercentiles, Compose, EnsureChannelFirst, LoadImage, NormalizeIntensity, Orientation, Resize,
    )

    steps = [LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS")]
    if size != "full":
        steps.append(Resize(spatial_size=[int(d) for d in size.split("x")], mode="trilinear", anti_aliasing=True))
    if kind == "CT":
        steps += [ClipIntensityPercentiles(lower=0.5, upper=99.5), NormalizeIntensity()]
    else:
        steps.append(NormalizeIntensity(nonzero=True, channel_wise=True))
    return Compose(steps)


def measure_one(path: str, case: str, size: str, which: str, save: str | None) -> dict:
    """One call in this process: seconds (after imports) and this process's peak resident memory."""
    spec = CASES[case]
    t_import = time.perf_counter()
    if which == "project":
        from medvisionllama.data.preprocess import preprocess_image

        run = lambda: preprocess_image(path, size=size, kind=spec["kind"], num_channels=spec["channels"])[0]  # noqa: E731
    else:
        chain = _monai_chain(spec["kind"], size)
        run = lambda: np.asarray(chain(path), dtype=np.float32)  # noqa: E731
    import_s = time.perf_counter() - t_import
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    if save:
        np.save(save, out)
    peak_mb = peak_rss_mb()
    return {"seconds": seconds, "import_s": import_s, "peak_mb": peak_mb, "shape": list(out.shape)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--sizes", nargs="+", default=list(SIZES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path(".bench-preprocess"))
    p.add_argument("--child", nargs=5, metavar=("PATH", "CASE", "SIZE", "WHICH", "SAVE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        path, case, size, which, save = args.child
        print(json.dumps(measure_one(path, case, size, which, None if save == "-" else save)))
        return 0

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}, numpy {np.__version__}\n")
    print("| case | size | path | s/case (median) | cases/s | peak RSS MB | imports s | abs diff to MONAI: max (mean) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for case in args.cases:
        path = str(write_case(case, args.workdir))
        for size in args.sizes:
            rows, outputs = {}, {}
            for which in ("monai", "project"):
                save = str(args.workdir / f"{case}-{size}-{which}.npy")
                runs = [measure_in_child(__file__, [path, case, size, which, save if i == 0 else "-"]) for i in range(args.repeats)]
                rows[which] = runs
                outputs[which] = np.load(save, mmap_mode="r")
            delta = np.abs(np.asarray(outputs["project"]) - np.asarray(outputs["monai"]))
            diff = f"{float(delta.max()):.3g} (mean {float(delta.mean()):.2g})"
            for which, runs in rows.items():
                s = statistics.median(r["seconds"] for r in runs)
                peak = max(r["peak_mb"] for r in runs)
                imports = statistics.median(r["import_s"] for r in runs)
                cell = diff if which == "project" else "–"
                print(f"| {case} {tuple(runs[0]['shape'])} | {size} | {which} | {s:.2f} | {1 / s:.2f} | {peak:.0f} | "
                      f"{imports:.1f} | {cell} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
