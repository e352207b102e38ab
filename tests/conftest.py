"""Shared fixtures: a throwaway copy of the project for workflow tests."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


SCONTROL_STAND_IN = """#!/bin/sh
# tests/conftest.py: scontrol while no SLURM controller runs on this machine. The real one retries
# for about 9 s, and Snakemake's SLURM executor plugin calls it when Snakemake starts (any executor),
# so every `snakemake` of the suite would wait that long. Once a controller runs (the SLURM tests
# start one), the real scontrol answers.
if ! command -v pgrep >/dev/null 2>&1 || pgrep -x slurmctld >/dev/null 2>&1; then exec {real} "$@"; fi
echo "scontrol: no SLURM controller runs on this machine (the test suite's stand-in)" >&2
exit 1
"""


def pytest_configure(config: pytest.Config) -> None:
    """Where SLURM's client tools are installed but no controller runs (a machine that ran the
    SLURM tests and stopped their cluster), put :data:`SCONTROL_STAND_IN` first on PATH for the
    session. The suite's time then does not depend on the state SLURM was left in."""
    real = shutil.which("scontrol")
    if real is None:
        return
    folder = Path(tempfile.mkdtemp(prefix="mvl-test-scontrol-"))
    stand_in = folder / "scontrol"
    stand_in.write_text(SCONTROL_STAND_IN.format(real=shlex.quote(real)))
    stand_in.chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout (what a clone would have)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def copy_project(dest: Path) -> Path:
    """Copy the project into ``dest`` as a fresh git + DVC repository; returns ``dest``."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def env_with_venv() -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH (for `mvl`, `dvc`)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def tiny_config(**overrides) -> dict:
    """config.yaml shrunk to a minute: two tasks of a few tiny cases, two epochs, and every kind of
    experiment (so every table and figure is made) on as few runs as will do."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data"]["tasks"] = ["Task04_Hippocampus", "Task09_Spleen"]
    config["data"]["synthetic"].update(cases=6, max_dim=24)
    config["preprocess"].update(sizes=["16x16x8", "24x24x8"], workers=1)
    config["model"].update(patch_size=8, hidden_size=16, num_heads=2, num_layers=1)
    config["training"].update(epochs=2)
    one = ["Task04_Hippocampus"]
    config["experiments"] = {
        "main": {"tasks": "all", "models": ["vit", "smollm2-135m"]},
        "llm_comparison": {"tasks": "all", "models": ["vit", "smollm2-135m", "smollm2-135m-shuffled"]},
        "capacity": {"tasks": one, "models": ["smollm2-135m", "vit", "mlp"], "attention": ["hybrid-sequential", "spatial"]},
        "attention_strategy": {
            "tasks": one, "models": ["smollm2-135m"],
            "attention": ["hybrid-sequential", "hybrid-parallel", "hybrid-interleaved"],
        },
        "input_size": {"tasks": one, "models": ["vit", "smollm2-135m"], "sizes": ["16x16x8", "24x24x8"]},
        "complexity": {"tasks": one, "models": ["vit", "smollm2-135m", "mlp"]},
    }
    config.update(overrides)
    return config


@pytest.fixture
def one_torch_thread():
    """Tiny models train faster on one thread than on two that share the machine with others."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project in a temporary folder."""
    return copy_project(tmp_path / "project")
