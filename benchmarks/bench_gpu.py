"""The GPU path, measured and checked (issue 15): throughput, peak memory and correctness on CUDA.

One script, one output: ``benchmarks/results/gpu.md`` (rewritten atomically after every item, so a
run cut short still leaves what it measured). What it measures, in this order of importance, each
item only while ``--budget-s`` (seconds since the start) leaves room for it; the rest is listed as
skipped:

1. **training cases/s and peak GPU memory** of ViT + Llama-3.1-8B's layer (``llama3.1-8b-random``:
   real dimensions, random weights, no download) at 128×128×80, the issue's headline target
   (>= 20 cases/s), timed twice: with the lean step loop (no host synchronisation per step) and
   with ``training/train.py``'s current loop (``float(loss)`` and a CPU Dice per step);
2. **full size fits**: 240×240×152 (patch 8: 30·30·19 = 17,100 tokens) for every paper LLM,
   Gemma-2 first (its soft-capped attention is the one that used to need T×T matrices);
3. **correctness**: bf16 autocast vs float32 on a fixed batch; ``mvl train``'s resume vs a straight
   run on the GPU; ``mvl evaluate`` on the GPU vs on the CPU;
4. the remaining cells of the model × size table (ViT; each LLM at 64×64×40 and 128×128×80).

A training step is what ``mvl train`` does: batch 4 from the project's loader (``CaseDataset`` +
``make_loader``, seeded shuffling, pinned memory on CUDA) over a preprocessed folder this script
writes in the project's format (``manifest.json`` + ``cases/*.npy``), copy to the device, bf16
autocast forward, float32 cross-entropy, backward, Adam (lr 1e-5). Cases/s counts whole epochs
after a warm-up epoch, data loading included. Peak memory is ``torch.cuda.max_memory_allocated``
(and ``max_memory_reserved``) from before the model is built to the end of its steps.

``--dry`` runs the same code on the CPU in well under a minute: tiny volumes and tiny configs of
the same LLM families (Gemma-2's soft-capping and the chunked attention included), for testing
this script; its numbers mean nothing and its report says so.

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.md          # on a GPU machine
    python benchmarks/bench_gpu.py --dry --out /tmp/gpu-dry.md               # anywhere, < 1 min

``scripts/gpu/run-gpu-check.sh`` runs it on the lent H200 (see its header for the one call).
"""

from __future__ import annotations

import os

# deterministic cuBLAS for the resume check; must be set before the first cuBLAS handle exists
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medvisionllama.io_utils import write_text_atomic  # noqa: E402

PAPER_LLMS = ("llama3.1-8b", "gemma2-9b", "mistral-7b", "qwen2-7b", "yi1.5-9b")
HEADLINE = "llama3.1-8b-random"
SIZES = ("64x64x40", "128x128x80", "240x240x152")
FULL = "240x240x152"
#: size name -> volume actually used with --dry (tiny, divisible by the patch size 8)
DRY_SIZES = {"64x64x40": (16, 16, 8), "128x128x80": (16, 16, 16), "240x240x152": (24, 24, 16)}
#: cases written per size (a multiple of the batch); timed epochs after one warm-up epoch
CASES = {"64x64x40": 64, "128x128x80": 48, "240x240x152": 8}
TIMED_EPOCHS = {"64x64x40": 1, "128x128x80": 1, "240x240x152": 2}
#: seconds an item needs at least; it is skipped when less of the budget is left
NEEDS_S = {"64x64x40": 20.0, "128x128x80": 30.0, "240x240x152": 50.0, "check": 40.0}
BATCH = 4
TARGET_CASES_PER_S = 20.0
CARD_GIB = 80 * 1e9 / 2**30  # "fits within 80 GB": peak reserved below 80e9 bytes
BF16_REL_TOL = 5e-2  # relative L2 error of the logits, bf16 autocast vs float32
EVAL_DICE_TOL = 2e-2  # per case and class, GPU (bf16) vs CPU (float32) evaluation
TASK01_TRAIN_CASES = 339  # the paper's Appendix Table 2 setting (70 % of 484)


