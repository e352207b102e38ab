"""``mvl preflight``: will every cluster job of the pipeline ever be scheduled?

SLURM accepts a job whose request no node of its partition can meet and leaves it pending
forever (reason ``PartitionConfig``/``Resources``), and Snakemake waits silently. This command
compares each job's CPUs, memory, GPUs and time (the pipeline config, the profile's
``set-threads``/``set-resources``/``default-resources`` applied as Snakemake applies them, the
estimates of :mod:`medvisionllama.cluster.resources` for ``train_run``/``evaluate_run``) with
what the partitions offer (``sinfo``, ``scontrol show partition``), and prints one line for each
rule that can never be scheduled, naming the setting to change. Exit status 2 when one cannot,
else 0; a one-line summary either way. Retries (the profile's ``retries``) are checked too:
a retry that would not fit is a warning, not a failure. A run's ``train_run`` and
``evaluate_run`` go to SLURM as one sbatch job (a job group), so they are checked together too
(the larger CPUs, memory and GPUs, the summed time). The Snakefile's ``onstart:`` hook runs the
same check on the jobs of every SLURM submission (:func:`preflight_snakemake_jobs`).

    mvl preflight --config config.yaml --config configs/paper.yaml --profile slurm
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from medvisionllama.cluster.jobs import JobRequest, cluster_jobs, to_request
from medvisionllama.cluster.profile import Profile, Value, load_profile
from medvisionllama.cluster.resources import MAX_MEM_ENV, MAX_RUNTIME_ENV
from medvisionllama.cluster.slurm import (
    Cluster,
    Partition,
    build_cluster,
    format_minutes,
    parse_partitions,
    parse_sinfo_json,
    parse_sinfo_text,
    read_cluster,
)
from medvisionllama.errors import InputError

#: the config key behind each rule's threads
THREADS_SETTING = {"train_run": "training.threads", "evaluate_run": "training.threads",
                   "preprocess_task": "preprocess.workers"}
GPU_RULES = ("train_run", "evaluate_run")


@dataclass(frozen=True)
class Problem:
    rule: str
    message: str


def _gpu_text(n: int, model: str | None) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}" + (f" of type {model!r}" if model else "")


def _setting(value_source: str, rule: str, key: str, limit: int, env_var: str | None) -> str:
    """Which setting to change so that ``rule``'s ``key`` is at most ``limit``."""
    if value_source == "estimate" and env_var:
        return f"set {env_var}={limit} (caps the estimate) or --set-resources {rule}:{key}={limit}"
    if value_source == "default-resources":
        return f"--default-resources {key}={limit} (replaces the profile's whole list) or --set-resources {rule}:{key}={limit}"
    return f"--set-resources {rule}:{key}={limit}"


