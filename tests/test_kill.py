"""kill -9 of an `mvl` job while it writes, then a rerun: the results equal an uninterrupted run's;
and a finished run forced to re-run (`snakemake -f`) ends green (issue 12, items 5 and the kills)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import copy_project, env_with_venv, tiny_config

pytestmark = pytest.mark.slow

TASK, SIZE = "Task04_Hippocampus", "16x16x8"
RUN = f"results/runs/{TASK}/vit/hybrid-sequential/{SIZE}/seed0"
PREPROCESSED = f"results/preprocessed/{TASK}/{SIZE}"
TARGET = f"{RUN}/metrics.csv"


def kill_config() -> dict:
    """One task, one size, two runs of three epochs; no DVC (nothing here needs it)."""
    config = tiny_config()
    config["data"]["tasks"] = [TASK]
    config["data"]["synthetic"].update(cases=10, max_dim=24)
    config["preprocess"]["sizes"] = [SIZE]
    config["training"]["epochs"] = 3
    config["lineage"]["dvc"] = False
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "mlp"]}}
    return config


def new_project(folder: Path) -> Path:
    project = copy_project(folder)
    (project / "config.yaml").write_text(yaml.safe_dump(kill_config()))
    return project


def snakemake(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "--cores", "1", *args], cwd=project, env=env_with_venv(),
                          capture_output=True, text=True, timeout=600)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def mvl_child(ancestor: int, verb: str) -> int | None:
    """The pid of the `mvl <verb>` Python process started (through a shell) by ``ancestor``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if not any(Path(a.decode()).name == "mvl" and b == verb.encode() for a, b in zip(argv, argv[1:])):
                continue
            pid = int(entry)
            while pid > 1:
                pid = _parent(pid)
                if pid == ancestor:
                    return int(entry)
        except (OSError, ValueError, IndexError):
            continue
    return None


def kill_during(project: Path, verb: str, writing: Callable[[], bool], after_s: float, *args: str) -> str | None:
    """Run the pipeline (Snakemake options ``args``) and kill -9 the `mvl <verb>` job once
    ``writing()`` holds (or ``after_s`` seconds after it started, whichever comes first); Snakemake
    must then report the job failed. Returns "writing" or "late" (what the kill came after), or
    None when the job ended before it could be killed."""
    # every job in its own process (no warm worker: medvisionllama.warm), so the process killed is the
    # one writing; the straight run it is compared with ran in the worker
    env = {**env_with_venv(), "MVL_WARM_WORKER": "off"}
    proc = subprocess.Popen(["snakemake", "--cores", "1", "--rerun-incomplete", *args, TARGET], cwd=project,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed, while_writing, pid = False, False, None
    try:
        while proc.poll() is None and pid is None:
            pid = mvl_child(proc.pid, verb)
            time.sleep(0.01)
        seen_at = time.monotonic()
        while pid is not None and proc.poll() is None:  # a tight loop: some writes take milliseconds
            while_writing = writing()
            if while_writing or time.monotonic() - seen_at > after_s:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                except ProcessLookupError:  # it had just ended
                    pass
                break
            time.sleep(0.0005)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    if not killed:
        assert proc.returncode == 0, stderr[-2000:]
        return None
    assert proc.returncode != 0, stderr[-2000:]
    return "writing" if while_writing else "late"


def hidden_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")] if folder.is_dir() else []


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def results_of(project: Path) -> dict:
    """What must not depend on interruptions: preprocessed arrays, trained weights and their
    history (less timings), the test metrics and the saved samples."""
    run = project / RUN
    state = torch.load(run / "checkpoint_last.pt", weights_only=True)
    history = [line.rsplit(",", 1)[0] for line in (run / "history.csv").read_text().splitlines()]
    with np.load(run / "samples.npz") as samples:
        arrays = {k: hashlib.sha256(np.ascontiguousarray(samples[k]).tobytes()).hexdigest() for k in samples.files}
    return {
        "preprocessed": digest(project / PREPROCESSED),
        "weights": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in state["model_state"].items()},
        "epoch": state["epoch"],
        "history": history,
        "metrics": (run / "metrics.csv").read_text(),
        "samples": arrays,
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, dict]:
    """The project after an uninterrupted run to the target, and its results."""
    project = new_project(tmp_path_factory.mktemp("straight") / "project")
    done = snakemake(project, TARGET)
    assert done.returncode == 0, done.stderr[-3000:]
    return project, results_of(project)


def test_kill_9_while_preprocessing_training_and_evaluating_then_rerun_equals_a_straight_run(straight, tmp_path):
    project = new_project(tmp_path / "project")
    run, pre = project / RUN, project / PREPROCESSED

    # preprocessing: killed while it fills its temporary folder
    how = kill_during(project, "preprocess", lambda: any(any(p.rglob("*.npy")) for p in hidden_entries(pre.parent)), 60)
    assert how == "writing"
    assert not pre.exists()
    # training: killed after its first checkpoint, in the middle of epoch 2 of 3
    assert kill_during(project, "train", lambda: (run / "checkpoint_last.pt").exists(), 120) == "writing"
    assert not (run / "run.json").exists()
    assert torch.load(run / "checkpoint_last.pt", weights_only=True)["epoch"] < 3
    # evaluation: killed while it writes predictions or samples (or, failing that, midway)
    # its writes take milliseconds: should the job end first, force it again (up to three tries)
    stale = set(hidden_entries(run))  # what the killed training may have left
    for attempt in range(3):
        how = kill_during(project, "evaluate", lambda: bool(set(hidden_entries(run)) - stale), 60,
                          *(["-f"] if attempt else []))
        if how:
            break
    assert how == "writing"
    assert not (run / "metrics.csv").exists()

    done = snakemake(project, "--rerun-incomplete", TARGET)
    assert done.returncode == 0, done.stderr[-3000:]
    assert results_of(project) == straight[1]
    # (a kill -9 leaves the hidden temporary folder of the write it interrupted; nothing reads it)


def test_forcing_a_finished_run_again_ends_green(straight):
    """`snakemake -f` deletes run.json and history.csv of a finished run; the job rewrites them
    from the checkpoint instead of failing with MissingOutputException on every rerun."""
    project, before = straight
    run = project / RUN
    checkpoint = (run / "checkpoint_last.pt").read_bytes()
    summary = json.loads((run / "run.json").read_text())
    history = (run / "history.csv").read_text()
    for _ in range(2):
        done = snakemake(project, "-f", f"{RUN}/run.json")
        assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "checkpoint_last.pt").read_bytes() == checkpoint  # nothing retrained
    assert json.loads((run / "run.json").read_text()) == summary
    assert (run / "history.csv").read_text() == history
    assert results_of(project) == before


def test_a_changed_setting_retrains_the_finished_run(straight):
    """A params change makes Snakemake re-run the job on a folder whose checkpoint has the old
    settings: the run retrains from scratch (old files set aside) instead of failing."""
    project, before = straight
    run = project / RUN
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["training"]["lr"] = config["training"]["lr"] / 2
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(project, f"{RUN}/run.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["training"]["lr"] == config["training"]["lr"]
    old = torch.load(run / "superseded" / "checkpoint_last.pt", weights_only=True)["model_state"]
    assert {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in old.items()} == before["weights"]
    assert torch.load(run / "checkpoint_last.pt", weights_only=True)["epoch"] == config["training"]["epochs"]
    assert "retraining from scratch" in (project / "logs" / "train_run" / TASK / "vit" / "hybrid-sequential" / SIZE
                                          / "seed0.log").read_text()