# ------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast (the project's CUDA precision; also available on the CPU for --dry)."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def tokens_of(shape: tuple[int, int, int], patch: int = 8) -> int:
    return math.prod(s // patch for s in shape)


def write_preprocessed(folder: Path, shape: tuple[int, int, int], cases: int, seed: int = 0) -> Path:
    """A preprocessed folder in the project's format (docs/contracts.md): Task01-like, 4 MRI
    channels, labels 0..3 from thresholded intensities (so classes are spatially coherent)."""
    if (folder / "manifest.json").exists():
        return folder
    rng = np.random.default_rng(seed)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "cases").mkdir(parents=True)
    base = rng.standard_normal((4, *shape), dtype=np.float32)  # (C, X, Y, Z)
    entries = []
    for i in range(cases):
        case = f"case_{i:03d}"
        image = np.roll(base, shift=(3 * i, 5 * i, 2 * i), axis=(1, 2, 3))  # distinct cases, one draw
        label = np.digitize(image[0], [0.5, 1.0, 1.5]).astype(np.uint8)  # (X, Y, Z) in 0..3
        np.save(tmp / "cases" / f"{case}_image.npy", image)
        np.save(tmp / "cases" / f"{case}_label.npy", label)
        entries.append({"case_id": case, "files": {"image": f"cases/{case}_image.npy", "label": f"cases/{case}_label.npy"},
                        "shape": list(shape)})
    manifest = {
        "task": "Task01_BrainTumour", "size": "x".join(map(str, shape)), "shape": list(shape), "kind": "MRI",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}, "num_channels": 4, "num_classes": 4,
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "cases": entries,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    tmp.rename(folder)
    return folder


# ------------------------------------------------------------------------------ dry mode
def _tiny_config(make_config: Callable[[], Any]) -> Any:
    """The same config class (so the same decoder layer and quirks), tiny: 2 layers, the real
    model's query/key-value head ratio, head size 8; Gemma-2 keeps its soft-capping."""
    real = make_config()
    groups = real.num_attention_heads // real.num_key_value_heads
    heads, head_dim = 2 * groups, 8
    extra = {}
    if hasattr(real, "attn_logit_softcapping"):
        extra.update(attn_logit_softcapping=real.attn_logit_softcapping, query_pre_attn_scalar=head_dim)
    return type(real)(hidden_size=heads * head_dim, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=2, head_dim=head_dim,
                      rms_norm_eps=real.rms_norm_eps, vocab_size=16, **extra)


@contextlib.contextmanager
def dry_registry() -> Iterator[None]:
    """Swap every paper LLM's registry config for a tiny one of the same class, and make the
    chunked attention use several chunks; both restored on exit."""
    from medvisionllama.llm import attention_kernels
    from medvisionllama.llm.registry import LLM_REGISTRY

    saved, chunk = dict(LLM_REGISTRY), attention_kernels.CHUNK_ELEMENTS
    try:
        for name in PAPER_LLMS:
            spec = saved[name]
            # config_values None: the layer count (and so the default, last, layer) comes from the tiny config
            LLM_REGISTRY[name] = dataclasses.replace(spec, make_config=lambda f=spec.make_config: _tiny_config(f),
                                                     config_values=None)
        attention_kernels.CHUNK_ELEMENTS = 2**12
        yield
    finally:
        LLM_REGISTRY.clear()
        LLM_REGISTRY.update(saved)
        attention_kernels.CHUNK_ELEMENTS = chunk


