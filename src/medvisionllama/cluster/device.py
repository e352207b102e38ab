"""Which device a job must use, and why CUDA is not usable when it is not.

A SLURM job that was given a GPU and silently trains on the CPU wastes its whole time limit (a
CPU build of torch, CUDA wheels newer than the node's driver, a driver that did not load). So
``training.device: auto`` means *CUDA* inside a SLURM job that holds a GPU (:func:`slurm_gpus`):
:func:`required_device` turns ``auto`` into ``cuda`` there, and ``runtime.resolve_device`` then
fails at once with one line from :func:`cuda_problem` naming the torch build, the CUDA version it
was built for and the node's NVIDIA driver. Outside SLURM, or in a job without a GPU, ``auto``
keeps its meaning (CUDA when usable, else the CPU).

``MVL_GPU_JOB_ALLOW_CPU=1`` (environment) lets such a job run on the CPU anyway: the local test
cluster (scripts/slurm/start-cluster.sh) advertises a fake GPU that no torch can use. The job's
log and ``run.json`` still name the device it trained on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Mapping

ALLOW_CPU_ENV = "MVL_GPU_JOB_ALLOW_CPU"
DRIVER_FILE = Path("/proc/driver/nvidia/version")  #: the loaded NVIDIA kernel module's version
#: the variables SLURM sets in a job (or step) that holds GPUs
SLURM_GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE")


def slurm_gpus(env: Mapping[str, str] | None = None) -> str | None:
    """``"SLURM job 12 holds GPU 0"`` inside a SLURM job with GPUs, else None."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID", "").strip()
    if not job:
        return None
    count = env.get("SLURM_GPUS_ON_NODE", "").strip()
    ids = [env.get(name, "").strip() for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")]
    ids = [value for value in ids if value not in {"", "(null)", "N/A"}]
    if ids:  # GPU indices: "0", "0,1"
        return f"SLURM job {job} holds GPU {ids[0]}"
    if count.isdigit() and int(count) > 0:
        return f"SLURM job {job} holds {count} GPU{'s' if int(count) > 1 else ''}"
    return None


def required_device(device: str, env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(the device to use, why it is required or None). ``auto`` becomes ``cuda`` in a SLURM job
    that holds a GPU, unless ``MVL_GPU_JOB_ALLOW_CPU=1``."""
    env = os.environ if env is None else env
    if device != "auto":
        return device, None
    held = slurm_gpus(env)
    if held and env.get(ALLOW_CPU_ENV, "").strip() not in {"1", "true", "yes"}:
        return "cuda", held
    return device, None


def driver_version() -> str:
    """The NVIDIA driver of this machine (``"535.104.05"``), or why none was found."""
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", DRIVER_FILE.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.split()[0]
            return f"none usable (nvidia-smi: {(out.stderr or out.stdout).strip().splitlines()[0][:120]})"
        except (OSError, subprocess.TimeoutExpired, IndexError):
            pass
    return "none found (no /proc/driver/nvidia/version, no nvidia-smi)"


def cuda_problem() -> str:
    """Why ``torch.cuda.is_available()`` is False here, in one line: torch build, CUDA, driver."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    built = torch.version.cuda
    parts = [f"torch {torch.__version__} " + (f"built for CUDA {built}" if built else "built without CUDA (a CPU wheel)")]
    parts.append(f"NVIDIA driver: {driver_version()}")
    if available:
        parts.append("CUDA is available")
    for warning in caught:
        text = str(warning.message).strip().splitlines()
        if text:
            parts.append(text[0][:200])
            break
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        parts.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    return "; ".join(parts)


def unusable_cuda_message(requested: str, required_by: str | None) -> str:
    """The one line a job that needs CUDA and cannot use it fails with."""
    if required_by:
        return (f"--device {requested!r} needs CUDA here ({required_by}), which is not usable: {cuda_problem()};"
                f" set training.device: cpu to train on the CPU (or {ALLOW_CPU_ENV}=1 for this job)")
    return f"--device {requested!r}: CUDA is not usable: {cuda_problem()}"


def describe(device: object) -> str:
    """One line naming the device a job runs on, for its log: ``cuda:0 (NVIDIA H100, torch
    2.13.0+cu126, CUDA 12.6)`` or ``cpu (torch 2.13.0+cpu, 2 threads)``."""
    import torch

    dev = torch.device(str(device))
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return (f"cuda:{index} ({torch.cuda.get_device_name(index)}, torch {torch.__version__},"
                f" CUDA {torch.version.cuda}, driver {driver_version()})")
    held = slurm_gpus()
    unused = f"; {held}, unused ({ALLOW_CPU_ENV}=1)" if held else ""
    return f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads{unused})"