def job_problems(job: JobRequest, cluster: Cluster) -> list[str]:
    """Why ``job`` can never run on ``cluster`` (empty when some node of its partition fits)."""
    names = ", ".join(cluster.partitions)
    if job.partition and "," in job.partition:  # sbatch -p a,b: the job runs where it fits first
        options = [replace(job, partition=p.strip()) for p in job.partition.split(",")]
        found = [job_problems(option, cluster) for option in options]
        return [] if any(not f for f in found) else [f"in every partition of {job.partition!r}: {found[0][0]}"]
    part: Partition | None
    if job.partition is None:
        part = cluster.default
        if part is None:
            env = "MVL_SLURM_GPU_PARTITION" if job.rule in GPU_RULES else "MVL_SLURM_PARTITION"
            return [f"asks no partition and the cluster has no default one: set {env} (partitions: {names})"]
    else:
        part = cluster.partitions.get(job.partition)
        if part is None:
            env = "MVL_SLURM_GPU_PARTITION" if job.rule in GPU_RULES else "MVL_SLURM_PARTITION"
            return [f"asks partition {job.partition!r}, which does not exist: set {env} to one of {names}"]
    where = f"partition {part.name!r}"
    if not part.nodes:
        return [f"{where} has no nodes"]
    if part.state not in {"UP"}:
        return [f"{where} is {part.state}"]
    out = []
    cpus = [min(n.cpus, part.max_cpus or n.cpus) for n in part.nodes]
    mems = [min(n.mem_mb, part.max_mem_mb or n.mem_mb) for n in part.nodes]
    gpus = [n.gpu_count(job.gpu_model) for n in part.nodes]
    if job.cpus.value > max(cpus):
        setting = THREADS_SETTING.get(job.rule)
        fix = f"--set-threads {job.rule}={max(cpus)}"
        if job.cpus.source == "rule" and setting:  # the config decides, no profile overrides it
            fix = f"set {setting}: {max(cpus)} in the config, or {fix}"
        out.append(f"asks {job.cpus.value} CPUs, {where} nodes have at most {max(cpus)}: {fix}")
    if job.mem_mb is not None and job.mem_mb.value > max(mems):
        fix = _setting(job.mem_mb.source, job.rule, "mem_mb", max(mems), MAX_MEM_ENV)
        out.append(f"asks {job.mem_mb.value} MB, {where} nodes have at most {max(mems)} MB: {fix}")
    if job.gpus > max(gpus):
        types = sorted({k or "untyped" for n in part.nodes for k in n.gpus})
        if job.gpu_model and any(n.gpu_count() >= job.gpus for n in part.nodes):
            fix = f"set MVL_SLURM_GPU_MODEL to one of {', '.join(types)} (or unset it)"
        else:
            with_gpus = [p.name for p in cluster.partitions.values() if any(n.gpu_count(job.gpu_model) >= job.gpus
                                                                              for n in p.nodes)]
            fix = (f"set MVL_SLURM_GPU_PARTITION to {' or '.join(with_gpus)}" if with_gpus
                   else "no partition has such GPUs") + " (or training.device: cpu)"
        out.append(f"asks {_gpu_text(job.gpus, job.gpu_model)}, {where} nodes have at most {max(gpus)}: {fix}")
    if job.runtime_min is not None and part.max_time_min is not None and job.runtime_min.value > part.max_time_min:
        fix = _setting(job.runtime_min.source, job.rule, "runtime", part.max_time_min, MAX_RUNTIME_ENV)
        out.append(f"asks {job.runtime_min.value} min, {where} allows {format_minutes(part.max_time_min)}"
                   f" ({part.max_time_min} min): {fix}")
    if not out:  # each fits some node; do all fit one?
        fits = [c >= job.cpus.value and (job.mem_mb is None or m >= job.mem_mb.value) and g >= job.gpus
                for c, m, g in zip(cpus, mems, gpus)]
        if not any(fits):
            mem = f"{job.mem_mb.value} MB" if job.mem_mb else "no memory"
            out.append(f"asks {job.cpus.value} CPUs, {mem} and {_gpu_text(job.gpus, job.gpu_model)} together,"
                       f" which no single node of {where} has: lower one of them")
    return out


def group_request(members: list[JobRequest]) -> JobRequest:
    """The one sbatch request of a job group whose jobs run one after the other (a run's
    train_run then evaluate_run): the largest CPUs, memory and GPUs, the summed time."""
    first = members[0]
    cpus = max((m.cpus for m in members), key=lambda v: v.value)
    mems = [m.mem_mb for m in members if m.mem_mb is not None]
    times = [m.runtime_min for m in members if m.runtime_min is not None]
    return replace(first, rule="+".join(m.rule for m in members), cpus=cpus,
                   mem_mb=max(mems, key=lambda v: v.value) if mems else None,
                   runtime_min=Value(sum(t.value for t in times), times[0].source) if times else None,
                   gpus=max(m.gpus for m in members))