# ------------------------------------------------------------------------------ throughput
def measure_training(model_name: str, size_name: str, shape: tuple[int, int, int], data: Path,
                     device: torch.device, num_workers: int, timed_epochs: int, loop: str) -> dict[str, Any]:
    """Train ``model_name`` on ``data`` for one warm-up epoch and ``timed_epochs`` timed ones.

    ``loop``: ``lean`` (one host synchronisation per epoch) or ``train.py`` (as the trainer does
    today: ``float(loss)`` and a CPU foreground Dice every step).
    """
    from medvisionllama.evaluation.metrics import foreground_dice
    from medvisionllama.models import ModelConfig, build_model
    from medvisionllama.training.data import CaseDataset, make_loader
    from medvisionllama.data.preprocessed import read_preprocessed

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True
    info = read_preprocessed(data)
    torch.manual_seed(0)
    t_build = time.perf_counter()
    net = build_model(ModelConfig(model=model_name, in_channels=4, num_classes=4, img_size=shape), device=device,
                      load_weights=False)
    build_s = time.perf_counter() - t_build
    total, trainable = net.parameter_counts()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    dataset = CaseDataset(info.load_case, info.case_ids)
    loader = make_loader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0),
                         num_workers=num_workers, pin_memory=device.type == "cuda")
    net.train()
    losses: list[torch.Tensor] = []
    seen, t0, waited = 0, 0.0, 0.0
    for epoch in range(1 + timed_epochs):
        if epoch == 1:
            _sync(device)
            t0, seen, waited = time.perf_counter(), 0, 0.0
        batches = iter(loader)
        while True:
            t_ask = time.perf_counter()
            batch = next(batches, None)  # host time spent waiting for data: the loader starving the GPU
            waited += time.perf_counter() - t_ask
            if batch is None:
                break
            image, label, _ = batch
            image = image.to(device, non_blocking=True)
            label = label.to(device, non_blocking=True)
            with amp(device):
                logits = net(image)  # (B, K, X, Y, Z)
            loss = F.cross_entropy(logits.float(), label)
            if loop == "train.py" and not math.isfinite(float(loss.detach())):  # as train.py: waits for the forward
                raise FloatingPointError(f"loss is not finite ({model_name}, {size_name})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if loop == "train.py":  # as train.py: the step's Dice on the CPU
                foreground_dice(logits.detach().argmax(1).cpu(), label.cpu(), 4).nanmean(dim=1).tolist()
            else:
                losses.append(loss.detach())
            seen += image.shape[0]
    _sync(device)
    seconds = time.perf_counter() - t0
    if losses and not bool(torch.isfinite(torch.stack(losses)).all()):
        raise FloatingPointError(f"loss is not finite ({model_name}, {size_name})")
    result = {
        "model": model_name, "size": size_name, "shape": shape, "tokens": tokens_of(shape), "loop": loop,
        "params_total_m": total / 1e6, "params_trainable_m": trainable / 1e6, "build_s": build_s,
        "cases_per_s": seen / seconds, "s_per_step": seconds / math.ceil(seen / BATCH) if seen else float("nan"),
        "loader_wait": waited / seconds, "workers": num_workers, "status": "ok",
    }
    if device.type == "cuda":
        result["peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    del net, optimizer, loader
    return result


# ------------------------------------------------------------------------------ checks
def check_bf16_vs_fp32(model_name: str, shape: tuple[int, int, int], device: torch.device) -> dict[str, Any]:
    """Logits of one fixed batch with bf16 autocast (frozen layer in bf16) vs float32 throughout."""
    from medvisionllama.models import ModelConfig, build_model

    config = ModelConfig(model=model_name, in_channels=4, num_classes=4, img_size=shape)
    x = torch.randn(2, 4, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    logits = {}
    for precision, llm_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)  # identical trainable weights; the random frozen layer is seeded by name
        net = build_model(config, device=device, load_weights=False, llm_dtype=llm_dtype).eval()
        with torch.no_grad(), (amp(device) if precision == "bf16" else contextlib.nullcontext()):
            logits[precision] = net(x).float()
        del net
    ref, low = logits["fp32"], logits["bf16"]
    rel = float((low - ref).norm() / ref.norm())
    agree = float((low.argmax(1) == ref.argmax(1)).float().mean())
    return {"name": "bf16 autocast vs float32 forward", "passed": rel <= BF16_REL_TOL,
            "detail": f"{model_name} at {'x'.join(map(str, shape))}, batch 2: relative L2 error of the logits "
                      f"{rel:.2e} (max abs {float((low - ref).abs().max()):.2e}); argmax agreement {agree:.4f}",
            "tolerance": f"relative L2 error <= {BF16_REL_TOL:g} (bf16 keeps 8 bits of mantissa: ~4e-3 per operation)"}


def _tiny_task(work: Path, size: str) -> tuple[Path, Path, Path]:
    """A synthetic Task01 through the project's own data stages: raw folder, split, preprocessed."""
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.split import split_task
    from medvisionllama.data.synthesize import synthesize_task

    task = work / "data" / "Task01_BrainTumour"
    split = work / "splits" / "Task01_BrainTumour.json"
    pre = work / "preprocessed" / size
    if not (pre / "manifest.json").exists():
        synthesize_task("Task01", task, cases=10, seed=0, max_dim=40)
        split_task(task, split, seed=0)
        preprocess_task(task, size, pre)
    return task, split, pre


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    return ckpt["model_state"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _settings(epochs: int, device: torch.device) -> Any:
    """The run settings of the checks: the default model, ``epochs`` epochs, batch 2, no augmentation."""
    from medvisionllama.training.train import RunSettings, TrainingSettings

    return RunSettings(training=TrainingSettings(epochs=epochs, batch_size=2, augment="off", device=str(device)))


def check_resume(model_name: str, work: Path, device: torch.device, size: str) -> dict[str, Any]:
    """``train_run`` twice straight for 2 epochs and once 1 epoch + resume to 2, deterministic
    algorithms on; resume must differ from straight by no more than two straight runs differ."""
    from medvisionllama.training.train import train_run

    _, split, pre = _tiny_task(work, size)
    common = dict(preprocessed=pre, split=split, model=model_name, seed=0, progress=False)
    for run in ("straight_a", "straight_b", "resumed"):  # a kept --workdir must not make them resume
        shutil.rmtree(work / run, ignore_errors=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        train_run(run_dir=work / "straight_a", settings=_settings(2, device), **common)
        train_run(run_dir=work / "straight_b", settings=_settings(2, device), **common)
        train_run(run_dir=work / "resumed", settings=_settings(1, device), **common)
        train_run(run_dir=work / "resumed", settings=_settings(2, device), **common)
    finally:
        torch.use_deterministic_algorithms(previous)
    a, b, r = (_state(work / d) for d in ("straight_a", "straight_b", "resumed"))
    noise, resumed = _max_diff(a, b), _max_diff(a, r)
    hist = [torch.load(work / d / "checkpoint_last.pt", map_location="cpu", weights_only=False)["history"]
            for d in ("straight_a", "resumed")]
    loss_diff = max(abs(x[k] - y[k]) for x, y in zip(*hist) for k in ("train_loss", "val_loss"))
    return {"name": "resume vs straight run (mvl train)", "passed": resumed <= 2 * noise,
            "detail": f"{model_name}, 2 epochs, deterministic algorithms: max abs Δweight resumed vs straight "
                      f"{resumed:.3g} (bitwise equal: {resumed == 0}); straight vs straight {noise:.3g}; "
                      f"max abs Δloss in history {loss_diff:.3g}",
            "tolerance": "resumed-vs-straight <= 2 × straight-vs-straight (exact when the GPU run is deterministic)"}


def check_eval(model_name: str, work: Path, device: torch.device, size: str) -> dict[str, Any]:
    """``evaluate_run`` of one trained run on ``device`` and on the CPU: metrics and predictions."""
    import nibabel as nib

    from medvisionllama.evaluation.evaluate import evaluate_run

    task, split, pre = _tiny_task(work, size)
    run = work / "straight_a"  # trained by check_resume when it ran, else here
    if not (run / "checkpoint_best.pt").exists():
        from medvisionllama.training.train import train_run

        train_run(preprocessed=pre, split=split, run_dir=run, model=model_name, settings=_settings(1, device),
                  progress=False)
    cpu_run = work / "eval_cpu"
    shutil.rmtree(cpu_run, ignore_errors=True)
    shutil.copytree(run, cpu_run)
    frames = {}
    for label, folder, dev in (("device", run, str(device)), ("cpu", cpu_run, "cpu")):
        frames[label] = evaluate_run(run_dir=folder, preprocessed=pre, split=split, data_dir=task, device=dev,
                                     progress=False).reset_index(drop=True)
    on, off = frames["device"], frames["cpu"]
    dice = float((on["dice"] - off["dice"]).abs().max())
    hd = float((on["hd95"] - off["hd95"]).abs().max())
    agree = []
    for pred in sorted((run / "predictions").glob("*.nii.gz")):
        x, y = np.asanyarray(nib.load(pred).dataobj), np.asanyarray(nib.load(cpu_run / "predictions" / pred.name).dataobj)
        agree.append(float((x == y).mean()))
    same_rows = len(on) == len(off) and list(on["case_id"]) == list(off["case_id"])
    same_nan = bool((on["dice"].isna() == off["dice"].isna()).all())  # undefined Dice on both or neither
    passed = same_rows and same_nan and (dice <= EVAL_DICE_TOL or on["dice"].isna().all())
    return {"name": f"evaluation on {device.type} vs CPU (mvl evaluate)", "passed": bool(passed),
            "detail": f"{len(on)} metric rows; max abs ΔDice {dice:.3g}, max abs ΔHD95 {hd:.3g} mm; "
                      f"voxels equal in the saved predictions: {', '.join(f'{a:.4f}' for a in agree) or 'none'}",
            "tolerance": f"abs ΔDice <= {EVAL_DICE_TOL:g} per case and class (the device runs bf16 autocast, the CPU float32)"}


# ------------------------------------------------------------------------------ report
def render(state: dict[str, Any]) -> str:
    env, rows, checks = state["env"], state["rows"], state["checks"]
    lines = ["# The GPU path: throughput, memory and correctness (issue 15)", ""]
    if env["dry"]:
        lines += ["**DRY RUN** (`--dry`): tiny volumes and tiny LLM configs on the CPU, to test the script. "
                  "The numbers below mean nothing.", ""]
    lines += [f"- device: {env['device']}", f"- torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
              f"transformers {env['transformers']}, Python {env['python']}",
              f"- date (UTC): {env['date']}; command: `{env['command']}`",
              f"- batch {BATCH}, bf16 autocast, Adam lr 1e-5, patch 8; data loading included "
              f"(project loader, {env['workers']} workers, pinned memory on CUDA); one warm-up epoch, then whole epochs timed; "
              "'waiting for data' is the share of the timed wall time the host spent waiting for the next batch",
              f"- status: {state['status']}", ""]
    lines += ["## Targets", ""]
    head = [r for r in rows if r["model"] == HEADLINE and r["size"] == "128x128x80" and r["status"] == "ok"]
    if head:
        for r in head:
            verdict = "met" if r["cases_per_s"] >= TARGET_CASES_PER_S else "NOT met"
            lines.append(f"- ≥ {TARGET_CASES_PER_S:g} training cases/s, {HEADLINE} at 128×128×80 ({r['loop']} loop): "
                         f"**{r['cases_per_s']:.2f}** → {verdict} (paper, A100: ~2.2)")
    else:
        lines.append(f"- ≥ {TARGET_CASES_PER_S:g} training cases/s at 128×128×80: not measured")
    for name in PAPER_LLMS:
        r = next((r for r in rows if r["model"] == f"{name}-random" and r["size"] == FULL), None)
        if r is None:
            lines.append(f"- full size fits, {name}: not measured")
        elif r["status"] != "ok":
            lines.append(f"- full size fits, {name}: **{r['status']}**")
        elif "peak_reserved_gib" in r:
            fits = "fits" if r["peak_reserved_gib"] * 2**30 < 80e9 else "does NOT fit"
            lines.append(f"- full size (240×240×152, {r['tokens']} tokens) {fits} in 80 GB, {name}: peak allocated "
                         f"{r['peak_alloc_gib']:.1f} GiB, reserved {r['peak_reserved_gib']:.1f} GiB")
        else:
            lines.append(f"- full size, {name}: ran (no GPU memory figure on the CPU)")
    lines += ["", "## Peak GPU memory and training throughput per model × size", "",
              "| model | input | tokens | loop | params total (M) | trainable (M) | cases/s | s/step | "
              "waiting for data | peak allocated (GiB) | peak reserved (GiB) | hours/100 ep Task01 | status |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['size']} | {r.get('tokens', '')} | {r.get('loop', '')} | | | | | | | | | {r['status']} |")
            continue
        hours = TASK01_TRAIN_CASES * 100 / r["cases_per_s"] / 3600
        mem = (f"{r['peak_alloc_gib']:.2f} | {r['peak_reserved_gib']:.2f}" if "peak_alloc_gib" in r else "– | –")
        lines.append(f"| {r['model']} | {r['size']} | {r['tokens']} | {r['loop']} | {r['params_total_m']:.1f} | "
                     f"{r['params_trainable_m']:.2f} | {r['cases_per_s']:.2f} | {r['s_per_step']:.3f} | "
                     f"{r['loader_wait']:.0%} | {mem} | "
                     f"{hours:.2f} | ok |")
    lines += ["", "## Correctness on the device", "", "| check | result | measured | tolerance |", "|---|---|---|---|"]
    for c in checks:
        result = "pass" if c.get("passed") else ("ERROR" if "error" in c else "FAIL")
        lines.append(f"| {c['name']} | {result} | {c.get('detail') or c.get('error', '')} | {c.get('tolerance', '')} |")
    if state["skipped"]:
        lines += ["", "## Skipped (time budget)", "",
                  f"The budget of {env['budget_s']:.0f} s ran out before these items; run the script again with "
                  "a larger `--budget-s` (or on its own for one item with `--only`) to measure them:", ""]
        lines += [f"- {s}" for s in state["skipped"]]
    return "\n".join(lines) + "\n"


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"dry": args.dry, "device": name, "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none",
            "transformers": transformers.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "command": " ".join(["bench_gpu.py", *sys.argv[1:]]),
            "workers": args.num_workers, "budget_s": args.budget_s}


def plan(args: argparse.Namespace) -> list[tuple[str, tuple]]:
    """Items in order of importance: (kind, arguments)."""
    items: list[tuple[str, tuple]] = [("train", (HEADLINE, "128x128x80", "lean")), ("train", (HEADLINE, "128x128x80", "train.py"))]
    full_order = ("gemma2-9b", "llama3.1-8b", "mistral-7b", "qwen2-7b", "yi1.5-9b")
    items += [("train", (f"{name}-random", FULL, "lean")) for name in full_order]
    items += [("check", ("bf16",)), ("check", ("resume",)), ("check", ("eval",))]
    items += [("train", (HEADLINE, "64x64x40", "lean"))]
    items += [("train", ("vit", size, "lean")) for size in SIZES]
    for size in ("128x128x80", "64x64x40"):
        items += [("train", (f"{name}-random", size, "lean")) for name in PAPER_LLMS if name != "llama3.1-8b"]
    if args.dry:  # every code path once: the headline loops, each family at "full", the checks, ViT
        items = items[:10] + [("train", ("vit", "64x64x40", "lean"))]
    if args.only:
        items = [it for it in items if any(key in " ".join(map(str, it[1])) for key in args.only)]
    return items


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    device = torch.device("cpu" if args.dry else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device; use --dry to test the script on the CPU")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"env": environment(device, args), "rows": [], "checks": [], "skipped": [], "status": "running"}

    def save() -> None:
        text = render(state)
        for out in args.out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out, text)

    save()
    shape_of = (lambda size: DRY_SIZES[size]) if args.dry else (lambda size: tuple(int(v) for v in size.split("x")))
    for kind, item in plan(args):
        left = args.budget_s - (time.perf_counter() - start)
        need = NEEDS_S["check"] if kind == "check" else NEEDS_S[item[1]]
        label = f"{kind} {' '.join(item)}"
        if left < need:
            state["skipped"].append(f"{label} (needs ~{need:.0f} s, {max(left, 0):.0f} s left)")
            save()
            continue
        print(f"[{time.perf_counter() - start:6.1f} s] {label}", flush=True)
        try:
            if kind == "train":
                model, size, loop = item
                shape = shape_of(size)
                cases = 8 if args.dry else CASES[size]
                data = write_preprocessed(work / "pre" / f"{'x'.join(map(str, shape))}-{cases}cases", shape, cases)
                state["rows"].append(measure_training(model, size, shape, data, device, args.num_workers,
                                                      1 if args.dry else TIMED_EPOCHS[size], loop))
            else:
                small = "32x32x16" if not args.dry else "16x16x8"
                if item[0] == "bf16":
                    state["checks"].append(check_bf16_vs_fp32(HEADLINE, shape_of("64x64x40"), device))
                elif item[0] == "resume":
                    state["checks"].append(check_resume(HEADLINE, work / "task", device, small))
                else:
                    state["checks"].append(check_eval(HEADLINE, work / "task", device, small))
        except torch.cuda.OutOfMemoryError as exc:
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            state["rows"].append({"model": item[0], "size": item[1], "loop": item[-1], "status": f"OOM (peak {peak:.1f} GiB): {str(exc).splitlines()[0][:80]}"})
        except Exception as exc:  # a broken item is reported, the others still run
            traceback.print_exc()
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            if kind == "check":
                state["checks"].append({"name": item[0], "passed": False, "error": message})
            else:
                state["rows"].append({"model": item[0], "size": item[1], "loop": item[-1], "status": f"error: {message}"})
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()
    state["status"] = f"finished in {time.perf_counter() - start:.0f} s" + (
        f"; {len(state['skipped'])} item(s) skipped for time" if state["skipped"] else "")
    save()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", action="append", default=None,
                   help="report path (repeatable; default benchmarks/results/gpu.md, or gpu-dry.md with --dry)")
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes and tiny LLM configs: tests the script")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip items that would start after this many seconds")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 4 on CUDA, 0 with --dry)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workdir", default=None, help="keep the synthetic data and runs here (default: a temporary folder)")
    p.add_argument("--only", nargs="+", default=None, help="run only items whose model/size/check name contains one of these")
    args = p.parse_args(argv)
    if args.num_workers is None:
        args.num_workers = 0 if args.dry else 4
    if args.out is None:
        args.out = ["benchmarks/results/gpu-dry.md" if args.dry else "benchmarks/results/gpu.md"]
    with dry_registry() if args.dry else contextlib.nullcontext():
        state = run(args)
    failed = [c["name"] for c in state["checks"] if not c.get("passed")]
    broken = [f"{r['model']} {r['size']}" for r in state["rows"] if r["status"] != "ok"]
    print(f"wrote {', '.join(args.out)}; failed checks: {failed or 'none'}; failed cells: {broken or 'none'}")
    return 1 if failed or broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
