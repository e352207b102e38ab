"""Config values reach `shell:` commands quoted: paths with spaces, quotes and `$(...)` run the real
rules as plain paths (issue 12, item 1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, env_with_venv, tiny_config

pytestmark = pytest.mark.slow

HOSTILE = "\"q\" it's $(touch INJECTED) `touch INJECTED`"


def snakemake(project: Path, *targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", "--cores", "1", *targets], cwd=project, env=env_with_venv(),
        capture_output=True, text=True, timeout=600,
    )


def test_hostile_paths_in_the_config_run_nothing(tmp_path):
    project = copy_project(tmp_path / "pro ject")
    config = tiny_config(results_dir=f"res ults {HOSTILE}")
    config["data"].update(dir=f"da ta {HOSTILE}", tasks=["Task04_Hippocampus"])
    config["data"]["synthetic"].update(cases=4, max_dim=16)
    config["preprocess"]["sizes"] = ["16x16x8"]
    config["llm_weights"] = {"smollm2-135m": f"/no where {HOSTILE}/model.gguf"}
    config["lineage"]["dvc"] = False
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "smollm2-135m"]}}
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    results, task = config["results_dir"], "Task04_Hippocampus"

    done = snakemake(project, f"{results}/splits/{task}.json", f"{results}/preprocessed/{task}/16x16x8")
    assert done.returncode == 0, done.stderr[-4000:]
    assert (project / results / "splits" / f"{task}.json").is_file()
    assert any((project / results / "preprocessed" / task / "16x16x8").iterdir())
    assert (project / config["data"]["dir"] / task / "dataset.json").is_file()

    # the weights path does not exist: the job fails, and says so in one line naming the path
    layer = snakemake(project, f"{results}/llm/smollm2-135m.safetensors")
    assert layer.returncode != 0
    log = (project / "logs" / "extract_llm_layer" / "smollm2-135m.log").read_text()
    assert "no where" in log and "Traceback" not in log, log

    assert not list(tmp_path.rglob("INJECTED")), "a command in the config ran"
    assert not (Path.cwd() / "INJECTED").exists()


# --- cross-field rules: refused when Snakemake reads the config, before any job deletes anything ----


@pytest.mark.parametrize(
    "change, message",
    [
        ({"split": {"fractions": [0.5, 0.5, 0.5]}}, "split.fractions [0.5, 0.5, 0.5]: each must be in (0, 1)"),
        ({"split": {"fractions": [1.0, 0.2, 0.1]}}, "split.fractions"),
        ({"model": {"num_heads": 3}}, "model.hidden_size 16 is not divisible by model.num_heads 3"),
        ({"model": {"dropout": 1.0}}, "model.dropout 1.0 must be below 1"),
        ({"model": {"patch_size": 5}}, "input size 16x16x8 is not divisible by model.patch_size 5"),
        ({"preprocess": {"sizes": ["full"]}}, "model.full_img_size must be set"),
        ({"results_dir": "it's"}, "results_dir \"it's\" holds a single quote"),
    ],
)
def test_cross_field_errors_fail_fast_and_leave_the_split_alone(tmp_path, change, message):
    project = copy_project(tmp_path / "project")
    config = tiny_config()
    config["data"]["tasks"] = ["Task04_Hippocampus"]
    config["preprocess"]["sizes"] = ["16x16x8"]
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "mlp"]}}
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    split = project / config["results_dir"] / "splits" / "Task04_Hippocampus.json"
    split.parent.mkdir(parents=True)
    split.write_text('{"made": "by an earlier run"}')
    for dry in (["-n"], []) if "split" in change else (["-n"],):  # a real run too where it used to delete
        result = snakemake(project, *dry, str(split.relative_to(project)))
        assert result.returncode != 0
        said = result.stdout + result.stderr
        assert message in said, said[-2000:]
        assert "Traceback" not in said
        assert split.read_text() == '{"made": "by an earlier run"}'
    assert not (project / "logs").exists()  # no job started
