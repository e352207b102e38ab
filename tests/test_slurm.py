"""The SLURM profile (slurm/config.yaml): parsed by a dry run, then used for real on a one-node cluster.

The cluster test starts scripts/slurm/start-cluster.sh (root; it installs SLURM with apt-get if
missing), runs the real DAG on a tiny config in a copy of the project with
``snakemake --profile slurm``, and checks with ``sacct`` that every rule went through sbatch and
that the GPU rules got a (fake) GPU. It is skipped only where it cannot run: not root, or neither
SLURM nor apt-get to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Callable

import pytest
import yaml
from conftest import ROOT, copy_project, env_with_venv, tiny_config

from medvisionllama.cluster.jobs import evaluate_resources, train_resources
from medvisionllama.cluster.preflight import load_config, validate_config

START = ROOT / "scripts" / "slurm" / "start-cluster.sh"
STOP = ROOT / "scripts" / "slurm" / "stop-cluster.sh"
STATE = Path(os.environ.get("MVL_SLURM_STATE", "/tmp/mvl-slurm"))
SLURM_PROGRAMS = ("sbatch", "sacct", "sacctmgr", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")

#: rules that must never be localrules: they need a compute node (the others may run either way)
CLUSTER_RULES = {"preprocess_task", "train_run", "evaluate_run"}
GPU_RULES = {"train_run", "evaluate_run"}
SNAKEMAKE_TIMEOUT_S = 900


def cluster_config() -> dict:
    """The config of the cluster run: the workflow tests' tiny config, one epoch."""
    config = tiny_config()
    config["training"].update(epochs=1)
    return config


def cluster_targets(config: dict) -> list[str]:
    """What the cluster run builds: one run's metrics.csv (the run layout of docs/contracts.md),
    i.e. the chain synthesize_task -> split_task, preprocess_task -> train_run -> evaluate_run of
    one task with the ViT (the cheapest model). Change this to widen the test."""
    task = config["data"]["tasks"][0]
    size = config["preprocess"]["sizes"][0]
    seed = config["training"]["seeds"][0]
    return [f"{config['results_dir']}/runs/{task}/vit/hybrid-sequential/{size}/seed{seed}/metrics.csv"]


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the one-node SLURM cluster needs root (apt-get install, munged, slurmctld, slurmd)"
    if not all(_which(p) for p in SLURM_PROGRAMS) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def _alive(pidfile: Path, name: str) -> bool:
    try:
        pid = pidfile.read_text().strip()
        return name in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node cluster; stopped at the end unless it was running before."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    was_running = _alive(STATE / "run" / "slurmctld.pid", "slurmctld")
    t0 = time.monotonic()
    result = subprocess.run(["bash", str(START)], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=900)
    seconds = time.monotonic() - t0
    assert result.returncode == 0, f"start-cluster.sh failed:\n{result.stdout}\n{result.stderr}"
    print(f"\nstart-cluster.sh: {seconds:.1f} s\n{result.stdout}")
    yield {"start_seconds": seconds}
    if not was_running:
        subprocess.run(["bash", str(STOP)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def _snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    command = ["timeout", "-k", "10", str(timeout), "snakemake", *args]
    return subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout + 30)


def _site_env(**values: str) -> dict[str, str]:
    """The environment of a user without site settings; the jobs may train on the CPU although
    they hold the local cluster's fake GPU (medvisionllama.cluster.device)."""
    env = env_with_venv()
    for key in [k for k in env if k.startswith("MVL_SLURM_")]:
        del env[key]
    env["MVL_GPU_JOB_ALLOW_CPU"] = "1"
    env.update(values)
    return env


def _job_blocks(dry_run_output: str, rule: str) -> list[str]:
    """The blocks of a dry run's job listing that belong to ``rule``."""
    blocks = dry_run_output.split("\n\n")
    return [b for b in blocks if f"rule {rule}:" in b]


# --------------------------------------------------------------------------------------------
# the profile, without a cluster
# --------------------------------------------------------------------------------------------
def _wildcards(block: str) -> SimpleNamespace:
    """The wildcards of a dry run's job block, as attributes (what the rules' resources see)."""
    line = next(li for li in block.splitlines() if li.strip().startswith("wildcards:"))
    pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(","))
    return SimpleNamespace(**{k.strip(): v.strip() for k, v in pairs})