def group_problems(members: list[JobRequest], cluster: Cluster) -> list[str]:
    """Why the sbatch job of a group whose jobs each fit can still never run: the summed time
    over MaxTime, or the largest CPUs, memory and GPUs together on no node."""
    merged = group_request(members)
    out = [p for p in job_problems(replace(merged, runtime_min=None), cluster)]
    part = cluster.partitions.get(merged.partition) if merged.partition else cluster.default
    limit = part.max_time_min if part else None
    if merged.runtime_min is not None and limit is not None and merged.runtime_min.value > limit:
        parts = " + ".join(f"{m.runtime_min.value} ({m.rule})" for m in members if m.runtime_min)
        fix = (f"set {MAX_RUNTIME_ENV}={limit // len(members)} (caps each estimate)"
               if merged.runtime_min.source == "estimate" else
               f"--set-resources " + " ".join(f"{m.rule}:runtime={limit // len(members)}" for m in members))
        out.append(f"asks {parts} = {merged.runtime_min.value} min as one sbatch job (job group {merged.group}),"
                   f" partition {part.name!r} allows {format_minutes(limit)} ({limit} min): {fix}")
    return out


def check(jobs: Iterable[JobRequest], cluster: Cluster) -> list[Problem]:
    """One problem line per rule: the largest request of the rule's jobs that cannot run. Jobs of
    a group (``JobRequest.group``) that each fit are checked once more as their group's one
    sbatch request, reported under ``train_run+evaluate_run``."""
    by_rule: dict[str, list[tuple[JobRequest, list[str]]]] = {}
    totals: dict[str, int] = {}
    groups: dict[str, list[JobRequest]] = {}
    failed_groups: set[str] = set()
    for job in jobs:
        totals[job.rule] = totals.get(job.rule, 0) + 1
        problems = job_problems(job, cluster)
        if problems:
            by_rule.setdefault(job.rule, []).append((job, problems))
        if job.group is not None:
            groups.setdefault(job.group, []).append(job)
            if problems:
                failed_groups.add(job.group)
    for name, members in groups.items():
        members = sorted(members, key=lambda m: m.rule != "train_run")  # the order they run in
        if len(members) < 2:
            continue
        merged = group_request(members)
        totals[merged.rule] = totals.get(merged.rule, 0) + 1
        if name not in failed_groups:
            problems = group_problems(members, cluster)
            if problems:
                by_rule.setdefault(merged.rule, []).append((merged, problems))
    result = []
    for rule, failing in by_rule.items():
        def size(item: tuple[JobRequest, list[str]]) -> tuple[int, int, int]:
            job = item[0]
            return (job.cpus.value, job.mem_mb.value if job.mem_mb else 0, job.runtime_min.value if job.runtime_min else 0)

        job, problems = max(failing, key=size)
        count = f"{len(failing)} of {totals[rule]} jobs" if len(failing) != 1 or totals[rule] != 1 else "its job"
        attempt = f" on attempt {job.attempt}" if job.attempt > 1 else ""
        result.append(Problem(rule, f"{rule}{attempt} ({count}, e.g. {job.label}) " + "; ".join(problems)))
    return result


def _span(values: list[int], unit: str = "") -> str:
    low, high = min(values), max(values)
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def rule_summaries(jobs: Iterable[JobRequest], cluster: Cluster | None = None) -> list[str]:
    """One line per rule: how many jobs of it the plan holds and everything they ask sbatch for
    (partition, GPUs and their model, CPUs, memory, time; a range where the jobs differ)."""
    by_rule: dict[str, list[JobRequest]] = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job)
    default = cluster.default.name if cluster is not None and cluster.default is not None else None
    lines = []
    for rule, group in by_rule.items():
        partitions = sorted({j.partition or (f"{default} (the default)" if default else "the default") for j in group})
        gpus = max(j.gpus for j in group)
        models = sorted({j.gpu_model or "any model" for j in group if j.gpus})
        parts = [f"{len(group)} job{'s' if len(group) != 1 else ''}", f"partition {', '.join(partitions)}",
                 f"{gpus} GPU ({', '.join(models)})" if gpus else "no GPU", f"{_span([j.cpus.value for j in group])} CPU{'' if max(j.cpus.value for j in group) == 1 else 's'}"]
        mems = [j.mem_mb.value for j in group if j.mem_mb is not None]
        times = [j.runtime_min.value for j in group if j.runtime_min is not None]
        parts.append(f"{_span(mems)} MB" if mems else "memory: the cluster's default")
        parts.append(f"{_span(times)} min" if times else "time: the partition's default")
        lines.append(f"{rule}: " + ", ".join(parts))
    return lines


