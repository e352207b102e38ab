"""What a training or evaluation job asks a cluster for: memory, time, CPUs, GPUs.

Snakemake calls these functions when it plans the DAG (the rules' ``resources:``), so this module
imports neither torch nor transformers; every function takes plain values and returns a
:class:`JobResources`.

Time of one training job (hours), from the paper's measurements
---------------------------------------------------------------
Anchors: Appendix Table 2 of the paper, Task01 (339 training cases), 100 epochs, batch 4, one
A100 40 GB::

    input        voxels V     ViT      ViT + Llama-3.1-8B layer
    64x64x40       163,840   1.27 h   1.52 h
    128x128x80   1,310,720   3.18 h   4.21 h
    240x240x156  8,985,600   7.54 h   9.15 h

Seconds per training case and epoch on that GPU::

    t_case(V, w) = C_GPU * (V / V0) ** ALPHA * (1 + BETA * w)

with ``V0 = 163,840`` (64x64x40), ``C_GPU = 1.27 h * 3600 / (339 * 100) = 0.135 s``,
``ALPHA = 0.445`` (fitted to the ViT's 1.27 h and 7.54 h; it predicts 3.20 h for the measured 3.18 h:
the paper's time grows with the square root of the voxels, not linearly), ``w`` the frozen LLM
layer's parameters over Llama-3.1-8B's (218.1 M; 0 for ``vit`` and ``mlp``; computed from each
registry LLM's hidden size, MLP width, heads and key/value heads) and ``BETA = 0.25`` (the paper's
Llama overhead is +20 %, +32 %, +21 % at the three sizes). Every anchor is reproduced within 6 %
(tests/test_preflight.py checks it).

On a CPU (``device: cpu``) the ViT part is ``K_CPU = 18`` times slower (measured:
benchmarks/results/training.md, 2 cores, 2.35 s per case at 64x64x40 against the paper's 0.135 s;
4.7 s against 0.34 s at 128x128x80) and the LLM layer costs its arithmetic,
``4 * P * T + 8 * T**2 * d_attn`` floating-point operations per case (forward, and backward to its
input: the layer is frozen), at ``R_CPU = 30 GFLOP/s``, the slower of two measurements (SmolLM2's
block alone: 0.63 s per step of 4 cases at 320 tokens, i.e. 32 GFLOP/s; 3.8 s at 2,560 tokens, 70
GFLOP/s), so larger inputs are overestimated by up to 2.3x; ``T = V / patch_size**3`` tokens.

A job's time = ``epochs * train_cases * t_case`` plus ``STARTUP_MIN = 10`` minutes (imports,
reading the data, checkpoints), times ``SAFETY = 1.5``, rounded up to 5 minutes, at least
``MIN_RUNTIME_MIN = 15``. A faster GPU than the A100 finishes early; a slower one (V100, T4) may
need ``MVL_SLURM_MAX_RUNTIME`` and a retry.

Memory (host RAM, what SLURM's ``--mem`` limits)
------------------------------------------------
Measured on the local cluster (sacct ``MaxRSS`` of the batch step and ``/usr/bin/time -v``, the
larger of the two; docs/slurm.md, "Requests against measured use"), on the CPU, default model
(hidden size 32), Task01 (4 channels), batch 4:

- ``BASE_MB = 400``: Python, torch and the package (a ViT training at 32x32x16 used 453 MB);
- ``CPU_BYTES_PER_VOXEL = 950``: a CPU training step's activations and workspaces per voxel of a
  batch (64x64x40 used 1,002 MB: 549 MB more for 147,456 more voxels x 4 cases);
- ``LLM_IMPORT_MB = 150`` for a model with an LLM block (transformers and the block's code:
  SmolLM2 at 32x32x16 used 600 MB), plus the layer as loaded (6 bytes a parameter:
  benchmarks/results/layer_loading.md measured 1,253 MiB for the 218 M parameters of a
  Llama-3.1-8B layer) and on a CPU its activations in float32, ``batch * T * (6 * hidden + 3 *
  intermediate) * 6`` bytes (SmolLM2 at 64x64x40, 2,560 tokens, used 1,651 MB);
- evaluation: ``EVAL_BASE_MB = 320`` (a ViT evaluation at 32x32x16 used 336 MB), the same LLM
  terms, a third of one case's activations, and one native volume of images, probabilities,
  labels and distance maps (float32; unmeasured at real sizes: x 1.5).

The measured sum is asked with a margin ``MEASURED_MARGIN = 1.25`` (sacct samples every 10 s);
what was not measured keeps ``SAFETY = 1.5``: the CUDA runtime's host memory on a GPU node
(``CUDA_HOST_MB = 2000``, no real GPU here), data-loader workers (400 MB each plus four copies of
a batch), native volumes of real MSD sizes (measured only on small synthetic ones). Rounded up to
250 MB, at least ``MIN_MEM_MB = 500``.

Preprocessing (``preprocess_task``, :func:`estimate_preprocess`): each of the ``workers`` processes
and the main one cost ``PRE_PROCESS_MB = 250`` (measured: 544 MB for two workers and the main
process on synthetic volumes), plus per worker a native volume of every channel in four float32
copies (read, resampled, normalised, cropped; unmeasured at real sizes: x 1.5).

GPU memory (information only: SLURM allocates whole GPUs): 1,000 MB of CUDA context + the frozen
layer in float32 plus its bfloat16 copy under autocast (6 bytes a parameter) + activations:
``batch * V * 256`` bytes at voxel resolution (the decoder's feature maps, kept for backward) and
``batch * T * (6 * hidden + 3 * intermediate) * 2`` bytes in the LLM layer (bfloat16). Not
measured on a GPU yet: the Llama layer at 240x240x152 comes to ~21 GB, consistent with the
paper's 40 GB A100, with memory-efficient attention (an attention matrix of T x T per head
would not fit).

Retries
-------
:func:`for_attempt` grows a request with Snakemake's ``attempt`` (1, 2, ...) up to a cap:
``MVL_SLURM_MAX_RUNTIME`` (minutes) and ``MVL_SLURM_MAX_MEM_MB``; unset, the cap is twice the first
request. A cap below the first request lowers the first request too (the partition allows no
more). Set the caps to the partition's limits (``mvl preflight`` prints them).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Mapping

from medvisionllama.errors import InputError
from medvisionllama.llm.registry import llm_dims
from medvisionllama.vocabulary import parse_model_name


# --- the anchors and the fitted constants (see the module docstring) ---------------------------
PAPER_TRAIN_CASES = 339  #: Task01's 70 % training split (484 cases)
PAPER_EPOCHS = 100
#: Appendix Table 2 (hours on one A100 40 GB): size -> (ViT, ViT + Llama-3.1-8B layer)
PAPER_HOURS: dict[str, tuple[float, float]] = {
    "64x64x40": (1.27, 1.52),
    "128x128x80": (3.18, 4.21),
    "240x240x156": (7.54, 9.15),
}
V0 = 64 * 64 * 40
C_GPU = PAPER_HOURS["64x64x40"][0] * 3600 / (PAPER_TRAIN_CASES * PAPER_EPOCHS)  #: s per case and epoch
ALPHA = 0.445
BETA = 0.25
K_CPU = 18.0
R_CPU = 30e9  #: FLOP/s of the frozen LLM layer on a CPU
FIT_FACTOR = 1.06  #: every anchor is reproduced within this factor
SAFETY = 1.5  #: on what is estimated, not measured
MEASURED_MARGIN = 1.25  #: on what was measured (docs/slurm.md, "Requests against measured use")
STARTUP_MIN = 10.0
MIN_RUNTIME_MIN = 15
MIN_MEM_MB = 500
MEM_STEP_MB = 250
BYTES_PER_VOXEL = 256  #: activations kept for backward at voxel resolution, per case (GPU, bf16)
BASE_MB = 400.0  #: measured: Python, torch and the package (a training process)
EVAL_BASE_MB = 320.0  #: measured: the same for an evaluation process
CPU_BYTES_PER_VOXEL = 950.0  #: measured: a CPU training step per voxel of a batch
LLM_IMPORT_MB = 150.0  #: measured: transformers and the LLM block's code
CUDA_HOST_MB = 2000.0  #: not measured (no GPU here): the CUDA runtime's host memory
PRE_PROCESS_MB = 250.0  #: measured: each preprocessing process
PRE_COPIES = 4  #: not measured: float32 copies of a native volume while it is preprocessed
REFERENCE_LLM = "llama3.1-8b"
MAX_RUNTIME_ENV = "MVL_SLURM_MAX_RUNTIME"
MAX_MEM_ENV = "MVL_SLURM_MAX_MEM_MB"


@dataclass(frozen=True)
class JobResources:
    """One job's request. ``mem_mb``: host RAM (sbatch --mem); ``runtime_min``: wall time in
    minutes; ``gpus``/``cpus``: counts; ``gpu_mem_mb``: estimated GPU memory (information)."""

    mem_mb: int
    runtime_min: int
    gpus: int
    cpus: int
    gpu_mem_mb: int = 0


# --- pieces ------------------------------------------------------------------------------------
def voxels(size: str) -> int:
    """``"64x64x40"`` -> 163840. ``full`` has no fixed size: pass the task's shape instead."""
    parts = str(size).lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"invalid input size {size!r}: expected XxYxZ with positive integers (e.g. 64x64x40)")
    return dims[0] * dims[1] * dims[2]


