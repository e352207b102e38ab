"""``mvl train``: train one run (task x model variant x attention x input size x seed).

The paper (Section 4.1): Adam, learning rate 1e-5, batch size 4, cross-entropy, 100 epochs,
augmentation where a task has few cases. Each epoch appends a row to ``history.csv`` (train and
validation loss and mean foreground Dice from argmax predictions) and saves
``checkpoint_last.pt`` (and ``checkpoint_best.pt`` on a new best validation Dice), all
atomically. When ``checkpoint_last.pt`` exists the run continues from it, and ends exactly as an
uninterrupted run would on CPU (the RNG states travel in the checkpoint; augmentation draws depend
only on seed, epoch and case). ``run.json`` is written last: a run is finished when it exists.

A run's identity is what it was made from (:func:`run_inputs`): content hashes of the preprocessed
folder (arrays and manifest), of the split it reads, of the LLM layer file and of the settings that
change a result. They travel in every checkpoint and in ``run.json``; a checkpoint is resumed (or a
finished run reused) only when they match, otherwise the whole run folder is set aside in
``superseded/`` with a log line naming the input that changed, and the run trains from scratch.
Settings that cannot change a result (device, threads, data-loader workers, progress bars, the
paths of the inputs) are not part of the identity.

Validation runs on whole preprocessed volumes: one forward pass at the model's input size, sliding
windows for ``full`` volumes (which train on random crops of ``model.full_img_size``).

Settings travel as a file: ``--config`` is the pipeline's resolved configuration
(``results/config.yaml``) or any YAML file with ``model:`` and ``training:`` sections. Every key of
``model:`` except ``full_img_size`` is a :class:`~medvisionllama.models.ModelConfig` field, so a new
model hyperparameter needs the schema and ``ModelConfig`` only. The command line names the run
(``--model``, ``--attention``, ``--seed``) and its files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medvisionllama import __version__
from medvisionllama.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng,
    differing_fields,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from medvisionllama.data.preprocessed import PreprocessedInfo, read_preprocessed
from medvisionllama.data.split import read_split
from medvisionllama.errors import InputError
from medvisionllama.evaluation.metrics import foreground_dice
from medvisionllama.experiments import load_config
from medvisionllama.io_utils import write_json_atomic, write_text_atomic
from medvisionllama.models import ModelConfig
from medvisionllama.cluster.device import describe as describe_device
from medvisionllama.runtime import autocast, build_run_model, predict_logits, resolve_device
from medvisionllama.training.data import (
    CaseDataset,
    build_augmentation,
    build_random_crop,
    make_loader,
    resolve_augment,
)
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION, FULL_SIZE, HISTORY_COLUMNS, parse_size

log = logging.getLogger(__name__)

#: keys of ``run.json``'s ``training`` that cannot change a result (not part of a run's identity)
RUNTIME_KEYS = ("epochs", "device", "precision", "preprocessed", "split", "augment_requested")
#: keys of the model config that cannot change a result (the layer file is hashed by content instead)
MODEL_RUNTIME_KEYS = ("llm_weights",)


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
    """Mean cross-entropy per voxel and mean foreground Dice of the validation cases, computed on
    ``device``; only the two scalars come back to the host, once."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count, dices = 0, []
    with torch.no_grad():
        for image, label, _ in loader:
            logits = predict_logits(model, image, roi_size, device, to_cpu=False)  # (B, K, X, Y, Z) float32
            label = label.to(device, non_blocking=True)
            loss_sum += F.cross_entropy(logits, label, reduction="mean").double() * image.shape[0]
            count += image.shape[0]
            dices.append(foreground_dice(logits.argmax(1), label, num_classes).nanmean(dim=1))
    return float(loss_sum) / max(count, 1), _nanmean(torch.cat(dices).tolist() if dices else [])