def _resource(block: str, name: str) -> str:
    found = re.search(rf"\b{name}=([^,\n]+)", block)
    assert found, (name, block)
    return found.group(1)


def _project_config(project: Path, *configfiles: str) -> dict:
    config = load_config([project / "config.yaml", *(project / c for c in configfiles)])
    return validate_config(config, project / "workflow" / "schemas" / "config.schema.yaml")


@pytest.mark.parametrize("cores", [None, "16"])
def test_profile_dry_run_parses_and_sets_resources(project, cores):
    """With or without --cores, a dry run prints what will be asked: each run's estimated memory
    and time (cluster.jobs), the config's threads as CPUs, the site's account/partition/GPU model."""
    env = _site_env(MVL_SLURM_ACCOUNT="proj123", MVL_SLURM_PARTITION="cpuq",
                    MVL_SLURM_GPU_PARTITION="gpuq", MVL_SLURM_GPU_MODEL="a100")
    config = _project_config(project)
    config["training"]["threads"] = 3  # not the default: the config's value must reach sbatch
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(["--profile", "slurm", "-n", *(["--cores", cores] if cores else [])], project, env,
                        timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    for rule, estimate in (("train_run", train_resources), ("evaluate_run", evaluate_resources)):
        blocks = _job_blocks(out, rule)
        assert blocks, out[-3000:]
        for block in blocks:
            expected = estimate(config, _wildcards(block), 1, env={})
            assert int(_resource(block, "mem_mb")) == expected.mem_mb, block
            assert int(_resource(block, "runtime")) == expected.runtime_min, block
            assert re.search(r"threads: 3\b", block) and "cpus_per_task=3" in block, block
            assert "--threads 3" in block, block
            for needle in ("gpu=1", "gpu_model=a100", "slurm_partition=gpuq", "slurm_account=proj123"):
                assert needle in block, (needle, block)
    split = _job_blocks(out, "split_task")
    assert split and "slurm_partition=cpuq" in split[0] and "slurm_account=proj123" in split[0], split[:1]
    assert "gpu=" not in split[0]
    # a run's two GPU jobs go as one sbatch job
    assert re.search(r"Group job run_\w+_vit_hybrid-sequential_", out), out[-3000:]


def test_profile_dry_run_of_the_paper_config_asks_a_gpu_for_every_training_job(project):
    result = _snakemake(["--profile", "slurm", "-n", "--cores", "16", "--configfile", "configs/paper.yaml"],
                        project, _site_env(MVL_SLURM_GPU_MODEL="a100"), timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    train = _job_blocks(out, "train_run")
    assert len(train) >= 70  # the paper's grid: 10 tasks x 6 models, plus the ablations
    assert all("gpu=1" in block and "gpu_model=a100" in block for block in train)
    assert any("llama3.1-8b" in block for block in train) and any("yi1.5-9b" in block for block in train)


def test_profile_without_site_settings_leaves_account_to_the_plugin(project):
    result = _snakemake(["--profile", "slurm", "-n", "--cores", "16"], project, _site_env(), timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "slurm_account" not in out and "slurm_partition" not in out and "gpu_model" not in out
    train = _job_blocks(out, "train_run")
    assert train and "gpu=1" in train[0]


def test_profile_options_exist_in_the_installed_plugin():
    """Every slurm-* key of the profile is a setting of snakemake-executor-plugin-slurm."""
    from dataclasses import fields

    from snakemake_executor_plugin_slurm import ExecutorSettings

    names = {f"slurm-{f.name.replace('_', '-')}" for f in fields(ExecutorSettings)}
    text = (ROOT / "slurm" / "config.yaml").read_text()
    keys = {line.split(":", 1)[0] for line in text.splitlines() if line.startswith("slurm-")}
    assert keys and keys <= names, keys - names


def test_cluster_scripts_refuse_without_root():
    prefix: list[str] = []
    if os.geteuid() == 0:  # exercise the refusal as an unprivileged user
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: the refusal path cannot be exercised")
        prefix = ["runuser", "-u", "nobody", "--"]
    for script in (START, STOP):
        result = subprocess.run([*prefix, "bash", str(script)], capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert result.returncode != 0 and "must run as root" in result.stderr, result.stderr


def test_cluster_scripts_are_valid_bash():
    for script in (START, STOP):
        subprocess.run(["bash", "-n", str(script)], check=True)


# --------------------------------------------------------------------------------------------
# the real DAG on a real (one-node) cluster
# --------------------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_dag_runs_through_sbatch_with_gpus(slurm_cluster, tmp_path):
    project = copy_project(tmp_path / "project")
    config = cluster_config()
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    targets = cluster_targets(config)
    # a second input size of the task: two preprocess_task jobs, submitted as one job array
    task, other_size = config["data"]["tasks"][0], config["preprocess"]["sizes"][1]
    array_target = f"{config['results_dir']}/preprocessed/{task}/{other_size}"
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    result = _snakemake(
        ["--profile", "slurm", "--cores", "2", "--configfile", "config.yaml",
         "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
         "--slurm-array-jobs", "preprocess_task", *targets, array_target],
        project, _site_env(), timeout=SNAKEMAKE_TIMEOUT_S,
    )
    seconds = time.monotonic() - t0
    out = result.stdout + result.stderr
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((project / "logs").rglob("*.log")))
    assert result.returncode == 0, f"snakemake on SLURM failed after {seconds:.0f} s:\n{out[-6000:]}\n{logs[-6000:]}"
    print(f"\nsnakemake --profile slurm: {seconds:.1f} s for {', '.join(targets)}")
    for target in targets:
        assert (project / target).is_file()

    sacct = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-a", "-S", since, "-o", "JobID,State,AllocTRES,Comment,WorkDir"],
        capture_output=True, text=True, check=True,
    ).stdout
    jobs = [line.split("|") for line in sacct.splitlines() if line.strip()]
    ours = [j for j in jobs if Path(j[4]).resolve() == project.resolve()]
    by_rule: dict[str, list[list[str]]] = {}
    groups = []
    for job in ours:
        name = job[3].removeprefix("rule_").split("_wildcards_")[0]
        if name.startswith("run_"):  # a job group: run_<run>_<its rules>, one sbatch job a run
            groups.append(job)
            rules = [rule for rule in GPU_RULES if name.endswith("_evaluate_run_train_run")]
        else:
            rules = [name]
        for rule in rules:
            by_rule.setdefault(rule, []).append(job)
    assert len(groups) == len(targets), sacct  # train_run and evaluate_run of a run: one allocation
    # Snakemake prints "rule X:" for a submitted job (indented inside a group job) and
    # "localrule X:" for one run in place
    submitted = set(re.findall(r"^\s*rule (\w+):", out, flags=re.MULTILINE))
    local = set(re.findall(r"^localrule (\w+):", out, flags=re.MULTILINE))
    assert CLUSTER_RULES <= submitted and not CLUSTER_RULES & local, (submitted, local)
    assert submitted == set(by_rule), f"submitted {sorted(submitted)}, sacct saw {sorted(by_rule)}\n{sacct}"
    assert all(j[1] == "COMPLETED" for j in ours), sacct
    assert (project / array_target).is_dir()
    preprocess = by_rule["preprocess_task"]
    assert len(preprocess) == 2 and all(re.fullmatch(r"\d+_\d+", j[0]) for j in preprocess), sacct
    assert len({j[0].split("_")[0] for j in preprocess}) == 1, sacct  # one array, two tasks
    for rule in GPU_RULES:
        assert all("gres/gpu=1" in j[2] for j in by_rule[rule]), (rule, by_rule[rule])
    for rule in submitted - GPU_RULES:
        assert all("gres/gpu" not in j[2] for j in by_rule[rule]), (rule, by_rule[rule])


# --------------------------------------------------------------------------------------------
# failures, retries and requeue of a run's job (train_run + evaluate_run, one job group)
# --------------------------------------------------------------------------------------------
#: a stand-in for `mvl` first on the jobs' PATH (sbatch exports the environment). Each word of
#: $MVL_TEST_FAIL_ALWAYS / $MVL_TEST_FAIL_ONCE is <verb>:<part of a run folder>: `mvl <verb>` of such
#: a run fails every time / the first time only (a marker file remembers it); all else is real.
MVL_SHIM = r"""#!/usr/bin/env bash
verb=${1:-} run_dir= prev=
for arg in "$@"; do [[ $prev == --run-dir ]] && run_dir=$arg; prev=$arg; done
for rule in ${MVL_TEST_FAIL_ALWAYS:-}; do
    if [[ -n $run_dir && $verb == "${rule%%:*}" && $run_dir == *"${rule#*:}"* ]]; then
        echo "injected failure: mvl $verb of $run_dir always fails (SLURM job ${SLURM_JOB_ID:-?})" >&2
        exit 3
    fi
done
for rule in ${MVL_TEST_FAIL_ONCE:-}; do
    marker=$MVL_TEST_MARKERS/$verb$(printf '%s' "$run_dir" | tr '/' '_').failed-once
    if [[ -n $run_dir && $verb == "${rule%%:*}" && $run_dir == *"${rule#*:}"* && ! -e $marker ]]; then
        : >"$marker"
        echo "injected failure: first mvl $verb of $run_dir (SLURM job ${SLURM_JOB_ID:-?})" >&2
        exit 3
    fi
done
exec "$MVL_TEST_REAL_MVL" "$@"
"""
TASK, SIZE = "Task04_Hippocampus", "16x16x8"


def _run_dir(config: dict, seed: int) -> str:
    return f"{config['results_dir']}/runs/{TASK}/vit/hybrid-sequential/{SIZE}/seed{seed}"


def _prepared_project(tmp_path: Path, epochs: int) -> tuple[Path, dict]:
    """A project copy on the cluster config (``epochs``) whose split, preprocessed volumes and
    settings files of one task are made locally, so that the cluster runs only runs."""
    project = copy_project(tmp_path / "project")
    config = cluster_config()
    config["training"].update(epochs=epochs)
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    results = config["results_dir"]
    targets = [f"{results}/preprocessed/{TASK}/{SIZE}", f"{results}/splits/{TASK}.json",
               f"{results}/config/train.yaml", f"{results}/config/evaluate.yaml"]
    result = _snakemake(["--cores", "2", *targets], project, _site_env(), timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return project, _project_config(project)


def _sacct_runs(since: str, project: Path) -> dict[str, list[dict[str, str]]]:
    """Our sbatch jobs since ``since`` by run folder name (``seed<N>``), in submission order."""
    fields = ["JobID", "State", "AllocTRES", "TimelimitRaw", "Comment", "WorkDir"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", since, "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True).stdout
    runs: dict[str, list[dict[str, str]]] = {}
    for line in out.splitlines():
        job = dict(zip(fields, line.split("|")))
        if line.strip() and Path(job["WorkDir"]).resolve() == project.resolve():
            seed = re.search(r"_(seed\d+)_", job["Comment"])
            runs.setdefault(seed.group(1) if seed else job["Comment"], []).append(job)
    for jobs in runs.values():
        jobs.sort(key=lambda j: int(j["JobID"]))
    return runs


def _mem_mb(alloc_tres: str) -> int:
    found = re.search(r"mem=(\d+)M", alloc_tres)
    assert found, alloc_tres
    return int(found.group(1))


@pytest.mark.slurm
@pytest.mark.slow
def test_failed_jobs_retry_with_the_larger_request_and_name_their_logs(slurm_cluster, tmp_path):
    """seed1's training fails once and succeeds on the retry, which asks the grown estimate;
    seed2's fails for good: Snakemake names its rule log and SLURM log, which hold the error;
    seed3's evaluation fails once: the retry of its one sbatch job redoes the training, which
    resumes from its finished checkpoint, and the evaluation."""
    project, config = _prepared_project(tmp_path, epochs=1)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "mvl").write_text(MVL_SHIM)
    (shim / "mvl").chmod(0o755)
    (tmp_path / "markers").mkdir()
    env = _site_env(MVL_TEST_REAL_MVL=str(Path(shutil.which("mvl", path=env_with_venv()["PATH"]))),
                    MVL_TEST_MARKERS=str(tmp_path / "markers"),
                    MVL_TEST_FAIL_ONCE="train:/seed1 evaluate:/seed3", MVL_TEST_FAIL_ALWAYS="train:/seed2")
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    targets = [f"{_run_dir(config, seed)}/metrics.csv" for seed in (1, 2, 3)]
    result = _snakemake(["--profile", "slurm", "--slurm-init-seconds-before-status-checks", "1", *targets],
                        project, env, timeout=SNAKEMAKE_TIMEOUT_S)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "preflight: all 6 cluster jobs fit" in out, out[-6000:]
    assert [(project / target).is_file() for target in targets] == [True, False, True], out[-6000:]

    runs = _sacct_runs(since, project)
    assert set(runs) == {"seed1", "seed2", "seed3"}, runs
    once, always = runs["seed1"], runs["seed2"]
    assert [j["State"] for j in once] == [j["State"] for j in runs["seed3"]] == ["FAILED", "COMPLETED"], runs
    assert [j["State"] for j in always] == ["FAILED", "FAILED"], always
    for attempt, job in enumerate(once, start=1):  # one sbatch job a run: max memory, summed time
        key = SimpleNamespace(task=TASK, model="vit", size=SIZE)
        train, evaluate = train_resources(config, key, attempt, env={}), evaluate_resources(config, key, attempt, env={})
        assert _mem_mb(job["AllocTRES"]) == max(train.mem_mb, evaluate.mem_mb), job
        assert int(job["TimelimitRaw"]) == train.runtime_min + evaluate.runtime_min, job
        assert "gres/gpu=1" in job["AllocTRES"]
    assert _mem_mb(once[1]["AllocTRES"]) > _mem_mb(once[0]["AllocTRES"])
    assert int(once[1]["TimelimitRaw"]) > int(once[0]["TimelimitRaw"])

    # the failure the user is shown: the group, its rule log and its SLURM log, each holding the error
    rule_log = f"logs/train_run/{TASK}/vit/hybrid-sequential/{SIZE}/seed2.log"
    assert "Error in group run_Task04_Hippocampus_vit_hybrid-sequential_16x16x8_seed2" in out
    assert f"log: {rule_log} (check log file(s) for error details)" in out, out[-6000:]
    assert "injected failure: " in (project / rule_log).read_text()
    slurm_logs = re.findall(r"log: (\S+/logs/slurm/group_run_\S+_seed2_\S+/(\d+)\.log)", out)
    assert {int(i) for _, i in slurm_logs} == {int(j["JobID"]) for j in always}, slurm_logs
    for path, _ in slurm_logs:
        assert "Error in rule train_run" in Path(path).read_text()
    # each attempt keeps its own log, and the final error shows attempt 1's error too
    for attempt in (1, 2):
        kept = project / f"logs/train_run/{TASK}/vit/hybrid-sequential/{SIZE}/seed2.attempt{attempt}.log"
        assert "injected failure: " in kept.read_text(), kept
        assert re.search(rf"attempt {attempt} of train_run: injected failure: mvl train of \S+/seed2 always fails"
                         rf" \(SLURM job {always[attempt - 1]['JobID']}\) \(log: \S+seed2\.attempt{attempt}\.log\)", out), out[-6000:]
    final = out[out.rindex(f"Group job run_Task04_Hippocampus_vit_hybrid-sequential_16x16x8_seed2 (SLURM job {always[1]['JobID']}):"):]
    assert "attempt 1 of train_run: injected failure" in final and "attempt 2 of train_run: injected failure" in final
    assert "finished " in (project / f"logs/train_run/{TASK}/vit/hybrid-sequential/{SIZE}/seed1.log").read_text()
    retrained = (project / f"logs/train_run/{TASK}/vit/hybrid-sequential/{SIZE}/seed3.log").read_text()
    assert "from epoch 1 of 1" in retrained and (project / _run_dir(config, 3) / "history.csv").is_file()


def _checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True, map_location="cpu")


def _submit(project: Path, config: dict, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, IO[str]]:
    """Snakemake on the cluster for the seed-0 run's metrics, in the background; output to
    tmp_path/snakemake.out. Returns the process and the open log (close it when done)."""
    log = (tmp_path / "snakemake.out").open("w")
    command = ["timeout", "-k", "10", str(SNAKEMAKE_TIMEOUT_S), "snakemake", "--profile", "slurm", *args,
               "--slurm-init-seconds-before-status-checks", "1", f"{_run_dir(config, 0)}/metrics.csv"]
    snakemake = subprocess.Popen(command, cwd=project, env=_site_env(), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
    return snakemake, log


def _running_job(snakemake: subprocess.Popen, tmp_path: Path, ready: Callable[[], bool] = lambda: True,
                 wait_s: float = 300) -> str:
    """The id of the seed-0 run's job once SLURM runs it and ``ready()`` holds (a generous limit that
    fails with Snakemake's output, never a timing the test depends on)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and snakemake.poll() is None:
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True).stdout
        running = [line.split("|")[0] for line in queue.splitlines() if "|RUNNING|" in line and "_seed0_" in line]
        if running and ready():
            return running[0]
        time.sleep(0.2)
    pytest.fail(f"no running job (ready) within {wait_s:.0f} s:\n{(tmp_path / 'snakemake.out').read_text()[-4000:]}")


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_training_resumes_from_its_checkpoint_with_the_same_weights(slurm_cluster, tmp_path):
    """`scontrol requeue` of a running run: SLURM starts the same job id again, training resumes
    from checkpoint_last.pt and ends with the weights of an uninterrupted run."""
    epochs = 80  # about 0.15 s an epoch here: the job is caught after its first checkpoint
    project, config = _prepared_project(tmp_path, epochs=epochs)
    run = project / _run_dir(config, 0)
    results = config["results_dir"]
    snakemake, log = _submit(project, config, tmp_path)
    try:
        job_id = _running_job(snakemake, tmp_path, ready=(run / "checkpoint_last.pt").is_file)
        assert not (run / "run.json").exists()  # caught mid-way
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True)
        # a requeued job waits about two minutes (Reason=BeginTime, set once it is pending again);
        # then let it start at once
        for _ in range(150):
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True,
                                   text=True).stdout.strip()
            if state == "PENDING|BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True,
                               capture_output=True, text=True)
                break
            time.sleep(0.2)
        # the same run, uninterrupted, outside SLURM, while Snakemake waits between status checks
        straight = subprocess.run(
            ["mvl", "train", "--config", f"{results}/config/train.yaml", "--preprocessed",
             f"{results}/preprocessed/{TASK}/{SIZE}", "--split", f"{results}/splits/{TASK}.json", "--run-dir",
             str(tmp_path / "straight"), "--model", "vit", "--attention", "hybrid-sequential", "--seed", "0",
             "--threads", "1", "--no-progress"], cwd=project, env=_site_env(), capture_output=True, text=True,
            timeout=600)
        assert straight.returncode == 0, straight.stderr[-3000:]
        returncode = snakemake.wait(timeout=SNAKEMAKE_TIMEOUT_S + 60)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
        log.close()
    out = (tmp_path / "snakemake.out").read_text()
    assert returncode == 0, out[-6000:]
    history = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert [line.split("|")[1] for line in history] == ["REQUEUED", "COMPLETED"], history
    train_log = (project / f"logs/train_run/{TASK}/vit/hybrid-sequential/{SIZE}/seed0.log").read_text()
    resumed = re.search(rf"resuming \S+ from epoch (\d+) of {epochs}", train_log)
    assert resumed and 1 <= int(resumed.group(1)) < epochs, train_log[:2000]

    straight = tmp_path / "straight"
    a, b = _checkpoint(straight / "checkpoint_last.pt"), _checkpoint(run / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == epochs
    assert a["model_state"].keys() == b["model_state"].keys()
    for key in a["model_state"]:
        assert a["model_state"][key].equal(b["model_state"][key]), key
    def rows(path: Path) -> list[list[str]]:  # history.csv without its seconds column
        lines = [line.split(",") for line in path.read_text().splitlines()]
        keep = [i for i, name in enumerate(lines[0]) if name != "seconds"]
        return [[line[i] for i in keep] for line in lines]

    assert rows(run / "history.csv") == rows(straight / "history.csv") and len(rows(straight / "history.csv")) == epochs + 1
    assert (project / f"{_run_dir(config, 0)}/metrics.csv").is_file()


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_of_a_running_job_ends_it_in_snakemake_with_the_reason_and_log(slurm_cluster, tmp_path):
    """sacct calls a cancelled job `CANCELLED by <uid>`; plugin 2.8.0 alone would wait for it
    forever (medvisionllama.cluster.plugin_patch). With the patch Snakemake reports the job as
    failed at its next status check, naming who cancelled it and the job's SLURM log."""
    project, config = _prepared_project(tmp_path, epochs=5000)  # runs far longer than the test waits
    snakemake, log = _submit(project, config, tmp_path, "--retries", "0")
    try:
        job_id = _running_job(snakemake, tmp_path)
        subprocess.run(["scancel", job_id], check=True, capture_output=True, text=True)
        try:
            returncode = snakemake.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Snakemake still waits 300 s after `scancel {job_id}`: the cancelled job was not "
                        f"recognised\n{(tmp_path / 'snakemake.out').read_text()[-4000:]}")
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
        log.close()
    out = (tmp_path / "snakemake.out").read_text()
    state = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert state.startswith("CANCELLED by "), state
    assert returncode != 0, out[-4000:]
    assert f"SLURM-job '{job_id}' failed, SLURM status is: '{state}" in out and "(root)" in out, out[-4000:]
    slurm_log = re.search(rf"log: (\S+/logs/slurm/group_run_\S+_seed0_\S+/{job_id}\.log)", out)
    assert slurm_log and Path(slurm_log.group(1)).is_file(), out[-4000:]
    assert not (project / _run_dir(config, 0) / "run.json").exists()


# --------------------------------------------------------------------------------------------
# the plugin fixes, without a cluster (medvisionllama.cluster.plugin_patch)
# --------------------------------------------------------------------------------------------
def test_slurm_state_compares_by_its_first_word_and_prints_in_full():
    from medvisionllama.cluster.plugin_patch import SlurmState

    cancelled = SlurmState("CANCELLED by 0")
    assert cancelled == "CANCELLED" and "CANCELLED" == cancelled and cancelled != "COMPLETED"
    assert cancelled in ("BOOT_FAIL", "CANCELLED", "TIMEOUT") and cancelled not in ("COMPLETED", "RUNNING")
    assert str(cancelled) == "CANCELLED by 0 (root)" and f"{cancelled}" == "CANCELLED by 0 (root)"
    assert str(SlurmState("CANCELLED by 4294967000")) == "CANCELLED by 4294967000"  # no such user
    for state in ("TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "COMPLETED", "RUNNING", "CANCELLED+"):
        assert SlurmState(state) == state.rstrip("+") and str(SlurmState(state)) == state
    assert SlurmState("RUNNING") != "RUN"


def test_patched_status_query_lets_the_plugin_see_a_cancelled_job():
    """The plugin's own comparisons (check_active_jobs: `status == "COMPLETED"`, `status in
    fail_stati`) applied to what the patched query returns for recorded sacct states."""
    import asyncio

    from medvisionllama.cluster.plugin_patch import patch_slurm_status

    recorded = {"11": "CANCELLED by 0", "12": "TIMEOUT", "13": "OUT_OF_MEMORY", "14": "NODE_FAIL",
                "15": "COMPLETED", "16": "RUNNING", "17": "CANCELLED"}

    async def query_job_status(command, logger):  # what plugin 2.8.0's parser returns for sacct's lines
        return dict(recorded), 0.01

    plugin = SimpleNamespace(query_job_status=query_job_status)
    assert patch_slurm_status(plugin) and patch_slurm_status(plugin)  # idempotent
    states, _ = asyncio.run(plugin.query_job_status("sacct ...", None))
    fail_stati = ("BOOT_FAIL", "CANCELLED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "ERROR")
    assert {j for j, s in states.items() if s in fail_stati} == {"11", "12", "13", "14", "17"}
    assert [j for j, s in states.items() if s == "COMPLETED"] == ["15"]
    assert "CANCELLED by 0" not in fail_stati  # the bug: unpatched, job 11 looks like it still runs
    assert patch_slurm_status(SimpleNamespace()) is False


def test_failed_attempts_keep_their_logs_and_the_last_error_shows_them_all(tmp_path, monkeypatch):
    from medvisionllama.cluster.plugin_patch import patch_slurm_errors

    monkeypatch.chdir(tmp_path)
    log = Path("logs/train_run/seed2.log")
    log.parent.mkdir(parents=True)
    stale = Path("logs/evaluate_run/seed2.log")  # from an earlier invocation: not this job's
    stale.parent.mkdir(parents=True)
    stale.write_text("old evaluation\n")
    os.utime(stale, (1, 1))
    reported, printed = [], []

    class Executor:  # the plugin's Executor, as far as the patch sees it
        def report_job_submission(self, job_info):
            pass

        def report_job_error(self, job_info, msg=None, **kwargs):
            reported.append((msg, kwargs))

        logger = SimpleNamespace(error=lambda text: printed.append(text))

    plugin = SimpleNamespace(Executor=Executor)
    assert patch_slurm_errors(plugin) and patch_slurm_errors(plugin)
    train = SimpleNamespace(rule=SimpleNamespace(name="train_run"), log=[str(log)], attempt=1)
    evaluate = SimpleNamespace(rule=SimpleNamespace(name="evaluate_run"), log=[str(stale)], attempt=1)
    group = SimpleNamespace(jobs=[evaluate, train], attempt=1, groupid="run_seed2")
    executor = Executor()
    for attempt, error in ((1, "InputError: first failure"), (2, "RuntimeError: CUDA out of memory")):
        group.attempt = attempt
        info = SimpleNamespace(job=group, external_jobid=str(40 + attempt))
        executor.report_job_submission(info)
        log.write_text(f"epoch 1\n{error}\n\n")
        executor.report_job_error(info, "SLURM-job failed", aux_logs=["slurm.log"])
    assert Path("logs/train_run/seed2.attempt1.log").read_text().splitlines()[1] == "InputError: first failure"
    assert "CUDA out of memory" in Path("logs/train_run/seed2.attempt2.log").read_text()
    assert not Path("logs/evaluate_run/seed2.attempt1.log").exists()
    assert printed[-1].startswith("Group job run_seed2 (SLURM job 42): SLURM-job failed\n    attempt 1 of train_run")
    last, kwargs = reported[-1]
    assert kwargs == {"aux_logs": ["slurm.log"]}
    assert last.splitlines() == [
        "SLURM-job failed",
        "attempt 1 of train_run: InputError: first failure (log: logs/train_run/seed2.attempt1.log)",
        "attempt 2 of train_run: RuntimeError: CUDA out of memory (log: logs/train_run/seed2.attempt2.log)",
    ]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_gpu_job_whose_torch_cannot_use_cuda_fails_at_once(slurm_cluster, tmp_path):
    """A job given the node's (fake) GPU, with this machine's CPU build of torch and no
    MVL_GPU_JOB_ALLOW_CPU: `device: auto` must not fall back to the CPU; it fails in one line."""
    env = _site_env()
    del env["MVL_GPU_JOB_ALLOW_CPU"]
    out = tmp_path / "job.out"
    code = "from medvisionllama.runtime import resolve_device; resolve_device('auto')"
    result = subprocess.run(["sbatch", "--wait", "--gpus=1", "-t", "5", "-o", str(out), "--parsable", "--wrap",
                             f"mvl_python={shutil.which('python', path=env['PATH'])}; $mvl_python -c \"{code}\""],
                            env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, (result.stdout, result.stderr, out.read_text() if out.exists() else "")
    error = out.read_text().strip().splitlines()[-1]
    assert error.startswith("medvisionllama.errors.InputError: --device 'auto' needs CUDA here (SLURM job "), error
    assert f"torch {__import__('torch').__version__}" in error and "NVIDIA driver: " in error, error


@pytest.mark.slurm
@pytest.mark.slow
def test_start_cluster_applies_new_sizes_to_the_running_cluster(slurm_cluster):
    """start-cluster.sh with another MVL_SLURM_MEM_MB on a running cluster restarts slurmctld and
    slurmd so that the node has the new size (then the default again)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MVL_SLURM_")}

    def start(**values: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(START)], env={**env, **values}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)

    def real_memory() -> str:
        node = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True, check=True).stdout
        return re.search(r"RealMemory=(\d+)", node).group(1)

    try:
        changed = start(MVL_SLURM_MEM_MB="64000")
        assert changed.returncode == 0, changed.stdout + changed.stderr
        assert "configuration changed (slurm.conf): restarting slurmctld and slurmd" in changed.stdout, changed.stdout
        assert real_memory() == "64000"
    finally:
        restored = start()
    assert restored.returncode == 0 and "restarting" in restored.stdout, restored.stdout + restored.stderr
    assert real_memory() == "128000"
    again = start()  # nothing changed: nothing restarts
    assert again.returncode == 0 and "restarting" not in again.stdout, again.stdout