def llm_of(model: str) -> str | None:
    """The registry LLM whose layer ``model`` contains (pretrained or a control), else None."""
    return parse_model_name(model).llm


def llm_layer_dims(llm: str) -> tuple[int, int, int, int, int]:
    """(hidden, intermediate, attention heads, key/value heads, head size) of ``llm``'s decoder
    layer, from its config.json values (``llm.registry.llm_dims``: presets and folders alike)."""
    d = llm_dims(llm)
    return (d["hidden_size"], d["intermediate_size"], d["num_attention_heads"], d["num_key_value_heads"], d["head_dim"])


def layer_params(llm: str) -> int:
    """Weights of one decoder layer: q/o (hidden x heads*head), k/v (hidden x kv*head), 3 MLP mats."""
    hidden, inter, heads, kv_heads, head = llm_layer_dims(llm)
    return 2 * hidden * heads * head + 2 * hidden * kv_heads * head + 3 * hidden * inter


def llm_width(model: str) -> float:
    """``w`` of the time formula: the model's LLM layer parameters over Llama-3.1-8B's (0 without)."""
    llm = llm_of(model)
    return 0.0 if llm is None else layer_params(llm) / layer_params(REFERENCE_LLM)


def _device_gpus(device: str) -> int:
    if device not in {"auto", "cpu", "cuda"}:
        raise InputError(f"training.device must be auto, cpu or cuda, got {device!r}")
    return 0 if device == "cpu" else 1


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def case_seconds(size: str, model: str, device: str, patch_size: int = 8) -> float:
    """Seconds of one training case in one epoch (forward, backward, optimiser step)."""
    v = voxels(size)
    if _device_gpus(device):
        return C_GPU * (v / V0) ** ALPHA * (1 + BETA * llm_width(model))
    seconds = K_CPU * C_GPU * (v / V0) ** ALPHA
    llm = llm_of(model)
    if llm is not None:
        tokens = v / patch_size**3
        _, _, heads, _, head = llm_layer_dims(llm)
        seconds += (4 * layer_params(llm) * tokens + 8 * tokens**2 * heads * head) / R_CPU
    return seconds