_FIX_RESOURCES = re.compile(r"--set-resources((?: [\w.-]+:\w+=[^\s;,()]+)+)")
_FIX_THREADS = re.compile(r"--set-threads ([\w.-]+)=(\d+)")


def _pasteable(value: str) -> str:
    """A profile value as a command-line value: ``'gpuq'`` -> ``gpuq`` (Snakemake keeps a word
    it cannot evaluate as a string), expressions as they are."""
    m = re.fullmatch(r"(['\"])([A-Za-z_][\w.,:-]*)\1", value.strip())
    return m.group(2) if m else value


def paste_advice(messages: Iterable[str], set_resources: dict[str, dict[str, str]] | None = None,
                 set_threads: dict[str, str] | None = None) -> list[str]:
    """The ``--set-resources``/``--set-threads`` fixes named in ``messages``, merged into the lists
    they replace (``set_resources``/``set_threads``: the profile's or the command line's), as
    lines to paste after ``snakemake``: one line per rule with every resource it sets. Empty when
    no message names such a fix. A list given on the command line replaces the profile's whole
    list, so a fix alone would drop the partition, the GPU model and preprocessing's memory."""
    resources: dict[str, dict[str, str]] = {r: dict(v) for r, v in (set_resources or {}).items()}
    threads = dict(set_threads or {})
    fixed_resources = fixed_threads = False
    for message in messages:
        for found in _FIX_RESOURCES.finditer(message):
            for item in found.group(1).split():
                rule, assign = item.split(":", 1)
                key, value = assign.split("=", 1)
                resources.setdefault(rule, {})[key] = value
                fixed_resources = True
        for rule, value in _FIX_THREADS.findall(message):
            threads[rule] = value
            fixed_threads = True
    if not (fixed_resources or fixed_threads):
        return []
    lines = ["paste after `snakemake --profile slurm` (each list replaces the profile's whole list,"
             " so every entry of it is repeated here):"]
    blocks = []
    if fixed_threads and threads:
        blocks.append(("--set-threads", [[f"{rule}={value}" for rule, value in threads.items()]]))
    if fixed_resources:
        blocks.append(("--set-resources", [[f"{rule}:{key}={_pasteable(value)}" for key, value in res.items()]
                                           for rule, res in resources.items() if res]))
    for b, (option, rows) in enumerate(blocks):
        lines.append(f"    {option} \\")
        for i, row in enumerate(rows):
            last = b == len(blocks) - 1 and i == len(rows) - 1
            lines.append("        " + " ".join(shlex.quote(item) for item in row) + ("" if last else " \\"))
    return lines


def capped_threads(config: dict, cores: int | None, *, slurm: bool = False) -> list[str]:
    """A line for each config setting of threads that Snakemake's ``--cores`` lowers (it caps
    every job's ``threads`` at ``--cores``; ``--cores all`` is the CPUs of the machine Snakemake
    runs on, a cluster's login node), so that the change is said, not silent."""
    if not cores:
        return []
    lines = []
    for setting, keys, rules in (("training.threads", ("training", "threads"), "train_run and evaluate_run"),
                                 ("preprocess.workers", ("preprocess", "workers"), "preprocess_task")):
        value: Any = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > cores:
            where = (" and asks SLURM for" if slurm else "")
            lines.append(f"note: --cores {cores} lowers {setting} {value} to {cores}: every {rules} job runs with"
                         f"{where} {cores} thread{'s' if cores != 1 else ''}"
                         + (" (with --profile slurm leave --cores out: the profile sets 1024)" if slurm else ""))
    return lines


def _raw(value: Any) -> str:
    """A resource of Snakemake's settings (a ``Resource`` with the text it was given, or a plain
    value) as the expression text a command line would carry."""
    raw = getattr(value, "raw", value)
    return raw if isinstance(raw, str) else str(raw)


