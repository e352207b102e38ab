"""``mvl preflight`` against a real (one-node) SLURM cluster: scripts/slurm/start-cluster.sh's
node (16 CPUs, 128,000 MB, one fake GPU, partition ``debug`` without a time limit).

The cluster fixture and its skip logic are tests/test_slurm.py's. Each verdict of the preflight is
held against SLURM's own: ``sbatch --test-only`` with the same request, which asks the scheduler
whether the job could ever start without submitting it ("Requested node configuration is not
available" otherwise).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import ROOT, env_with_venv
from test_slurm import _site_env, cluster_config, slurm_cluster  # noqa: F401 - the fixture

from medvisionllama.cluster.jobs import JobRequest, cluster_jobs
from medvisionllama.cluster.profile import load_profile
from medvisionllama.cluster.slurm import read_cluster
from medvisionllama.experiments import all_runs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def sbatch_test_only(job: JobRequest) -> subprocess.CompletedProcess:
    command = ["sbatch", "--test-only", "-c", str(job.cpus.value), "--wrap", "true"]
    if job.mem_mb is not None:
        command += ["--mem", str(job.mem_mb.value)]
    if job.runtime_min is not None:
        command += ["--time", str(job.runtime_min.value)]
    if job.gpus:
        command += [f"--gpus={job.gpu_model + ':' if job.gpu_model else ''}{job.gpus}"]
    if job.partition:
        command += ["-p", job.partition]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def preflight(project, env, *extra: str) -> subprocess.CompletedProcess:
    command = ["mvl", "preflight", "--config", "config.yaml", "--profile", "slurm", *extra]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_preflight_agrees_with_slurm_on_what_can_run(slurm_cluster, project, monkeypatch):  # noqa: F811
    config = cluster_config()
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    env = _site_env()

    fits = preflight(project, env)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    last = fits.stdout.splitlines()[-1]
    assert last.startswith("preflight: all ") and "debug*" in last, fits.stdout
    assert "  train_run: " in fits.stdout and "1 GPU (any model)" in fits.stdout  # one line per rule

    too_big = ["--set-threads", "train_run=64", "--set-resources", "evaluate_run:mem_mb=500000"]
    refused = preflight(project, env, *too_big)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stdout.splitlines()
    assert any(line.startswith("cannot run: train_run") and "asks 64 CPUs, partition 'debug' nodes have at most 16:"
               " --set-threads train_run=16" in line for line in lines), lines
    assert any(line.startswith("cannot run: evaluate_run") and "asks 500000 MB" in line
               and "--set-resources evaluate_run:mem_mb=128000" in line for line in lines), lines
    assert lines[-1].startswith("preflight: 2 rule(s) can never be scheduled"), lines
    wrong_gpu = preflight(project, {**env, "MVL_SLURM_GPU_MODEL": "a100"})
    assert wrong_gpu.returncode == 2 and "set MVL_SLURM_GPU_MODEL to one of fake" in wrong_gpu.stdout, wrong_gpu.stdout

    # SLURM's verdict on the same requests
    for key in [k for k in env_with_venv() if k.startswith("MVL_SLURM_")]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(project)
    cluster = read_cluster()
    runs = all_runs(config)
    good = cluster_jobs(config, runs, load_profile(ROOT / "slurm"))
    bad = cluster_jobs(config, runs, load_profile(ROOT / "slurm").override(
        set_threads=["train_run=64"], set_resources=["evaluate_run:mem_mb=500000"]))
    from medvisionllama.cluster.preflight import job_problems

    checked = set()
    for job in good + bad:
        key = (job.cpus.value, job.mem_mb and job.mem_mb.value, job.runtime_min and job.runtime_min.value, job.gpus)
        if key in checked:
            continue
        checked.add(key)
        verdict = sbatch_test_only(job)
        ours = job_problems(job, cluster)
        assert (verdict.returncode == 0) == (not ours), (job, ours, verdict.stderr)
    assert len(checked) >= 3