def activation_mb(size: str, model: str, batch_size: int, patch_size: int = 8) -> float:
    """Activations kept for backward by one training step (MB): voxel part + LLM layer part."""
    v = voxels(size)
    total = batch_size * v * BYTES_PER_VOXEL
    llm = llm_of(model)
    if llm is not None:
        hidden, inter, *_ = llm_layer_dims(llm)
        total += batch_size * (v / patch_size**3) * (6 * hidden + 3 * inter) * 2
    return total / 1e6


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _host_mem_mb(data_size: str, model: str, batch_size: int, in_channels: int, num_workers: int,
                 gpus: int, size: str | None = None, patch_size: int = 8, training: bool = True,
                 volume_mb: float = 0.0) -> int:
    """Host memory of a training (or, ``training=False``, an evaluation) process; see the module
    docstring for what was measured and what was not."""
    llm = llm_of(model)
    measured = BASE_MB if training else EVAL_BASE_MB
    if llm is not None:
        measured += LLM_IMPORT_MB + layer_params(llm) * 6 / 1e6
    if not gpus:  # activations live in host memory
        v = voxels(size or data_size)
        step = batch_size * v * CPU_BYTES_PER_VOXEL
        if llm is not None:
            hidden, inter, *_ = llm_layer_dims(llm)
            step += batch_size * (v / patch_size**3) * (6 * hidden + 3 * inter) * 6
        measured += step / 1e6 if training else step / 3e6
    batch = batch_size * in_channels * voxels(data_size) * 4 * 4 / 1e6  # four float32 copies
    unmeasured = num_workers * (400 + batch) + (CUDA_HOST_MB if gpus else 0.0) + volume_mb
    return max(MIN_MEM_MB, _round_up(MEASURED_MARGIN * measured + SAFETY * unmeasured, MEM_STEP_MB))


def estimate_preprocess(native_size: str, *, channels: int, workers: int, real_data: bool = True) -> JobResources:
    """The request of one ``preprocess_task`` job: ``workers`` processes besides the main one,
    each holding a native volume (``native_size``, all ``channels``) in ``PRE_COPIES`` float32
    copies. Time: 2 h for the real MSD releases (unmeasured), 15 min for synthetic tasks."""
    _positive("channels", channels)
    _positive("workers", workers)
    volume = voxels(native_size) * channels * 4 * PRE_COPIES / 1e6
    mem = MEASURED_MARGIN * PRE_PROCESS_MB * (1 + workers) + SAFETY * workers * volume
    return JobResources(mem_mb=max(MIN_MEM_MB, _round_up(mem, MEM_STEP_MB)),
                        runtime_min=120 if real_data else MIN_RUNTIME_MIN, gpus=0, cpus=workers)


