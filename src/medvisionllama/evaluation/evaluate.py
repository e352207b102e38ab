"""``mvl evaluate``: score one run's best checkpoint on its test split, on the original image grid.

For each test case: predict on the preprocessed volume (one forward pass at the model's input
size; sliding windows for ``full`` volumes), take the argmax, map it back to the original grid with
``restore_to_original`` (inverse resize and reorientation), and score it against the ORIGINAL
label file of the raw task folder with the original voxel spacing (HD95 in mm). Writes into the
run folder (docs/contracts.md):

- ``metrics.csv``: one row per test case and foreground class, each metric's value and its status
  (``defined``, ``penalised``, ``empty``: the conventions of :mod:`.metrics`) (written last: its
  presence means the evaluation finished);
- ``summary.json``: the same scores as nnU-Net's evaluation summary, readable by its
  ``load_summary_json`` (:func:`run_summary`): ``metric_per_case`` with ``prediction_file`` and
  ``reference_file``, nnU-Net's metrics (Dice, IoU, TP, FP, FN, TN, n_pred, n_ref) beside ours,
  ``mean`` per class, ``foreground_mean``, and per class and metric the counts of defined,
  penalised and empty cases; with the run key, seed and version;
- ``predictions/{case}.nii.gz``: every test case's prediction, original grid and affine (so a run
  can be re-scored, ensembled or inspected without retraining);
- ``samples.npz``: the first test case's axial slice through its largest foreground: image,
  label, prediction, Dice and the activation maps at V_E, V_LLM (models with a bridge) and V_D;
  and for each test case (the first :data:`MAX_CASE_SLICES`) ``case{i}_image`` (channel 0,
  ``(1, X, Y)``), ``case{i}_label``, ``case{i}_pred``, ``case{i}_id``, ``case{i}_dice`` and
  ``case{i}_slice`` of its own largest-foreground slice (the best, median and worst cases of the
  segmentation figures).
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
from medvisionllama.evaluation.metrics import STATUSES, SegmentationMetrics, confusion_counts, status_column
from medvisionllama.experiments import load_config
from medvisionllama.io_utils import atomic_dir, atomic_path, write_json_atomic
from medvisionllama.runtime import load_run_model, predict_logits, resolve_device
from medvisionllama.vocabulary import METRIC_NAMES, METRICS_COLUMNS, RUN_KEY_COLUMNS

log = logging.getLogger(__name__)

#: test cases whose slice ``samples.npz`` keeps (the first ones of the split; channel 0 only), from
#: which the segmentation figures pick the best, median and worst case
MAX_CASE_SLICES = 64


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


#: nnU-Net's per-class metrics of ``summary.json`` (``nnunetv2.evaluation.evaluate_predictions``):
#: Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN), undefined (null) when the class is in neither
#: mask; our ``dice`` and ``jaccard`` differ only there (1, status ``empty``: docs/contracts.md)
NNUNET_METRICS: tuple[str, ...] = ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref")


def _nnunet_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | int | None]:
    """nnU-Net's metrics of one case and class from its voxel counts."""
    union = tp + fp + fn
    return {"Dice": 2 * tp / (2 * tp + fp + fn) if union else None, "IoU": tp / union if union else None,
            "TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn}


def run_summary(
    scorer: SegmentationMetrics,
    run: dict[str, object],
    version: str = __version__,
    *,
    confusion: dict[str, dict[int, tuple[int, int, int, int]]] | None = None,
    files: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """``summary.json`` of a run, readable by nnU-Net's ``load_summary_json``.

    nnU-Net's keys: ``metric_per_case`` (one entry per case: ``prediction_file``,
    ``reference_file`` and ``metrics`` = {class index: {Dice, IoU, TP, FP, FN, TN, n_pred, n_ref,
    ...}}), ``mean`` ({class index: {metric: mean over the cases with a value}}) and
    ``foreground_mean`` ({metric: mean of the class means}). Besides nnU-Net's metrics each class
    carries ours (:data:`METRIC_NAMES`: ``dice``, ``jaccard``, ... ``hd95``, with our conventions)
    and ``status`` ({metric: defined, penalised, empty or skipped}). Our keys: ``case_id`` per case,
    ``run`` (the run key), ``seed``, ``version``, ``num_cases``, ``classes`` (index -> name) and
    ``counts`` ({class index: {metric: {status: cases}}}, plus ``"foreground"``). Class indices
    are strings (JSON keys); NaN (a skipped HD95, an undefined Dice) is null.

    ``confusion``: {case: {class: (TP, FP, FN, TN)}} voxel counts; ``files``: {case:
    (prediction file, reference file)}.
    """
    aggregated = scorer.aggregate()
    confusion = confusion or {}
    files = files or {}
    per_case: dict[str, dict[str, dict[str, object]]] = {}
    for row in scorer.rows:
        case, cls = str(row["case_id"]), int(row["class_index"])
        entry: dict[str, object] = {}
        if cls in confusion.get(case, {}):
            entry.update(_nnunet_metrics(*(int(v) for v in confusion[case][cls])))
        entry.update({m: _number(row[m]) for m in METRIC_NAMES})
        entry["status"] = {m: str(row[status_column(m)]) for m in METRIC_NAMES}
        per_case.setdefault(case, {})[str(cls)] = entry
    classes = {str(c): name for c, name in scorer.class_names.items()}
    numeric = [*NNUNET_METRICS, *METRIC_NAMES]

    def class_mean(cls: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for metric in numeric:
            values = [e[metric] for e in (per_case[c].get(cls, {}) for c in per_case) if metric in e]
            scored = [float(v) for v in values if v is not None]
            if values:
                out[metric] = _number(np.mean(scored)) if scored else None
        return out

    mean = {c: class_mean(c) for c in classes}
    foreground_mean: dict[str, float | None] = {}
    for metric in numeric:
        values = [m[metric] for m in mean.values() if m.get(metric) is not None]
        if any(metric in m for m in mean.values()):
            foreground_mean[metric] = _number(np.mean(values)) if values else None

    def counts(stats: dict[str, float]) -> dict[str, dict[str, int]]:
        return {m: {s: int(stats[f"n_{m}_{s}"]) for s in STATUSES} for m in METRIC_NAMES}

    cases = []
    for case, metrics in per_case.items():
        prediction, reference = files.get(case, (None, None))
        cases.append({"case_id": case, "prediction_file": prediction, "reference_file": reference, "metrics": metrics})
    return {
        "run": dict(run), "seed": run["seed"], "version": version, "num_cases": len(per_case), "classes": classes,
        "metric_per_case": cases, "mean": mean, "foreground_mean": foreground_mean,
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
    fold: int | None = None,
) -> pd.DataFrame:
    """Evaluate a run; returns the ``metrics.csv`` table (also written into ``run_dir``).

    ``fold``: score that cross-validation fold's ``test`` cases (the run must have been trained on
    the same fold: another fold's test cases were its training cases)."""
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
    trained_fold = (ckpt.get("training") or {}).get("fold")
    if trained_fold != fold:
        raise InputError(f"{ckpt_path}: trained on {'the single split' if trained_fold is None else f'fold {trained_fold}'}"
                         f", but {'the single split' if fold is None else f'fold {fold}'} was asked for: its test cases "
                         "would include training cases")
    test_ids = read_split(split, fold)["test"]
    if not test_ids:
        raise InputError(f"{split}: the test split is empty")
    dev = resolve_device(device)
    model, config = load_run_model(ckpt, dev)
    roi = tuple(int(v) for v in config.img_size)
    foreground = {c: n for c, n in info.class_names.items() if c != 0}
    scorer = SegmentationMetrics(foreground)
    sample: dict[str, Any] = {}
    confusion: dict[str, dict[int, tuple[int, int, int, int]]] = {}
    files: dict[str, tuple[str, str]] = {}
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
            counts = confusion_counts(pred_orig, gt, list(foreground))  # (K, 4): TP, FP, FN, TN
            confusion[case_id] = {c: tuple(int(v) for v in counts[i]) for i, c in enumerate(foreground)}
            files[case_id] = (str((run_dir / "predictions" / f"{case_id}.nii.gz").resolve()), str(label_path.resolve()))
            affine = np.asarray(meta["original_affine"], dtype=float)
            save_nifti(make_nifti(pred_orig, affine), predictions_dir / f"{case_id}.nii.gz")  # written case by case
            z = largest_foreground_slice(label)
            dices = [r["dice"] for r in rows if not np.isnan(r["dice"])]
            if index < MAX_CASE_SLICES:  # every case's slice: the figures pick best, median and worst
                sample.update({
                    f"case{index}_image": image[:1, :, :, z].astype(np.float32), f"case{index}_id": np.array(case_id),
                    f"case{index}_label": label[:, :, z].astype(np.uint8), f"case{index}_pred": pred[:, :, z].astype(np.uint8),
                    f"case{index}_dice": np.float32(np.mean(dices) if dices else np.nan), f"case{index}_slice": np.int64(z),
                })
            if index == 0:
                sample.update({
                    "image": image[:, :, :, z].astype(np.float32), "label": label[:, :, z].astype(np.uint8),
                    "pred": pred[:, :, z].astype(np.uint8), "case_id": np.array(case_id),
                    "dice": np.float32(np.mean(dices) if dices else np.nan), "slice_index": np.int64(z),
                })
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
    if fold is not None:  # the replicate's fold (a long table takes it from the run folder, seed{s}-fold{k})
        run["fold"] = int(fold)

    write_json_atomic(run_dir / "summary.json", run_summary(scorer, run, confusion=confusion, files=files))
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
    p.add_argument("--fold", type=int, default=None,
                   help="cross-validation fold whose 'test' cases are scored (default: the single split)")
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
                 progress=not args.no_progress, fold=args.fold)
    return 0
