"""A GPU job never trains on the CPU unnoticed (medvisionllama.cluster.device, runtime.resolve_device).

Inside a SLURM job that holds a GPU, ``training.device: auto`` means CUDA; a job that cannot use
it fails at once, in one line naming the torch build, the CUDA version and the driver. This
machine's torch is a CPU build, which is exactly such a job's situation."""

from __future__ import annotations

import pytest
import torch

from medvisionllama.cluster import device
from medvisionllama.errors import InputError
from medvisionllama.runtime import resolve_device

GPU_JOB = {"SLURM_JOB_ID": "812", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "812"}, None),  # a CPU job
    ({"SLURM_JOB_ID": "812", "SLURM_GPUS_ON_NODE": "0"}, None),
    ({"SLURM_JOB_ID": "812", "SLURM_JOB_GPUS": "0"}, "SLURM job 812 holds GPU 0"),  # GPU index 0
    ({"SLURM_JOB_ID": "812", "SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0,1,2,3"}, "SLURM job 812 holds GPU 2,3"),
    ({"SLURM_JOB_ID": "812", "SLURM_GPUS_ON_NODE": "2"}, "SLURM job 812 holds 2 GPUs"),
    ({"SLURM_JOB_GPUS": "0"}, None),  # not a job
])
def test_slurm_gpus_reads_what_slurm_sets_in_a_job(env, expected):
    assert device.slurm_gpus(env) == expected


def test_auto_means_cuda_in_a_slurm_gpu_job_only():
    assert device.required_device("auto", GPU_JOB) == ("cuda", "SLURM job 812 holds GPU 0")
    assert device.required_device("auto", {"SLURM_JOB_ID": "812"}) == ("auto", None)
    assert device.required_device("auto", {}) == ("auto", None)
    assert device.required_device("cpu", GPU_JOB) == ("cpu", None)  # the config's explicit choice
    assert device.required_device("cuda:1", GPU_JOB) == ("cuda:1", None)
    assert device.required_device("auto", {**GPU_JOB, device.ALLOW_CPU_ENV: "1"}) == ("auto", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine where torch cannot use CUDA")
def test_a_gpu_job_without_usable_cuda_fails_at_once_in_one_line(monkeypatch, tmp_path):
    for key, value in GPU_JOB.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(device.ALLOW_CPU_ENV, raising=False)
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n")
    monkeypatch.setattr(device, "DRIVER_FILE", driver)
    with pytest.raises(InputError) as caught:
        resolve_device("auto")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("--device 'auto' needs CUDA here (SLURM job 812 holds GPU 0), which is not usable:")
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    assert f"torch {torch.__version__} {built}" in message
    assert "NVIDIA driver: 535.104.05" in message and "training.device: cpu" in message
    # a CUDA 13 build on an older driver names both versions
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert "built for CUDA 13.0; NVIDIA driver: 535.104.05" in device.cuda_problem()
    # outside SLURM, auto still falls back to the CPU; with the opt-out, so does the GPU job
    monkeypatch.setenv(device.ALLOW_CPU_ENV, "1")
    assert resolve_device("auto").type == "cpu"
    assert "SLURM job 812 holds GPU 0, unused (MVL_GPU_JOB_ALLOW_CPU=1)" in device.describe("cpu")
    for key in GPU_JOB:
        monkeypatch.delenv(key)
    assert resolve_device("auto").type == "cpu"
    assert device.describe("cpu") == f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads)"


def test_driver_version_without_a_driver(monkeypatch, tmp_path):
    monkeypatch.setattr(device, "DRIVER_FILE", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either
    assert device.driver_version().startswith("none found")


def test_a_training_log_and_run_json_name_the_device(tmp_path, caplog, monkeypatch):
    """A real (tiny) training run: its log's device line and run.json agree on the device."""
    from data_helpers import tiny_settings
    from test_train import make_tiny_task

    from medvisionllama.training.train import train_run

    for key in (*GPU_JOB, device.ALLOW_CPU_ENV):
        monkeypatch.delenv(key, raising=False)
    tiny = make_tiny_task(tmp_path / "tiny", cases=6)
    with caplog.at_level("INFO", logger="medvisionllama.training.train"):
        summary = train_run(preprocessed=tiny["preprocessed"], split=tiny["split"], run_dir=tmp_path / "run",
                            model="vit", seed=0, settings=tiny_settings(epochs=1), progress=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device: ")]
    assert lines and lines[0].startswith(f"device: {expected}"), caplog.text[:2000]
    assert summary["device"] == expected and summary["training"]["device"] == expected
    assert f"torch {torch.__version__}" in lines[0]
