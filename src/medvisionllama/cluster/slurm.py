"""What a SLURM cluster's partitions offer: CPUs, memory and GPUs per node, time limits.

Read from two commands any user may run on a login node:

- nodes: ``sinfo --json`` where the installed SLURM supports it (21.08 and later; its ``nodes``
  list gives ``name``, ``cpus``, ``real_memory``, ``gres``, ``partitions``, ``state``), else
  ``sinfo -h -N -o`` with the fixed format :data:`SINFO_FORMAT`
  (``%N|%c|%m|%G|%P|%T``: one line per node and partition, the default partition marked ``*``);
- partitions: ``scontrol show partition -o`` (one ``Key=Value`` line per partition: ``MaxTime``,
  ``Default``, ``MaxMemPerNode``, ``MaxCPUsPerNode``, ``State``), the same in every release.

Parsers take the commands' text, so tests feed them recorded outputs; :func:`read_cluster` runs
the commands.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable

from medvisionllama.errors import InputError

SINFO_FORMAT = "%N|%c|%m|%G|%P|%T"
#: GRES of a node without GPUs, as sinfo and scontrol print it
_NO_GRES = {"", "(null)", "n/a", "none"}


@dataclass(frozen=True)
class Node:
    """One compute node. ``gpus``: GPU type -> count (``""`` for GPUs declared without a type)."""

    name: str
    cpus: int
    mem_mb: int
    gpus: dict[str, int] = field(default_factory=dict)
    partitions: tuple[str, ...] = ()
    state: str = ""

    def gpu_count(self, model: str | None = None) -> int:
        if model:
            return sum(n for kind, n in self.gpus.items() if kind.lower() == model.lower())
        return sum(self.gpus.values())


@dataclass(frozen=True)
class Partition:
    """One partition. ``max_time_min``/``max_mem_mb``/``max_cpus``: None when unlimited."""

    name: str
    default: bool = False
    max_time_min: int | None = None
    max_mem_mb: int | None = None
    max_cpus: int | None = None
    state: str = "UP"
    nodes: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Cluster:
    partitions: dict[str, Partition]

    @property
    def default(self) -> Partition | None:
        return next((p for p in self.partitions.values() if p.default), None)


# --- values -----------------------------------------------------------------------------------
def parse_time(text: str) -> int | None:
    """A SLURM time limit in minutes (rounded up); None for ``UNLIMITED``/``INFINITE``.

    Formats: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    value = text.strip()
    if value.upper() in {"UNLIMITED", "INFINITE", "NONE", ""}:
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not m:
        raise InputError(f"cannot read the SLURM time limit {text!r}")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        seconds = int(a) * 60 + int(b)
    else:  # M
        seconds = int(a) * 60
    return -(-seconds // 60)


def format_minutes(minutes: int | None) -> str:
    if minutes is None:
        return "UNLIMITED"
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def parse_gres(text: str) -> dict[str, int]:
    """GPUs of a GRES string: ``gpu:a100:4(S:0-1),gpu:v100:2`` -> {"a100": 4, "v100": 2};
    ``gpu:2`` -> {"": 2}; other resources (``shard``, ``mps``) are ignored."""
    gpus: dict[str, int] = {}
    if text.strip().lower() in _NO_GRES:
        return gpus
    for item in re.split(r",(?![^()]*\))", text):
        item = re.sub(r"\(.*?\)", "", item.strip())
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        if len(parts) == 1:
            kind, count = "", "1"
        elif len(parts) == 2:
            kind, count = ("", parts[1]) if parts[1].isdigit() else (parts[1], "1")
        else:
            kind, count = parts[1], parts[2]
        if not count.isdigit():
            raise InputError(f"cannot read the GPU count of GRES {text!r}")
        gpus[kind] = gpus.get(kind, 0) + int(count)
    return gpus


def _memory(value: str) -> int | None:
    """``MaxMemPerNode``: MB, or None when unlimited."""
    if value.upper() in {"UNLIMITED", ""}:
        return None
    m = re.fullmatch(r"(\d+)([MGT]?)", value)
    if not m:
        raise InputError(f"cannot read the SLURM memory value {value!r}")
    return int(m.group(1)) * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]