# ------------------------------------------------------------------------------ identity
def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str | Path) -> str:
    """SHA-256 over the relative paths and content hashes of every file below ``folder``, hidden
    files (``.snakemake_timestamp``, temporary names) left out: equal for byte-identical folders."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            digest.update(f"{rel.as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def _json_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def identity_settings(model_config: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The settings that change a run's result: its model config and training settings without the
    runtime-only keys (:data:`RUNTIME_KEYS`, :data:`MODEL_RUNTIME_KEYS`)."""
    model = {f"model.{k}": v for k, v in model_config.items() if k not in MODEL_RUNTIME_KEYS}
    train = {f"training.{k}": v for k, v in training.items() if k not in RUNTIME_KEYS}
    return json.loads(json.dumps({**model, **train}, default=str))  # tuples as lists, as stored


def run_inputs(preprocessed: str | Path, splits: dict[str, Any], llm_weights: str | None,
               model_config: dict[str, Any], training: dict[str, Any]) -> dict[str, str | None]:
    """What a run is made from, as content hashes (``run.json``'s ``inputs``): ``preprocessed`` (the
    arrays and manifest of its task and size), ``split`` (the case lists it reads), ``llm_layer``
    (the layer file; None without one, or the source's name when it is not a local file) and
    ``settings`` (:func:`identity_settings`)."""
    layer = None
    if llm_weights is not None:
        source = Path(llm_weights)
        layer = (file_digest(source) if source.is_file() else folder_digest(source) if source.is_dir()
                 else f"source:{llm_weights}")
    return {
        "preprocessed": folder_digest(preprocessed),
        "split": _json_digest({k: splits.get(k) for k in ("train", "val", "test")}),
        "llm_layer": layer,
        "settings": _json_digest(identity_settings(model_config, training)),
    }


#: how a changed input is named in the log
INPUT_NAMES = {"preprocessed": "the preprocessed arrays", "split": "the split", "llm_layer": "the LLM layer file",
               "settings": "the settings"}


def changed_inputs(stored: dict[str, Any] | None, current: dict[str, Any], ckpt: dict[str, Any],
                   model_config: dict[str, Any], training: dict[str, Any]) -> list[str]:
    """One phrase per input of ``current`` whose hash differs from the checkpoint's ``stored`` ones."""
    if not stored:
        return ["the checkpoint records no input hashes (made by an earlier version)"]
    out = []
    for key, name in INPUT_NAMES.items():
        if stored.get(key) == current[key]:
            continue
        if key == "settings":
            details = differing_fields(identity_settings(ckpt["model_config"], ckpt["training"]),
                                       identity_settings(model_config, training))
            out.append("; ".join(details) if details else name)
        else:
            source = {"preprocessed": training.get("preprocessed"), "split": training.get("split"),
                      "llm_layer": model_config.get("llm_weights")}[key]
            out.append(f"{name} ({source}) changed")
    return out


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrainingSettings:
    """The ``training:`` section of the pipeline config that one run uses (the paper's defaults)."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-5
    augment: str = "auto"
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.num_workers < 0:
            raise InputError(
                f"training settings epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}, "
                f"num_workers={self.num_workers}: epochs and batch size must be >= 1, lr > 0, workers >= 0"
            )


@dataclass(frozen=True)
class RunSettings:
    """Everything a run is trained with besides its name: the model settings (``ModelConfig``
    fields) and the training settings."""

    model: dict[str, Any] = field(default_factory=dict)
    training: TrainingSettings = field(default_factory=TrainingSettings)

    @classmethod
    def from_config(cls, config: dict[str, Any], size: str, where: str = "config") -> "RunSettings":
        """The settings of a run on input size ``size`` from a pipeline config's ``model:`` and
        ``training:`` sections (missing keys: the defaults). ``model.full_img_size`` becomes the
        model's ``img_size`` for runs on the ``full`` size, which need it."""
        model = dict(config.get("model") or {})
        full_img_size = model.pop("full_img_size", None)
        if size == FULL_SIZE:
            if not full_img_size:
                raise InputError(f"{where}: model.full_img_size must be set for runs on the 'full' input size")
            model["img_size"] = parse_size(str(full_img_size))
        known = {f for f in TrainingSettings.__dataclass_fields__}
        training = {k: v for k, v in (config.get("training") or {}).items() if k in known}
        try:
            return cls(model=model, training=TrainingSettings(**training))
        except TypeError as exc:
            raise InputError(f"{where}: training settings: {exc}") from None


