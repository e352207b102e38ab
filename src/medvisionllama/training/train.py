"""``mvl train``: train one run (task x model variant x attention x input size x seed).

The paper (Section 4.1): Adam, learning rate 1e-5, batch size 4, cross-entropy, 100 epochs,
augmentation where a task has few cases. Each epoch appends a row to ``history.csv`` (train and
validation loss and mean foreground Dice from argmax predictions) and saves
``checkpoint_last.pt`` (and ``checkpoint_best.pt`` on a new best validation Dice), all
atomically. When ``checkpoint_last.pt`` exists the run continues from it, and ends exactly as an
uninterrupted run would on CPU (the RNG states travel in the checkpoint; augmentation draws depend
only on seed, epoch and case). ``run.json`` is written last: a run is finished when it exists.

Validation runs on whole preprocessed volumes: one forward pass at the model's input size, sliding
windows for ``full`` volumes (which train on random crops of ``--img-size``).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medvisionllama import __version__
from medvisionllama.errors import InputError
from medvisionllama.evaluation.inference import autocast, build_run_model, predict_logits, resolve_device
from medvisionllama.evaluation.metrics import foreground_dice
from medvisionllama.io_utils import write_json_atomic, write_text_atomic
from medvisionllama.training.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng,
    differing_fields,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from medvisionllama.training.data import (
    CaseDataset,
    build_augmentation,
    build_random_crop,
    make_loader,
    resolve_augment,
)
from medvisionllama.data.preprocessed import PreprocessedInfo, read_preprocessed
from medvisionllama.data.split import read_split
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION, HISTORY_COLUMNS, parse_size

log = logging.getLogger(__name__)

#: training settings that must match a checkpoint to resume from it (``epochs`` may grow)
RESUME_KEYS = ("lr", "batch_size", "augment", "seed", "img_size")


class NonFiniteLossError(InputError):
    """The loss became NaN or infinite; the message names the epoch, the step and the cases."""


# ------------------------------------------------------------------------------ helpers
def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if arr.size and (~np.isnan(arr)).any() else float("nan")


def _history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(float(row[k])) if k != "epoch" else int(row[k])) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def _better(value: float, best: float | None) -> bool:
    if best is None:
        return True
    if math.isnan(value):
        return False
    return math.isnan(best) or value > best


def run_one_epoch_validation(
    model: torch.nn.Module,
    loader,
    roi_size: tuple[int, int, int],
    device: torch.device,
    num_classes: int,
) -> tuple[float, float]:
    """Mean cross-entropy per voxel and mean foreground Dice of the validation cases."""
    model.eval()
    loss_sum, count, dices = 0.0, 0, []
    with torch.no_grad():
        for image, label, _ in loader:
            logits = predict_logits(model, image, roi_size, device)  # (B, K, X, Y, Z) float32 CPU
            loss_sum += float(F.cross_entropy(logits, label, reduction="mean")) * image.shape[0]
            count += image.shape[0]
            dices += foreground_dice(logits.argmax(1), label, num_classes).nanmean(dim=1).tolist()
    return loss_sum / max(count, 1), _nanmean(dices)


# ------------------------------------------------------------------------------ the run
def train_run(
    *,
    preprocessed: str | Path,
    split: str | Path,
    run_dir: str | Path,
    model: str = "vit",
    attention: str = DEFAULT_ATTENTION,
    seed: int = 0,
    epochs: int = 100,
    batch_size: int = 4,
    lr: float = 1e-5,
    augment: str = "auto",
    img_size: tuple[int, int, int] | None = None,
    patch_size: int | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    llm_layer: int | None = None,
    llm_weights: str | None = None,
    dropout: float | None = None,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one run into ``run_dir`` (resuming from ``checkpoint_last.pt``); returns ``run.json``'s content.

    Raises:
        InputError: bad inputs, a checkpoint that does not match the requested settings or is
            corrupt, or :class:`NonFiniteLossError` when the loss is not finite.
    """
    from medvisionllama.models import ModelConfig

    if epochs < 1 or batch_size < 1 or not lr > 0 or num_workers < 0:
        raise InputError(
            f"--epochs {epochs}, --batch-size {batch_size}, --lr {lr}, --num-workers {num_workers}: "
            "epochs and batch size must be >= 1, lr > 0, workers >= 0"
        )
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info: PreprocessedInfo = read_preprocessed(preprocessed)
    splits = read_split(split)
    unknown = sorted(set(splits["train"] + splits["val"]) - set(info.case_ids))
    if unknown:
        raise InputError(f"{split}: case(s) {unknown[:5]} are not in the preprocessed folder {preprocessed}")
    if not splits["val"]:
        raise InputError(f"{split}: the val split is empty; validation Dice selects the best checkpoint")
    if info.size_tuple is None and img_size is None:
        raise InputError(f"{preprocessed}: size 'full' has volumes of varying shape; give --img-size XxYxZ (the training crop)")
    roi = tuple(int(v) for v in (img_size or info.size_tuple))  # type: ignore[arg-type]
    if info.size_tuple is not None and img_size is not None and tuple(img_size) != info.size_tuple:
        raise InputError(f"--img-size {img_size} differs from the preprocessed size {info.size}; leave it out")
    do_augment = resolve_augment(augment, len(splits["train"]))

    overrides = dict(
        patch_size=patch_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        llm_layer=llm_layer, llm_weights=llm_weights, dropout=dropout,
    )
    try:
        config = ModelConfig(
            model=model, attention=attention, in_channels=info.num_channels, num_classes=info.num_classes,
            img_size=roi, **{k: v for k, v in overrides.items() if v is not None},
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"model settings: {exc}") from exc
    training = {
        "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "optimizer": "adam",
        "loss": "cross_entropy", "augment": bool(do_augment), "augment_requested": str(augment),
        "seed": int(seed), "img_size": list(roi), "device": dev.type,
        "precision": "bf16-autocast" if dev.type == "cuda" else "float32",
        "preprocessed": str(preprocessed), "split": str(split),
    }
    data_meta = info.to_checkpoint()

    # seeds everywhere; the model (and a random frozen block) is drawn from the seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    import random

    random.seed(seed)
    net, config = build_run_model(config.to_dict(), seed, dev)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)

    history: list[dict[str, Any]] = []
    best: float | None = None
    best_epoch = 0
    start_epoch = 0
    last_path, best_path = run_dir / "checkpoint_last.pt", run_dir / "checkpoint_best.pt"
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        diffs = differing_fields(ckpt["model_config"], config.to_dict(), "model.")
        diffs += differing_fields(
            {k: ckpt["training"].get(k) for k in RESUME_KEYS}, {k: training[k] for k in RESUME_KEYS}, "training."
        )
        if diffs:
            raise InputError(f"{last_path}: checkpoint was trained with other settings ({'; '.join(diffs)}); "
                             "use another --run-dir or delete the checkpoint")
        if ckpt["epoch"] > epochs:
            raise InputError(f"{last_path}: checkpoint has {ckpt['epoch']} epochs, more than --epochs {epochs}")
        try:
            net.load_trainable_state_dict(ckpt["model_state"])
            optimizer.load_state_dict(ckpt["optimizer_state"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputError(f"{last_path}: weights do not fit the model ({exc})") from exc
        restore_rng(ckpt["rng"], generator)
        history, best, best_epoch, start_epoch = list(ckpt["history"]), ckpt["best_metric"], ckpt["best_epoch"], ckpt["epoch"]
        log.info("resuming %s from epoch %d of %d", run_dir, start_epoch, epochs)

    def load_case(case_id: str):
        return info.load_case(case_id)

    train_transform = build_augmentation(roi if info.size_tuple is None else None) if do_augment else (
        build_random_crop(roi) if info.size_tuple is None else None
    )
    train_set = CaseDataset(load_case, splits["train"], transform=train_transform, seed=seed)
    val_set = CaseDataset(load_case, splits["val"])
    pin = dev.type == "cuda"
    train_loader = make_loader(train_set, batch_size=batch_size, shuffle=True, generator=generator,
                               num_workers=num_workers, pin_memory=pin)
    val_loader = make_loader(val_set, batch_size=batch_size if info.size_tuple else 1, shuffle=False,
                             generator=None, num_workers=num_workers, pin_memory=pin)

    num_classes = info.num_classes
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        net.train()
        train_set.set_epoch(epoch)
        loss_sum, seen, dices = 0.0, 0, []
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
        for step, (image, label, case_ids) in enumerate(bar, start=1):
            image = image.to(dev, non_blocking=True)
            label = label.to(dev, non_blocking=True)
            with autocast(dev):
                logits = net(image)  # (B, K, X, Y, Z)
            loss = F.cross_entropy(logits.float(), label)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"{run_dir}: loss is {loss_value} at epoch {epoch}, step {step} (cases {', '.join(case_ids)}); "
                    f"checkpoints of epoch {epoch - 1} are kept. "
                    "Check these cases for NaN/inf voxels or lower --lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * image.shape[0]
            seen += image.shape[0]
            dices += foreground_dice(logits.detach().argmax(1).cpu(), label.cpu(), num_classes).nanmean(dim=1).tolist()
            bar.set_postfix(loss=f"{loss_value:.4f}")
        val_loss, val_dice = run_one_epoch_validation(net, val_loader, roi, dev, num_classes)
        row = {
            "epoch": epoch, "train_loss": loss_sum / seen, "train_dice": _nanmean(dices),
            "val_loss": val_loss, "val_dice": val_dice, "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        improved = _better(val_dice, best)
        if improved:
            best, best_epoch = val_dice, epoch
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "model_config": config.to_dict(), "training": training, "data": data_meta,
            "model_state": {k: v.detach().cpu() for k, v in net.trainable_state_dict().items()},
            "optimizer_state": optimizer.state_dict(), "epoch": epoch, "best_metric": best,
            "best_epoch": best_epoch, "history": history, "rng": capture_rng(generator),
            "seed": int(seed), "version": __version__,
        }
        if improved:
            save_checkpoint(best_path, checkpoint)
        save_checkpoint(last_path, checkpoint)
        write_text_atomic(run_dir / "history.csv", _history_csv(history))
        log.info(
            "epoch %d/%d  train loss %.4f dice %.4f  val loss %.4f dice %.4f  %.1fs%s",
            epoch, epochs, row["train_loss"], row["train_dice"], val_loss, val_dice, row["seconds"],
            "  (best)" if improved else "",
        )

    if not best_path.exists():  # resumed a finished run whose best file was removed: keep the contract
        raise InputError(f"{best_path}: missing although {last_path} exists; delete the run folder and retrain")
    summary = {
        "task": data_meta.get("task"), "size": data_meta.get("size"), "model": config.model,
        "attention": config.attention, "seed": int(seed), "model_config": config.to_dict(), "training": training,
        "data": data_meta, "params": dict(zip(("total", "trainable"), net.parameter_counts())),
        "train_seconds": float(sum(r["seconds"] for r in history)), "epochs": len(history),
        "best_epoch": best_epoch, "best_val_dice": best, "final": history[-1] if history else None,
        "device": dev.type, "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch_version": torch.__version__, "version": __version__,
    }
    write_json_atomic(run_dir / "run.json", summary)
    return summary


# ------------------------------------------------------------------------------ command line
def _size(value: str) -> tuple[int, int, int]:
    dims = parse_size(value)
    if dims is None:
        raise argparse.ArgumentTypeError("--img-size must be XxYxZ, not 'full'")
    return dims


def _optional_int(value: str) -> int | None:
    return None if value.lower() in {"none", "null", ""} else int(value)


def _optional_str(value: str) -> str | None:
    return None if value.lower() in {"none", "null", ""} else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mvl train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io_ = p.add_argument_group("inputs and outputs")
    io_.add_argument("--preprocessed", required=True, help="preprocessed task folder (results/preprocessed/{task}/{size})")
    io_.add_argument("--split", required=True, help="split JSON (results/splits/{task}.json)")
    io_.add_argument("--run-dir", required=True, help="run folder; resumes from its checkpoint_last.pt")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="vit", help="vit | mlp | <llm> | <llm>-random (default: vit)")
    m.add_argument("--attention", default=DEFAULT_ATTENTION,
                   help=" | ".join(ATTENTIONS))
    m.add_argument("--img-size", type=_size, default=None, help="model input XxYxZ (only for 'full' preprocessing)")
    m.add_argument("--patch-size", type=int, default=None)
    m.add_argument("--hidden-size", type=int, default=None)
    m.add_argument("--num-layers", type=int, default=None)
    m.add_argument("--num-heads", type=int, default=None)
    m.add_argument("--llm-layer", type=_optional_int, default=None, help="decoder layer index (default: the last)")
    m.add_argument("--llm-weights", type=_optional_str, default=None, help="local HF folder, GGUF file, or none")
    m.add_argument("--dropout", type=float, default=None)
    t = p.add_argument_group("training")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--augment", choices=["auto", "on", "off"], default="auto",
                   help="auto: on when the train split has < 30 cases")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train_run(
        preprocessed=args.preprocessed, split=args.split, run_dir=args.run_dir, model=args.model,
        attention=args.attention, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        augment=args.augment, img_size=args.img_size, patch_size=args.patch_size, hidden_size=args.hidden_size,
        num_layers=args.num_layers, num_heads=args.num_heads, llm_layer=args.llm_layer,
        llm_weights=args.llm_weights, dropout=args.dropout, device=args.device, num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    log.info("finished %s: best val Dice %.4f at epoch %d, %.1fs", args.run_dir, summary["best_val_dice"] or float("nan"),
             summary["best_epoch"], summary["train_seconds"])
    return 0