# --- the estimates -----------------------------------------------------------------------------
def _gpu_mem_mb(model: str, gpus: int, activations: float) -> int:
    """GPU memory of a job (information only): the frozen layer's weights at the measured 6 bytes
    per parameter, the activations and 1 GB of CUDA context; 0 without a GPU."""
    if not gpus:
        return 0
    llm = llm_of(model)
    weights = 0.0 if llm is None else layer_params(llm) * 6 / 1e6
    return _round_up(1000 + weights + activations, 100)


def estimate_training(size: str, model: str, *, epochs: int, train_cases: int, batch_size: int = 4,
                      device: str = "auto", threads: int = 1, in_channels: int = 4, patch_size: int = 8,
                      num_workers: int = 0, data_size: str | None = None) -> JobResources:
    """The request of one ``train_run`` job (first attempt).

    Args:
        size: the network's input size (``"128x128x80"``; for ``full`` runs, the crop size).
        model: ``vit``, ``mlp``, ``<llm>`` or ``<llm>-random``.
        epochs, train_cases, batch_size: the run's training loop.
        device: ``training.device``; ``auto`` and ``cuda`` ask one GPU, ``cpu`` none.
        threads: CPUs of the job (``training.threads``).
        in_channels: image channels (Task01: 4).
        data_size: size of the volumes the loader reads, when larger than ``size`` (``full``).
    """
    for name, value in (("epochs", epochs), ("train_cases", train_cases), ("batch_size", batch_size),
                        ("threads", threads), ("in_channels", in_channels), ("patch_size", patch_size)):
        _positive(name, value)
    gpus = _device_gpus(device)
    hours = epochs * train_cases * case_seconds(size, model, device, patch_size) / 3600
    runtime = max(MIN_RUNTIME_MIN, _round_up(SAFETY * (hours * 60 + STARTUP_MIN), 5))
    activations = activation_mb(size, model, batch_size, patch_size)
    mem = _host_mem_mb(data_size or size, model, batch_size, in_channels, num_workers, gpus, size, patch_size)
    return JobResources(mem_mb=mem, runtime_min=runtime, gpus=gpus, cpus=threads,
                        gpu_mem_mb=_gpu_mem_mb(model, gpus, activations))


def estimate_evaluation(size: str, model: str, *, test_cases: int, native_size: str, device: str = "auto",
                        threads: int = 1, in_channels: int = 4, num_classes: int = 4,
                        patch_size: int = 8) -> JobResources:
    """The request of one ``evaluate_run`` job: sliding-window inference on each test case's
    native grid (``native_size``, e.g. the task's typical shape) and per-class metrics (HD95's
    distance transforms run on the CPU, ~0.15 s per million voxels per class and mask).

    Inference of one window costs a third of a training case (forward only); windows overlap,
    so a volume takes ``2 * ceil(native / input)`` of them."""
    for name, value in (("test_cases", test_cases), ("threads", threads), ("in_channels", in_channels),
                        ("num_classes", num_classes)):
        _positive(name, value)
    gpus = _device_gpus(device)
    native = voxels(native_size)
    windows = 2 * math.ceil(native / voxels(size))
    per_case = windows * case_seconds(size, model, device, patch_size) / 3 + 0.3 * num_classes * native / 1e6
    minutes = test_cases * per_case / 60
    runtime = max(MIN_RUNTIME_MIN, _round_up(SAFETY * (minutes + STARTUP_MIN), 5))
    # one native volume of images, probabilities per class, labels and distance maps, float32
    volume = native * (in_channels + 3 * num_classes + 4) * 4 / 1e6
    activations = activation_mb(size, model, 1, patch_size) / 3
    mem = _host_mem_mb(size, model, 1, in_channels, 0, gpus, size, patch_size, training=False, volume_mb=volume)
    return JobResources(mem_mb=mem, runtime_min=runtime, gpus=gpus, cpus=threads,
                        gpu_mem_mb=_gpu_mem_mb(model, gpus, activations))


# --- retries -----------------------------------------------------------------------------------
def _cap(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"environment variable {name}={raw!r}: expected a positive whole number")
    return value


def for_attempt(first: JobResources, attempt: int, env: Mapping[str, str] | None = None) -> JobResources:
    """``first`` grown for Snakemake's ``attempt`` (1, 2, ...): memory and time times ``attempt``,
    each capped by ``MVL_SLURM_MAX_MEM_MB`` / ``MVL_SLURM_MAX_RUNTIME`` (minutes) when set, else by
    twice the first request."""
    _positive("attempt", attempt)
    env = os.environ if env is None else env
    mem_cap = _cap(env, MAX_MEM_ENV, 2 * first.mem_mb)
    time_cap = _cap(env, MAX_RUNTIME_ENV, 2 * first.runtime_min)
    return replace(first, mem_mb=min(first.mem_mb * attempt, mem_cap),
                   runtime_min=min(first.runtime_min * attempt, time_cap))
