"""Sliding-window evaluation at full size: the project's path beside MONAI's sliding_window_inference.

Run by hand (not a test; each measurement in a fresh process, so peak memory is that call's):

    python benchmarks/bench_sliding_window.py                    # ViT and ViT + SmolLM2-shaped block
    python benchmarks/bench_sliding_window.py --models vit --volume 240x240x155 --repeats 1

The project evaluates a ``full``-size run with :func:`medvisionllama.runtime.predict_logits`
(windows of the model's input size, 25 % overlap, Gaussian weighting, batches of 4 windows; bf16
autocast on CUDA). It delegates the windowing to MONAI, so this benchmark checks what the wrapper
costs and that it changes nothing: on the same model (seeded weights) and the same volume (a
4-channel, Task01-shaped 240 x 240 x 155 random volume), ``project`` calls ``predict_logits`` and
``monai`` calls ``sliding_window_inference`` directly with the same arguments. Reported: seconds
(median of ``--repeats`` fresh processes, after imports and model construction), peak resident
memory of the process, and the largest absolute difference between the two logit volumes
(expected 0 on the CPU). Prints a Markdown table (paste it into benchmarks/results/sliding_window.md).
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

ROI = "128x128x80"


def _build(model_name: str, roi: tuple[int, int, int]):
    import torch

    from medvisionllama.models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(model="vit" if model_name == "vit" else "smollm2-135m-random", img_size=roi, in_channels=4,
                         num_classes=4, patch_size=16, hidden_size=128, num_layers=2, num_heads=4)
    return build_model(config).eval()


def measure_one(model_name: str, volume: str, roi: str, which: str, save: str | None) -> dict:
    import torch

    from medvisionllama.vocabulary import parse_size

    roi_dims = parse_size(roi)
    torch.manual_seed(1)
    image = torch.randn(1, 4, *parse_size(volume))
    model = _build(model_name, roi_dims)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    with torch.no_grad():
        if which == "project":
            from medvisionllama.runtime import predict_logits

            logits = predict_logits(model, image, roi_dims, device)
        else:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(image, roi_size=list(roi_dims), sw_batch_size=4, predictor=model,
                                              overlap=0.25, mode="gaussian", sw_device=device, device=device).float()
    seconds = time.perf_counter() - t0
    if save:
        np.save(save, logits.numpy())
    return {"seconds": seconds, "peak_mb": peak_rss_mb(),
            "shape": list(logits.shape)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit", "smollm2-135m-random"])
    p.add_argument("--volume", default="240x240x155")
    p.add_argument("--roi", default=ROI)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path(".bench-sliding-window"))
    p.add_argument("--child", nargs=5, metavar=("MODEL", "VOLUME", "ROI", "WHICH", "SAVE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        model, volume, roi, which, save = args.child
        print(json.dumps(measure_one(model, volume, roi, which, None if save == "-" else save)))
        return 0

    import torch

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}; volume 4 x {args.volume}, windows {args.roi}, overlap 0.25\n")
    print("| model | path | s/volume (median) | peak RSS MB | max abs diff to MONAI |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model in args.models:
        rows, outputs = {}, {}
        for which in ("monai", "project"):
            save = str(args.workdir / f"{model}-{which}.npy")
            rows[which] = [measure_in_child(__file__, [model, args.volume, args.roi, which, save if i == 0 else "-"])
                           for i in range(args.repeats)]
            outputs[which] = np.load(save, mmap_mode="r")
        diff = float(np.max(np.abs(np.asarray(outputs["project"]) - np.asarray(outputs["monai"]))))
        for which, runs in rows.items():
            s = statistics.median(r["seconds"] for r in runs)
            peak = max(r["peak_mb"] for r in runs)
            cell = f"{diff:.3g}" if which == "project" else "–"
            print(f"| {model} | {which} | {s:.2f} | {peak:.0f} | {cell} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