# ------------------------------------------------------------------------------ the run
@dataclass
class RunState:
    """What changes from epoch to epoch and travels in ``checkpoint_last.pt``."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    epoch: int = 0


#: where a run folder's files go when its settings changed and it is retrained from scratch
SUPERSEDED = "superseded"


def set_aside(run_dir: Path, reason: str) -> Path:
    """Move the whole run of ``run_dir`` (checkpoints, history, run.json, evaluation outputs and
    predictions) into ``run_dir/superseded/`` (replacing an earlier one), so the run retrains from
    scratch; logs why. ``run.json`` and ``history.csv``, which Snakemake deletes before it re-runs
    the job, are written back from ``checkpoint_last.pt`` when missing, so the old run stays whole."""
    aside = run_dir / SUPERSEDED
    if aside.exists():
        shutil.rmtree(aside)
    aside.mkdir()
    for item in sorted(run_dir.iterdir()):
        if item.name != SUPERSEDED and not item.name.startswith("."):
            item.replace(aside / item.name)
    _complete_from_checkpoint(aside)
    log.warning("%s: %s; retraining from scratch, the previous run is in %s", run_dir, reason, aside)
    return aside


def _complete_from_checkpoint(folder: Path) -> None:
    """Write ``history.csv`` and ``run.json`` of a set-aside run from its last checkpoint when absent
    (``run.json`` then says ``"restored_from": "checkpoint_last.pt"``)."""
    last = folder / "checkpoint_last.pt"
    if not last.exists() or ((folder / "history.csv").exists() and (folder / "run.json").exists()):
        return
    ckpt = load_checkpoint(last)
    if not (folder / "history.csv").exists():
        write_text_atomic(folder / "history.csv", _history_csv(ckpt["history"]))
    if not (folder / "run.json").exists():
        history = ckpt["history"]
        write_json_atomic(folder / "run.json", {
            "task": ckpt["data"].get("task"), "size": ckpt["data"].get("size"),
            "model": ckpt["model_config"].get("model"), "attention": ckpt["model_config"].get("attention"),
            "seed": ckpt.get("seed"), "model_config": ckpt["model_config"], "training": ckpt["training"],
            "data": ckpt["data"], "inputs": ckpt.get("inputs"), "epochs": len(history),
            "best_epoch": ckpt["best_epoch"], "best_val_dice": ckpt["best_metric"],
            "final": history[-1] if history else None, "version": ckpt.get("version"),
            "restored_from": last.name,
        })


def resume(path: Path, net, optimizer, generator: torch.Generator, model_config: dict[str, Any],
           training: dict[str, Any], epochs: int, inputs: dict[str, Any]) -> RunState:
    """The state of ``checkpoint_last.pt`` loaded into ``net``, ``optimizer`` and ``generator``, after
    checking it was made from the same ``inputs`` (:func:`run_inputs`); a fresh state when there is
    no checkpoint.

    A checkpoint made from other inputs (data, split, layer file or settings) or with more epochs
    than ``epochs`` is not an error: something it was made from changed (Snakemake re-runs the job
    for that), so the run is set aside whole (:func:`set_aside`, the log names what changed) and
    trains from scratch, as a straight run on the new inputs would.
    """
    if not path.exists():
        return RunState()
    ckpt = load_checkpoint(path)
    diffs = changed_inputs(ckpt.get("inputs"), inputs, ckpt, model_config, training)
    if ckpt["epoch"] > epochs:
        diffs.append(f"training.epochs: {ckpt['epoch']} in checkpoint, {epochs} requested")
    if diffs:
        set_aside(path.parent, f"{path.name} was made from other inputs ({'; '.join(diffs)})")
        return RunState()
    try:
        net.load_trainable_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: weights do not fit the model ({exc})") from exc
    restore_rng(ckpt["rng"], generator)
    log.info("resuming %s from epoch %d of %d", path.parent, ckpt["epoch"], epochs)
    return RunState(list(ckpt["history"]), ckpt["best_metric"], ckpt["best_epoch"], ckpt["epoch"])


#: steps between progress-bar updates (each update reads the loss on the host)
PROGRESS_EVERY = 20


def train_one_epoch(net, optimizer, loader, dev: torch.device, num_classes: int, epoch: int, epochs: int,
                    run_dir: Path, progress: bool) -> tuple[float, float]:
    """One pass over the training cases: mean cross-entropy and mean foreground Dice (argmax).

    Nothing is read back to the host per step (a GPU stays busy): the loss sum, the per-case Dice
    and a flag of the first non-finite loss stay on ``dev`` and are read once, at the end.

    Raises :class:`NonFiniteLossError` naming the epoch, step and cases of the first non-finite
    loss; the caller then saves nothing, so the checkpoints of the previous epoch are kept.
    """
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    bad_step = torch.zeros((), dtype=torch.long, device=dev)  # first step with a non-finite loss; 0: none
    bad_loss = torch.zeros((), dtype=torch.float32, device=dev)
    seen, dices, cases = 0, [], []
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
    for step, (image, label, case_ids) in enumerate(bar, start=1):
        image = image.to(dev, non_blocking=True)
        label = label.to(dev, non_blocking=True)
        with autocast(dev):
            logits = net(image)  # (B, K, X, Y, Z)
        loss = F.cross_entropy(logits.float(), label)
        detached = loss.detach()
        first = ~torch.isfinite(detached) & (bad_step == 0)
        bad_step += first * step
        bad_loss = torch.where(first, detached, bad_loss)
        cases.append(case_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += detached.double() * image.shape[0]
        seen += image.shape[0]
        dices.append(foreground_dice(logits.detach().argmax(1), label, num_classes).nanmean(dim=1))
        if progress and step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{float(detached):.4f}")
    first_bad = int(bad_step)  # the one host synchronisation of the epoch
    if first_bad:
        raise NonFiniteLossError(
            f"{run_dir}: loss is {float(bad_loss)} at epoch {epoch}, step {first_bad} "
            f"(cases {', '.join(cases[first_bad - 1])}); checkpoints of epoch {epoch - 1} are kept. "
            "Check these cases for NaN/inf voxels or lower training.lr"
        )
    return float(loss_sum) / seen, _nanmean(torch.cat(dices).tolist())


def run_summary(net, config: ModelConfig, training: dict[str, Any], data_meta: dict[str, Any], seed: int,
                state: RunState, dev: torch.device, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``run.json``: what was trained, with what, for how long, and how well."""
    total, trainable = net.parameter_counts()
    history = state.history
    return {
        "task": data_meta.get("task"), "size": data_meta.get("size"), "model": config.model,
        "attention": config.attention, "seed": int(seed), "model_config": config.to_dict(), "training": training,
        "data": data_meta, "params": {"total": int(total), "trainable": int(trainable)},
        "train_seconds": float(sum(r["seconds"] for r in history)), "epochs": len(history),
        "best_epoch": state.best_epoch, "best_val_dice": state.best, "final": history[-1] if history else None,
        "device": dev.type, "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch_version": torch.__version__, "version": __version__, "inputs": inputs,
    }