# --- command outputs --------------------------------------------------------------------------
def parse_sinfo_json(text: str) -> list[Node]:
    """Nodes of ``sinfo --json`` (SLURM 21.08 to 24.x: a top-level ``nodes`` list)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"sinfo --json printed no JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise InputError("sinfo --json: no 'nodes' list in its output")
    nodes = []
    for raw in data["nodes"]:
        state = raw.get("state", "")
        if isinstance(state, list):  # SLURM 23.02+: a list of flags
            state = "+".join(str(s) for s in state)
        nodes.append(Node(
            name=str(raw["name"]), cpus=int(raw["cpus"]), mem_mb=int(raw["real_memory"]),
            gpus=parse_gres(str(raw.get("gres") or "")), partitions=tuple(raw.get("partitions") or ()),
            state=str(state).lower(),
        ))
    return nodes


def parse_sinfo_text(text: str) -> tuple[list[Node], str | None]:
    """Nodes of ``sinfo -h -N -o '%N|%c|%m|%G|%P|%T'`` and the default partition (marked ``*``)."""
    merged: dict[str, dict] = {}
    default = None
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 6:
            raise InputError(f"cannot read the sinfo line {line!r}: expected {SINFO_FORMAT}")
        name, cpus, mem, gres, partition, state = fields
        if partition.endswith("*"):
            partition = partition[:-1]
            default = partition
        entry = merged.setdefault(name, {"cpus": int(cpus), "mem": int(mem.rstrip("+")), "gres": gres,
                                         "partitions": [], "state": state.lower()})
        entry["partitions"].append(partition)
    nodes = [Node(name, e["cpus"], e["mem"], parse_gres(e["gres"]), tuple(e["partitions"]), e["state"])
             for name, e in merged.items()]
    return nodes, default


def parse_partitions(text: str) -> list[dict[str, str]]:
    """``scontrol show partition`` (with or without ``-o``): one ``Key=Value`` dict a partition."""
    records: list[dict[str, str]] = []
    for token in text.split():
        if "=" not in token:
            continue
        key, value = token.split("=", 1)
        if key == "PartitionName":
            records.append({})
        if records:
            records[-1][key] = value
    return records


def build_cluster(nodes: list[Node], partitions: list[dict[str, str]], default: str | None = None) -> Cluster:
    """Put the nodes into their partitions (a node may be in several)."""
    if not partitions:
        raise InputError("scontrol show partition lists no partitions")
    result = {}
    for record in partitions:
        name = record["PartitionName"]
        result[name] = Partition(
            name=name,
            default=record.get("Default", "NO").upper() == "YES" or name == default,
            max_time_min=parse_time(record.get("MaxTime", "UNLIMITED")),
            max_mem_mb=_memory(record.get("MaxMemPerNode", "UNLIMITED")),
            max_cpus=None if record.get("MaxCPUsPerNode", "UNLIMITED").upper() == "UNLIMITED"
            else int(record["MaxCPUsPerNode"]),
            state=record.get("State", "UP").upper(),
            nodes=tuple(n for n in nodes if name in n.partitions),
        )
    return Cluster(result)


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def read_cluster(run: Runner = _run) -> Cluster:
    """Ask the cluster (``sinfo``, ``scontrol``) what its partitions offer."""
    if run is _run and not (shutil.which("sinfo") and shutil.which("scontrol")):
        raise InputError("sinfo/scontrol not found: run this on a SLURM login node (or where the SLURM client is)")
    default = None
    result = run(["sinfo", "--json"])
    nodes = None
    if result.returncode == 0:
        try:
            nodes = parse_sinfo_json(result.stdout)
        except InputError:
            nodes = None
    if nodes is None:  # an older SLURM, or one built without its JSON plugin
        result = run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT])
        if result.returncode != 0:
            raise InputError(f"sinfo failed: {result.stderr.strip() or result.stdout.strip()}")
        nodes, default = parse_sinfo_text(result.stdout)
    result = run(["scontrol", "show", "partition", "-o"])
    if result.returncode != 0:
        raise InputError(f"scontrol show partition failed: {result.stderr.strip() or result.stdout.strip()}")
    return build_cluster(nodes, parse_partitions(result.stdout), default)