def preflight_snakemake_jobs(jobs: Iterable[Any], cluster: Cluster | None = None, *,
                             set_resources: Any = None, set_threads: Any = None) -> str:
    """Check the jobs Snakemake is about to submit (from a Snakefile ``onstart:`` hook:
    ``workflow.dag.needrun_jobs()``; each has ``rule.name``, ``wildcards_dict``, ``threads``,
    ``resources``, ``attempt``, ``is_local``, ``group``), with the resources Snakemake itself
    resolved; the jobs of a group are checked as one sbatch job too (:func:`group_request`).
    Returns one line per rule (what its jobs ask) and a summary line; raises ``InputError`` with
    one line per rule that cannot be scheduled and the fixes to paste. ``cluster``: default, ask it
    (``sinfo``, ``scontrol``). ``set_resources``/``set_threads``: Snakemake's
    ``workflow.resource_settings.overwrite_resources``/``overwrite_threads`` (the lists a pasted
    fix replaces)."""
    requests = []
    for job in jobs:
        if getattr(job, "is_local", False):
            continue
        resources = {k: Value(v, "snakemake") for k, v in dict(job.resources.items()).items()}
        label = "/".join(str(v) for v in dict(job.wildcards_dict).values()) or job.rule.name
        requests.append(to_request(job.rule.name, label, int(getattr(job, "attempt", 1) or 1),
                                   Value(int(job.threads), "snakemake"), resources,
                                   group=getattr(job, "group", None)))
    cluster = read_cluster() if cluster is None else cluster
    problems = check(requests, cluster)
    summaries = [f"  {line}" for line in rule_summaries(requests, cluster)]
    if problems:
        resources = {str(r): {str(k): _raw(v) for k, v in dict(res).items()} for r, res in dict(set_resources or {}).items()}
        threads = {str(r): _raw(v) for r, v in dict(set_threads or {}).items()}
        lines = [f"cannot run: {p.message}" for p in problems]
        lines += paste_advice([p.message for p in problems], resources, threads)
        lines += summaries
        lines.append(f"preflight: {len(problems)} rule(s) can never be scheduled: nothing was submitted"
                     f" ({_summary(cluster)})")
        raise InputError("\n".join(lines))
    return "\n".join(summaries + [f"preflight: all {len(requests)} cluster jobs fit ({_summary(cluster)})"])


def merge(base: dict, extra: dict) -> dict:
    """Merge config mappings key by key, as Snakemake merges --configfile files."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(paths: list[Path]) -> dict:
    config: dict = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise InputError(f"--config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InputError(f"--config {path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"--config {path}: expected a mapping of settings")
        config = merge(config, data)
    return config


def validate_config(config: dict, schema: Path) -> dict:
    """Check ``config`` against the pipeline's schema and fill its defaults, as the Snakefile does."""
    from snakemake.utils import validate

    try:
        validate(config, str(schema), set_default=True)
    except Exception as exc:  # Snakemake's WorkflowError: one message naming the setting
        first = str(exc).strip().splitlines()
        raise InputError(f"config does not match {schema}: {first[0] if first else exc}") from None
    return config


def _summary(cluster: Cluster) -> str:
    parts = []
    for p in cluster.partitions.values():
        cpus = max((n.cpus for n in p.nodes), default=0)
        mem = max((n.mem_mb for n in p.nodes), default=0)
        gpus = max((n.gpu_count() for n in p.nodes), default=0)
        star = "*" if p.default else ""
        parts.append(f"{p.name}{star}: {len(p.nodes)} nodes, <= {cpus} CPUs, {mem} MB, {gpus} GPUs, "
                     f"MaxTime {format_minutes(p.max_time_min)}")
    return "; ".join(parts)


def preflight(config: dict, profile: Profile, cluster: Cluster, *, cores: int | None = None,
              runs: list[Any] | None = None) -> tuple[list[Problem], list[Problem], int]:
    """(problems at the first attempt, warnings for the retries, number of jobs checked)."""
    if runs is None:
        from medvisionllama.experiments import all_runs

        runs = all_runs(config)
    first = cluster_jobs(config, runs, profile, 1, cores=cores)
    problems = check(first, cluster)
    failing = {p.rule for p in problems}
    warnings: list[Problem] = []
    for attempt in range(2, profile.retries + 2):
        retry = [j for j in cluster_jobs(config, runs, profile, attempt, cores=cores) if j.rule not in failing]
        for warning in check(retry, cluster):
            if warning.rule not in {w.rule for w in warnings}:
                warnings.append(warning)
    return problems, warnings, len(first)