def train_run(
    *,
    preprocessed: str | Path,
    split: str | Path,
    run_dir: str | Path,
    model: str = "vit",
    attention: str = DEFAULT_ATTENTION,
    seed: int = 0,
    settings: RunSettings | None = None,
    llm_weights: str | None = None,
    progress: bool = True,
    fold: int | None = None,
) -> dict[str, Any]:
    """Train one run into ``run_dir`` (resuming from ``checkpoint_last.pt``); returns ``run.json``'s content.

    ``fold``: train on that cross-validation fold's ``train``/``val`` cases of the split (None: the
    single split); recorded with the run, so evaluation refuses another fold's test cases.

    ``settings``: the model and training settings (default: the paper's); ``llm_weights``: where the
    frozen LLM layer is read from (the pipeline passes the layer file of ``mvl extract-layer``).

    Raises:
        InputError: bad inputs, a checkpoint that does not match the requested settings or is
            corrupt, or :class:`NonFiniteLossError` when the loss is not finite.
    """
    settings = settings or RunSettings()
    ts = settings.training
    run_dir = Path(run_dir)
    dev = resolve_device(ts.device)
    log.info("device: %s", describe_device(dev))  # every run's log names it (run.json: "device")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info: PreprocessedInfo = read_preprocessed(preprocessed)
    splits = read_split(split, fold)
    unknown = sorted(set(splits["train"] + splits["val"]) - set(info.case_ids))
    if unknown:
        raise InputError(f"{split}: case(s) {unknown[:5]} are not in the preprocessed folder {preprocessed}")
    if not splits["val"]:
        raise InputError(f"{split}: the val split is empty; validation Dice selects the best checkpoint")
    img_size = settings.model.get("img_size")
    if info.size_tuple is None and img_size is None:
        raise InputError(f"{preprocessed}: size 'full' has volumes of varying shape; set model.full_img_size (the training crop)")
    roi = tuple(int(v) for v in (img_size or info.size_tuple))  # type: ignore[arg-type]
    if info.size_tuple is not None and img_size is not None and tuple(img_size) != info.size_tuple:
        raise InputError(f"model img_size {tuple(img_size)} differs from the preprocessed size {info.size}; leave it out")
    do_augment = resolve_augment(ts.augment, len(splits["train"]))

    fields = {k: v for k, v in settings.model.items() if v is not None}
    fields.update(model=model, attention=attention, in_channels=info.num_channels, num_classes=info.num_classes,
                  img_size=roi)
    if llm_weights is not None:
        fields["llm_weights"] = llm_weights
    try:
        config = ModelConfig(**fields)
    except TypeError as exc:
        raise InputError(f"model settings: {exc}") from exc
    training = {
        "epochs": int(ts.epochs), "batch_size": int(ts.batch_size), "lr": float(ts.lr), "optimizer": "adam",
        "loss": "cross_entropy", "augment": bool(do_augment), "augment_requested": str(ts.augment),
        "seed": int(seed), "img_size": list(roi), "device": dev.type,
        "precision": "bf16-autocast" if dev.type == "cuda" else "float32",
        "preprocessed": str(preprocessed), "split": str(split), "fold": None if fold is None else int(fold),
    }
    data_meta = info.to_checkpoint()

    # seeds everywhere; the model (and a random frozen block) is drawn from the seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    net, config = build_run_model(config.to_dict(), seed, dev)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=ts.lr,
                                 fused=True if dev.type == "cuda" else None)
    generator = torch.Generator().manual_seed(seed)
    last_path, best_path = run_dir / "checkpoint_last.pt", run_dir / "checkpoint_best.pt"
    inputs = run_inputs(preprocessed, splits, llm_weights, config.to_dict(), training)
    state = resume(last_path, net, optimizer, generator, config.to_dict(), training, ts.epochs, inputs)

    train_transform = build_augmentation(roi if info.size_tuple is None else None) if do_augment else (
        build_random_crop(roi) if info.size_tuple is None else None
    )
    train_set = CaseDataset(info.load_case, splits["train"], transform=train_transform, seed=seed)
    val_set = CaseDataset(info.load_case, splits["val"])
    pin = dev.type == "cuda"
    train_loader = make_loader(train_set, batch_size=ts.batch_size, shuffle=True, generator=generator,
                               num_workers=ts.num_workers, pin_memory=pin)
    val_loader = make_loader(val_set, batch_size=ts.batch_size if info.size_tuple else 1, shuffle=False,
                             generator=None, num_workers=ts.num_workers, pin_memory=pin)

    for epoch in range(state.epoch + 1, ts.epochs + 1):
        t0 = time.perf_counter()
        train_set.set_epoch(epoch)
        train_loss, train_dice = train_one_epoch(net, optimizer, train_loader, dev, info.num_classes, epoch,
                                                 ts.epochs, run_dir, progress)
        val_loss, val_dice = run_one_epoch_validation(net, val_loader, roi, dev, info.num_classes)
        row = {"epoch": epoch, "train_loss": train_loss, "train_dice": train_dice,
               "val_loss": val_loss, "val_dice": val_dice, "seconds": time.perf_counter() - t0}
        state.history.append(row)
        state.epoch = epoch
        improved = _better(val_dice, state.best)
        if improved:
            state.best, state.best_epoch = val_dice, epoch
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "model_config": config.to_dict(), "training": training, "data": data_meta,
            "model_state": {k: v.detach().cpu() for k, v in net.trainable_state_dict().items()},
            "optimizer_state": optimizer.state_dict(), "epoch": epoch, "best_metric": state.best,
            "best_epoch": state.best_epoch, "history": state.history, "rng": capture_rng(generator),
            "seed": int(seed), "version": __version__, "inputs": inputs,
        }
        if improved:
            save_checkpoint(best_path, checkpoint)
        save_checkpoint(last_path, checkpoint)
        write_text_atomic(run_dir / "history.csv", _history_csv(state.history))
        log.info(
            "epoch %d/%d  train loss %.4f dice %.4f  val loss %.4f dice %.4f  %.1fs%s",
            epoch, ts.epochs, train_loss, train_dice, val_loss, val_dice, row["seconds"],
            "  (best)" if improved else "",
        )

    if not best_path.exists():  # resumed a finished run whose best file was removed: keep the contract
        raise InputError(f"{best_path}: missing although {last_path} exists; delete the run folder and retrain")
    # the declared outputs, rewritten even when no epoch ran: a finished run whose history.csv and
    # run.json were deleted (snakemake -f, a kill after the last checkpoint, a retried cluster job
    # whose evaluation failed and removed the run's outputs) gets them back from its checkpoint
    write_text_atomic(run_dir / "history.csv", _history_csv(state.history))
    summary = run_summary(net, config, training, data_meta, seed, state, dev, inputs)
    write_json_atomic(run_dir / "run.json", summary)
    return summary


