"""``mvl evaluate``: score one run's best checkpoint on its test split, on the original image grid.

For each test case: predict on the preprocessed volume (one forward pass at the model's input
size; sliding windows for ``full`` volumes), take the argmax, map it back to the original grid with
``restore_to_original`` (inverse resize and reorientation), and score it against the ORIGINAL
label file of the raw task folder with the original voxel spacing (HD95 in mm). Writes into the
run folder (docs/contracts.md):

- ``metrics.csv``: one row per test case and foreground class, each metric's value and its status
  (``defined``, ``penalised``, ``empty``: the conventions of :mod:`.metrics`) (written last: its
  presence means the evaluation finished);
- ``summary.json``: the same scores in the shape of nnU-Net's evaluation summary
  (:func:`run_summary`): ``metric_per_case``, ``mean`` per class, ``foreground_mean``, and per class
  and metric the counts of defined, penalised and empty cases; with the run key, seed and version;
- ``predictions/{case}.nii.gz``: every test case's prediction, original grid and affine (so a run
  can be re-scored, ensembled or inspected without retraining);
- ``samples.npz``: the first test case's axial slice through its largest foreground: image,
  label, prediction, Dice and the activation maps at V_E, V_LLM (models with a bridge) and V_D.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from medvisionllama.checkpoint import load_checkpoint
from medvisionllama.data.io import load_nifti, make_nifti, save_nifti
from medvisionllama.data.preprocess import restore_to_original
from medvisionllama.data.preprocessed import read_preprocessed
from medvisionllama.data.split import read_split
from medvisionllama.errors import InputError
from medvisionllama.evaluation.inference import activation_maps, largest_foreground_slice
from medvisionllama import __version__
from medvisionllama.evaluation.metrics import STATUSES, SegmentationMetrics, status_column
from medvisionllama.experiments import load_config
from medvisionllama.io_utils import atomic_dir, atomic_path, write_json_atomic
from medvisionllama.runtime import load_run_model, predict_logits, resolve_device
from medvisionllama.vocabulary import METRIC_NAMES, METRICS_COLUMNS, RUN_KEY_COLUMNS

log = logging.getLogger(__name__)


def load_original_label(path: Path, shape: list[int]) -> np.ndarray:
    """The raw label volume (X, Y, Z) uint8, checked against the image's original shape."""
    data = np.asanyarray(load_nifti(path).dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if list(data.shape) != list(shape):
        raise InputError(f"{path}: label shape {tuple(data.shape)} differs from the image's original shape {tuple(shape)}")
    return np.rint(data).astype(np.uint8)


def _model_input(image: np.ndarray, roi: tuple[int, int, int]) -> torch.Tensor:
    """(1, C, *roi): the volume itself when it has the model's input size, else resized to it."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]  # (1, C, X, Y, Z)
    if tuple(t.shape[2:]) != roi:
        t = torch.nn.functional.interpolate(t, size=roi, mode="trilinear", align_corners=False)
    return t


def _number(value: float) -> float | None:
    """A JSON number: NaN (a skipped HD95) becomes null."""
    value = float(value)
    return None if math.isnan(value) else value


def run_summary(scorer: SegmentationMetrics, run: dict[str, object], version: str = __version__) -> dict[str, Any]:
    """``summary.json`` of a run, in the shape nnU-Net's evaluation summary has.

    Keys: ``run`` (task, model, attention, size, seed), ``seed``, ``version``, ``num_cases``,
    ``classes`` (index -> name), ``metric_per_case`` (one entry per case: ``case_id`` and
    ``metrics`` = {class index: {metric: value, "<metric>_status": status}}), ``mean`` ({class
    index: {metric: mean over cases}}), ``foreground_mean`` ({metric: mean of the class means}) and
    ``counts`` ({class index: {metric: {status: cases}}}, plus ``"foreground"``: summed over
    classes). Class indices are strings (JSON keys); NaN (a skipped HD95) is null.
    """
    aggregated = scorer.aggregate()
    per_case: dict[str, dict[str, dict[str, object]]] = {}
    for row in scorer.rows:
        entry = {m: _number(row[m]) for m in METRIC_NAMES}
        entry.update({status_column(m): str(row[status_column(m)]) for m in METRIC_NAMES})
        per_case.setdefault(str(row["case_id"]), {})[str(row["class_index"])] = entry
    classes = {str(c): name for c, name in scorer.class_names.items()}

    def counts(stats: dict[str, float]) -> dict[str, dict[str, int]]:
        return {m: {s: int(stats[f"n_{m}_{s}"]) for s in STATUSES} for m in METRIC_NAMES}

    return {
        "run": dict(run), "seed": run["seed"], "version": version, "num_cases": len(per_case), "classes": classes,
        "metric_per_case": [{"case_id": case, "metrics": metrics} for case, metrics in per_case.items()],
        "mean": {c: {m: _number(aggregated[name][m]) for m in METRIC_NAMES} for c, name in classes.items()},
        "foreground_mean": {m: _number(aggregated["mean"][m]) for m in METRIC_NAMES},
        "counts": {**{c: counts(aggregated[name]) for c, name in classes.items()},
                   "foreground": counts(aggregated["mean"])},
    }


def evaluate_run(
    *,
    run_dir: str | Path,
    preprocessed: str | Path,
    split: str | Path,
    data_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate a run; returns the ``metrics.csv`` table (also written into ``run_dir``)."""
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    ckpt_path = Path(checkpoint) if checkpoint else run_dir / "checkpoint_best.pt"
    ckpt = load_checkpoint(ckpt_path)
    info = read_preprocessed(preprocessed)
    trained = ckpt["data"]
    if (trained["size"], trained["num_channels"], trained["num_classes"]) != (info.size, info.num_channels, info.num_classes):
        raise InputError(
            f"{ckpt_path}: trained on size {trained['size']} with {trained['num_channels']} channel(s) and "
            f"{trained['num_classes']} classes, but {preprocessed} has size {info.size}, {info.num_channels} "
            f"channel(s), {info.num_classes} classes"
        )
    test_ids = read_split(split)["test"]
    if not test_ids:
        raise InputError(f"{split}: the test split is empty")
    dev = resolve_device(device)
    model, config = load_run_model(ckpt, dev)
    roi = tuple(int(v) for v in config.img_size)
    foreground = {c: n for c, n in info.class_names.items() if c != 0}
    scorer = SegmentationMetrics(foreground)
    sample: dict[str, Any] = {}
    cases = tqdm(test_ids, desc=f"evaluate {run_dir}", unit="case", disable=not progress)
    # every prediction, on the original grid; the folder replaces the old one once all are written
    with atomic_dir(run_dir / "predictions") as predictions_dir:
        for index, case_id in enumerate(cases):
            meta = info.case_meta(case_id)
            image, label = info.load_case(case_id)
            with torch.no_grad():
                logits = predict_logits(model, torch.from_numpy(image)[None], roi, dev)  # (1, K, X, Y, Z)
            pred = logits[0].argmax(0).numpy().astype(np.uint8)  # (X, Y, Z) preprocessed grid
            pred_orig = restore_to_original(pred, meta)
            label_path = data_dir / meta.get("label_source", f"labelsTr/{case_id}.nii.gz")
            gt = load_original_label(label_path, meta["original_shape"])
            rows = scorer.update(case_id, pred_orig, gt, spacing=meta["original_spacing"])
            affine = np.asarray(meta["original_affine"], dtype=float)
            save_nifti(make_nifti(pred_orig, affine), predictions_dir / f"{case_id}.nii.gz")  # written case by case
            if index == 0:
                z = largest_foreground_slice(label)
                dices = [r["dice"] for r in rows if not np.isnan(r["dice"])]
                sample = {
                    "image": image[:, :, :, z].astype(np.float32), "label": label[:, :, z].astype(np.uint8),
                    "pred": pred[:, :, z].astype(np.uint8), "case_id": np.array(case_id),
                    "dice": np.float32(np.mean(dices) if dices else np.nan), "slice_index": np.int64(z),
                }
                zr = min(int(round((z + 0.5) * roi[2] / image.shape[3] - 0.5)), roi[2] - 1)
                maps = activation_maps(model, _model_input(image, roi), max(zr, 0), dev)
                for name, m in maps.items():  # (rx, ry) on the model grid -> (X, Y) of the slice
                    t = torch.from_numpy(m)[None, None]
                    sample[name] = torch.nn.functional.interpolate(t, size=image.shape[1:3], mode="bilinear",
                                                                   align_corners=False)[0, 0].numpy()

    table = pd.DataFrame(scorer.rows)
    run = dict(zip(RUN_KEY_COLUMNS, (trained["task"], config.model, config.attention, trained["size"], int(ckpt["seed"]))))
    for key, value in run.items():
        table[key] = value
    table = table[list(METRICS_COLUMNS)]

    write_json_atomic(run_dir / "summary.json", run_summary(scorer, run))
    with atomic_path(run_dir / "samples.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **sample)
    with atomic_path(run_dir / "metrics.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    summary = scorer.aggregate()["mean"]
    log.info("%s: test Dice %.4f, HD95 %.2f mm over %d case(s)", run_dir, summary["dice"], summary["hd95"], len(test_ids))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mvl evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None,
                   help="YAML with the training: settings (the pipeline's results/config/evaluate.yaml): "
                        "training.device (default auto)")
    p.add_argument("--run-dir", required=True, help="run folder (holds checkpoint_best.pt); outputs go here")
    p.add_argument("--preprocessed", required=True, help="preprocessed task folder the run was trained on")
    p.add_argument("--split", required=True, help="split JSON (its 'test' cases are scored)")
    p.add_argument("--data-dir", required=True, help="raw MSD task folder (original labels, data/{task})")
    p.add_argument("--checkpoint", default=None, help="checkpoint to score (default: RUN_DIR/checkpoint_best.pt)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="where to run (default: the config's training.device, else auto); not a result setting")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config) if args.config else {}
    evaluate_run(run_dir=args.run_dir, preprocessed=args.preprocessed, split=args.split, data_dir=args.data_dir,
                 checkpoint=args.checkpoint,
                 device=args.device or str((config.get("training") or {}).get("device", "auto")),
                 progress=not args.no_progress)
    return 0
