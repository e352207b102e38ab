"""The cluster jobs of a pipeline config and what each asks SLURM for.

The rules that go to the cluster (the others are ``localrules``): ``preprocess_task`` (one job a
task and input size some run reads; ``threads: preprocess.workers``; memory and time from
:func:`preprocess_resources`),
``train_run`` and ``evaluate_run`` (one job a run; ``threads: training.threads``; a GPU unless
``training.device: cpu``; memory and time from :mod:`medvisionllama.cluster.resources`). On a
cluster the two jobs of a run form one job group (:func:`run_group`), submitted as one sbatch job
that asks the larger of their CPUs, memory and GPUs and the sum of their times (Snakemake's
group resources for two jobs that run one after the other).

:func:`train_resources` and :func:`evaluate_resources` are what the rules' ``resources:`` call
(``train_resources(config, wildcards, attempt).mem_mb``, in workflow/rules/common.smk);
:func:`cluster_jobs` lists every job with the profile applied, for ``mvl preflight``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from medvisionllama.cluster.profile import Profile, Value, apply
from medvisionllama.cluster.resources import (
    JobResources,
    estimate_evaluation,
    estimate_preprocess,
    estimate_training,
    for_attempt,
)
from medvisionllama.errors import InputError
from medvisionllama.tasks import task_info

TRAIN_RULE = "train_run"
EVALUATE_RULE = "evaluate_run"
PREPROCESS_RULE = "preprocess_task"


def _get(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    value: Any = config
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    return value


def split_sizes(config: Mapping[str, Any], task: str) -> tuple[int, int, int]:
    """Cases of ``task`` in (train, val, test): the real release's count for ``data.source: msd``,
    ``data.synthetic.cases`` otherwise, split by ``split.fractions`` as ``mvl split`` does."""
    from medvisionllama.data.split import split_counts  # imports numpy/nibabel: only when called

    info = task_info(task, _get(config, "data", "dir"))
    cases = info.cases if _get(config, "data", "source", default="synthetic") == "msd" \
        else int(_get(config, "data", "synthetic", "cases", default=10))
    fractions = tuple(_get(config, "split", "fractions", default=[0.7, 0.2, 0.1]))
    return split_counts(cases, fractions)  # type: ignore[arg-type]


def _shape(size: str) -> str:
    return "x".join(str(d) for d in size) if not isinstance(size, str) else size


def _run_fields(run: Any) -> tuple[str, str, str]:
    """(task, model, size) of a RunKey or of Snakemake wildcards."""
    return str(run.task), str(run.model), str(run.size)


def _training_size(config: Mapping[str, Any], task: str, size: str) -> tuple[str, str]:
    """(network input, volumes read) of a run: ``full`` trains on crops of model.full_img_size."""
    if size != "full":
        return size, size
    native = _shape(task_info(task, _get(config, "data", "dir")).shape)
    crop = _get(config, "model", "full_img_size")
    return (crop or native), native


def train_resources(config: Mapping[str, Any], run: Any, attempt: int = 1,
                    env: Mapping[str, str] | None = None) -> JobResources:
    """What one ``train_run`` job asks for (``run``: a RunKey or the rule's wildcards)."""
    task, model, size = _run_fields(run)
    training = _get(config, "training", default={}) or {}
    input_size, data_size = _training_size(config, task, size)
    first = estimate_training(
        input_size, model, epochs=int(training.get("epochs", 100)), train_cases=split_sizes(config, task)[0],
        batch_size=int(training.get("batch_size", 4)), device=str(training.get("device", "auto")),
        threads=int(training.get("threads", 1)), in_channels=task_info(task, _get(config, "data", "dir")).num_channels,
        patch_size=int(_get(config, "model", "patch_size", default=8)),
        num_workers=int(training.get("num_workers", 0)), data_size=data_size,
    )
    return for_attempt(first, attempt, env)


def evaluate_resources(config: Mapping[str, Any], run: Any, attempt: int = 1,
                       env: Mapping[str, str] | None = None) -> JobResources:
    """What one ``evaluate_run`` job asks for."""
    task, model, size = _run_fields(run)
    training = _get(config, "training", default={}) or {}
    info = task_info(task, _get(config, "data", "dir"))
    native = _native_size(config, task)
    first = estimate_evaluation(
        _training_size(config, task, size)[0], model, test_cases=split_sizes(config, task)[2],
        native_size=native, device=str(training.get("device", "auto")), threads=int(training.get("threads", 1)),
        in_channels=info.num_channels, num_classes=info.num_classes,
        patch_size=int(_get(config, "model", "patch_size", default=8)),
    )
    return for_attempt(first, attempt, env)


def _native_size(config: Mapping[str, Any], task: str) -> str:
    """A task's volume shape as read: the release's typical shape, or the synthetic side."""
    if _get(config, "data", "source", default="synthetic") != "msd":  # synthetic volumes are small
        side = int(_get(config, "data", "synthetic", "max_dim", default=48))
        return f"{side}x{side}x{side}"
    return _shape(task_info(task, _get(config, "data", "dir")).shape)


def preprocess_resources(config: Mapping[str, Any], task: Any, attempt: int = 1,
                         env: Mapping[str, str] | None = None) -> JobResources:
    """What one ``preprocess_task`` job asks for (``task``: the task's name or the rule's wildcards)."""
    name = str(getattr(task, "task", task))
    first = estimate_preprocess(_native_size(config, name),
                                channels=task_info(name, _get(config, "data", "dir")).num_channels,
                                workers=int(_get(config, "preprocess", "workers", default=1)),
                                real_data=_get(config, "data", "source", default="synthetic") == "msd")
    return for_attempt(first, attempt, env)


@dataclass(frozen=True)
class JobRequest:
    """One cluster job after the profile: what sbatch will be asked for."""

    rule: str
    label: str  #: the job's wildcards, e.g. the run's path
    attempt: int
    partition: str | None  #: None: the cluster's default partition
    cpus: Value
    mem_mb: Value | None
    runtime_min: Value | None
    gpus: int
    gpu_model: str | None
    group: str | None = None  #: job group: its jobs go to SLURM as one sbatch job


def run_group(run: Any) -> str:
    """The job group of a run's train_run and evaluate_run (workflow/rules/common.smk RUN_GROUP)."""
    replicate = getattr(run, "replicate", None) or f"seed{run.seed}"  # a RunKey, or the rule's wildcards
    return f"run_{run.task}_{run.model}_{run.attention}_{run.size}_{replicate}"


def _minutes(value: Any, where: str) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not m:
        raise InputError(f"{where}: cannot read the runtime {value!r} (minutes, or e.g. 2h)")
    scale = {"s": 1 / 60, "": 1, "m": 1, "h": 60, "d": 1440}[m.group(2)]
    return int(float(m.group(1)) * scale + 0.999)


def _megabytes(value: Any, where: str) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", str(value), re.I)
    if not m:
        raise InputError(f"{where}: cannot read the memory {value!r} (MB, or e.g. 32G)")
    scale = {"k": 1e-3, "": 1, "m": 1, "g": 1000, "t": 1e6}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def to_request(rule: str, label: str, attempt: int, threads: Value, resources: dict[str, Value],
               group: str | None = None) -> JobRequest:
    """Read the sbatch-relevant resources (as the SLURM plugin does: ``cpus_per_task`` else the
    threads, ``mem_mb`` or ``mem``, ``runtime`` in minutes, ``gpu``/``gpus`` and ``gpu_model``)."""
    where = f"{rule} ({label})"
    cpus = resources.get("cpus_per_task", threads)
    if cpus.source == "rule" and "cpus_per_task" in resources:
        cpus = Value(cpus.value, threads.source)  # the rules say cpus_per_task=threads
    mem = resources.get("mem_mb") or resources.get("mem")
    runtime = resources.get("runtime")
    gpu = resources.get("gpu") or resources.get("gpus")
    partition = resources.get("slurm_partition")
    model = resources.get("gpu_model")
    return JobRequest(
        rule=rule, label=label, attempt=attempt,
        partition=str(partition.value) if partition and partition.value else None,
        cpus=Value(int(cpus.value), cpus.source),
        mem_mb=Value(_megabytes(mem.value, where), mem.source) if mem else None,
        runtime_min=Value(_minutes(runtime.value, where), runtime.source) if runtime else None,
        gpus=int(gpu.value) if gpu else 0,
        gpu_model=str(model.value) if model and model.value else None,
        group=group,
    )


def _preprocessed(config: Mapping[str, Any], runs: list[Any]) -> dict[str, list[str]]:
    """{task: [size, ...]} the runs read (``experiments.sizes_needed``, restricted to ``runs``):
    the preprocess_task jobs of the plan, not every task x preprocess.sizes."""
    order = list(_get(config, "preprocess", "sizes", default=[]) or [])
    needed: dict[str, list[str]] = {}
    for run in runs:
        sizes = needed.setdefault(str(run.task), [])
        if str(run.size) not in sizes:
            sizes.append(str(run.size))
    rank = {size: i for i, size in enumerate(order)}
    return {task: sorted(sizes, key=lambda size: (rank.get(size, len(rank)), size)) for task, sizes in needed.items()}


def cluster_jobs(config: Mapping[str, Any], runs: list[Any], profile: Profile, attempt: int = 1, *,
                 env: Mapping[str, str] | None = None, cores: int | None = None) -> list[JobRequest]:
    """Every cluster job of ``config`` (``runs``: its RunKeys) at ``attempt``, profile applied."""
    jobs = []
    workers = int(_get(config, "preprocess", "workers", default=1))
    for task, sizes in _preprocessed(config, runs).items():  # what the plan preprocesses, as the DAG
        for size in sizes:
            estimate = preprocess_resources(config, task, attempt, env)
            own = {"mem_mb": estimate.mem_mb, "runtime": estimate.runtime_min}
            threads, res = apply(PREPROCESS_RULE, workers, own, profile, attempt, cores=cores,
                                 estimated=frozenset(own))
            jobs.append(to_request(PREPROCESS_RULE, f"{task}/{size}", attempt, threads, res))
    training = _get(config, "training", default={}) or {}
    threads = int(training.get("threads", 1))
    gpu = 0 if training.get("device", "auto") == "cpu" else 1
    estimated = frozenset({"mem_mb", "runtime"})
    for rule, estimate in ((TRAIN_RULE, train_resources), (EVALUATE_RULE, evaluate_resources)):
        for run in runs:
            def mem(a: int, t: int, run: Any = run, estimate: Any = estimate) -> int:
                return estimate(config, run, a, env).mem_mb

            def runtime(a: int, t: int, run: Any = run, estimate: Any = estimate) -> int:
                return estimate(config, run, a, env).runtime_min

            own = {"gpu": gpu, "mem_mb": mem, "runtime": runtime, "cpus_per_task": lambda a, t: t}
            t, res = apply(rule, threads, own, profile, attempt, estimated=estimated, cores=cores)
            jobs.append(to_request(rule, run.path(), attempt, t, res, group=run_group(run)))
    return jobs