# ------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mvl train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io_ = p.add_argument_group("inputs and outputs")
    io_.add_argument("--config", default=None,
                     help="YAML with the model: and training: settings (the pipeline's results/config.yaml); "
                          "default: the paper's settings")
    io_.add_argument("--preprocessed", required=True, help="preprocessed task folder (results/preprocessed/{task}/{size})")
    io_.add_argument("--split", required=True, help="split JSON (results/splits/{task}.json)")
    io_.add_argument("--run-dir", required=True, help="run folder; resumes from its checkpoint_last.pt")
    io_.add_argument("--llm-weights", default=None,
                     help="the frozen LLM layer's source: a layer file of `mvl extract-layer`, a local HF folder, "
                          "a GGUF file or a hub id (default: the registry's source)")
    run = p.add_argument_group("the run")
    run.add_argument("--model", default="vit", help="vit | mlp | <llm> | <llm>-random | <llm>-shuffled")
    run.add_argument("--attention", default=DEFAULT_ATTENTION, help=" | ".join(ATTENTIONS))
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--fold", type=int, default=None,
                     help="cross-validation fold of the split (its 'folds'); default: the single split")
    how = p.add_argument_group("execution")
    how.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                     help="where to train (default: the config's training.device); not part of the run's identity")
    how.add_argument("--num-workers", type=int, default=None,
                     help="data-loader worker processes (default: the config's training.num_workers)")
    how.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    how.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config) if args.config else {}
    runtime = {k: v for k, v in (("device", args.device), ("num_workers", args.num_workers)) if v is not None}
    if runtime:  # the pipeline passes these beside the settings file: they cannot change a result
        config = {**config, "training": {**(config.get("training") or {}), **runtime}}
    settings = RunSettings.from_config(config, read_preprocessed(args.preprocessed).size, where=args.config or "settings")
    summary = train_run(
        preprocessed=args.preprocessed, split=args.split, run_dir=args.run_dir, model=args.model,
        attention=args.attention, seed=args.seed, settings=settings, llm_weights=args.llm_weights,
        progress=not args.no_progress, fold=args.fold,
    )
    log.info("finished %s: best val Dice %.4f at epoch %d, %.1fs", args.run_dir, summary["best_val_dice"] or float("nan"),
             summary["best_epoch"], summary["train_seconds"])
    return 0
