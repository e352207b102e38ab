"""Training throughput of ViT, ViT + MLP and ViT + LLM block, and the frozen block's share of a step.

Run by hand (not a test):

    python benchmarks/bench_training.py                           # CPU (or CUDA bf16 when present)
    python benchmarks/bench_training.py --models vit smollm2-135m llama3.1-8b-random --sizes 128x128x80

One training step = forward, cross-entropy, backward, Adam step on a batch of random 4-channel,
4-class volumes (Task01's shape), with the embedded model defaults (patch 8, E = 128, 2 encoder
blocks) unless overridden. For models with a bridge, the mixer (V_LLM, or the MLP stand-in) is also
timed alone, forward and backward (input gradients only: it is frozen) on the (B, T, d) tokens it
sees in that step, so ``block share = t_block / t_step``.
``hours/100ep`` extrapolates to 100 epochs of Task01's 339 training cases (70 % of 484), the
setting of the paper's Appendix Table 2 (ViT + Llama at 128x128x80: 4.21 h on an A100).

Prints a Markdown table (paste it into benchmarks/results/training.md).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from medvisionllama.models import ModelConfig, build_model
from medvisionllama.vocabulary import parse_size

TASK01_TRAIN_CASES = 339  # round(0.7 * 484)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model: nn.Module, size, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per training step (mean over ``steps`` after ``warmup``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)
    x = torch.randn(batch, 4, *size, device=device)
    y = torch.randint(0, 4, (batch, *size), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with amp:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def time_block(model: nn.Module, size, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per forward + backward of the bridge's mixer alone on (B, T, d) tokens."""
    config = model.config
    tokens = 1
    for s in size:
        tokens *= s // config.patch_size
    width = model.bridge.l1.out_features
    x = torch.randn(batch, tokens, width, device=device, requires_grad=True)  # (B, T, d)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with amp:
            out = model.bridge.mixer(x)
        out.float().sum().backward()
        x.grad = None
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vit", "mlp", "smollm2-135m"],
                   help="vit, mlp, <llm>, <llm>-random (e.g. llama3.1-8b-random: 218 M-parameter layer)")
    p.add_argument("--sizes", nargs="+", default=["64x64x40", "128x128x80"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-share", action="store_true", help="skip timing the block alone")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device) + ", bf16 autocast"
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), float32"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; "
          f"{args.steps} timed steps after {args.warmup} warm-up\n")
    print("| model | input | params total (M) | trainable (M) | s/step | cases/s | block share | hours/100ep Task01 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size_name in args.sizes:
        size = parse_size(size_name)
        for model_name in args.models:
            torch.manual_seed(0)
            config = ModelConfig(model=model_name, in_channels=4, num_classes=4, img_size=size)
            model = build_model(config, device=device)
            total, trainable = model.parameter_counts()
            t_with = time_steps(model, size, args.batch_size, args.steps, args.warmup, device)
            share = "–"
            if model.bridge is not None and not args.no_share:
                t_block = time_block(model, size, args.batch_size, args.steps, args.warmup, device)
                share = f"{t_block / t_with:.0%} ({t_block:.3f} s)"
            rate = args.batch_size / t_with
            hours = TASK01_TRAIN_CASES * 100 / rate / 3600
            print(f"| {model_name} | {size_name} | {total / 1e6:.2f} | {trainable / 1e6:.2f} | {t_with:.3f} | "
                  f"{rate:.2f} | {share} | {hours:.1f} |", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