def _read_recorded(sinfo: Path, partitions: Path) -> Cluster:
    text = sinfo.read_text()
    if text.lstrip().startswith("{"):
        nodes, default = parse_sinfo_json(text), None
    else:
        nodes, default = parse_sinfo_text(text)
    return build_cluster(nodes, parse_partitions(partitions.read_text()), default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl preflight", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", type=Path, default=None,
                        help="pipeline config YAML; repeat to layer files like --configfile (default: config.yaml)")
    parser.add_argument("--schema", type=Path, default=Path("workflow/schemas/config.schema.yaml"),
                        help="the config's JSON schema; fills defaults (skipped when the file does not exist)")
    parser.add_argument("--profile", default=None,
                        help="Snakemake profile folder or name (e.g. slurm); its YTE templates read MVL_SLURM_*")
    parser.add_argument("--set-threads", nargs="+", metavar="RULE=N", help="as snakemake --set-threads")
    parser.add_argument("--set-resources", nargs="+", metavar="RULE:NAME=VALUE", help="as snakemake --set-resources")
    parser.add_argument("--default-resources", nargs="+", metavar="NAME=VALUE",
                        help="as snakemake --default-resources")
    parser.add_argument("--cores", type=int, default=None, help="as snakemake --cores: caps every job's threads")
    parser.add_argument("--sinfo", type=Path, help="recorded `sinfo --json` or `sinfo -h -N -o '%%N|%%c|%%m|%%G|%%P|%%T'`"
                        " output, instead of asking the cluster (with --partitions)")
    parser.add_argument("--partitions", type=Path, help="recorded `scontrol show partition -o` output")
    args = parser.parse_args(argv)
    return run_preflight(
        config_files=args.config or [Path("config.yaml")], schema=args.schema, profile=args.profile,
        set_threads=args.set_threads, set_resources=args.set_resources,
        default_resources=args.default_resources, cores=args.cores, sinfo=args.sinfo, partitions=args.partitions,
    )


def run_preflight(*, config_files: list[Path], schema: Path | None = None, profile: str | None = None,
                  set_threads: list[str] | None = None, set_resources: list[str] | None = None,
                  default_resources: list[str] | None = None, cores: int | None = None,
                  sinfo: Path | None = None, partitions: Path | None = None) -> int:
    """Print one line per rule that cannot be scheduled (and retry warnings), then a summary;
    return 2 when a rule cannot be scheduled, else 0. ``sinfo``/``partitions``: recorded outputs
    to read instead of asking the cluster."""
    config = load_config(config_files)
    if schema is not None and schema.is_file():
        config = validate_config(config, schema)
    options = load_profile(profile) if profile else Profile()
    options = options.override(set_threads=set_threads, set_resources=set_resources,
                               default_resources=default_resources)
    if (sinfo is None) != (partitions is None):
        raise InputError("--sinfo and --partitions go together")
    cluster = _read_recorded(sinfo, partitions) if sinfo and partitions else read_cluster()
    problems, warnings, count = preflight(config, options, cluster, cores=cores)
    for problem in problems:
        print(f"cannot run: {problem.message}")
    for line in paste_advice([p.message for p in problems], options.set_resources, options.set_threads):
        print(line)
    for warning in warnings:
        print(f"warning: {warning.message}")
    from medvisionllama.experiments import all_runs

    for line in rule_summaries(cluster_jobs(config, all_runs(config), options, 1, cores=cores), cluster):
        print(f"  {line}")
    if problems:
        print(f"preflight: {len(problems)} rule(s) can never be scheduled: fix them before submitting"
              f" ({_summary(cluster)})")
        return 2
    print(f"preflight: all {count} cluster jobs fit ({_summary(cluster)})")
    return 0
