"""``mvl lineage``: record the data lineage with DVC, wherever the data lives, without lying.

``mvl lineage --data data --config results/config/lineage.yaml`` runs once at the end of the
pipeline's data stages; it reads their settings from that part of the resolved config:

0. refuses, before writing anything, a ``params.yaml`` edited by hand to other values than the
   config's (:func:`params_file_problem`: it carries the hash of what `mvl lineage` wrote; the
   change belongs in ``config.yaml``, and rewriting the file would hide it) and a second results
   folder while another one's lineage record exists (:func:`other_results_problem`);
1. writes ``params.yaml``: the validated settings of the data stages and the (task, size) pairs
   the experiments read (:func:`lineage_params`), which ``dvc.yaml`` interpolates (DVC reads
   this file for every command, so it comes first);
2. asks ``dvc status dvc.yaml`` what changed since ``dvc.lock`` and refuses to certify what the
   pipeline did not make (:func:`check_outputs_made_by_pipeline`): an output whose hash differs
   from ``dvc.lock`` while its stage's dependencies, parameters and command did not change is
   made again in a scratch folder (:func:`remade_identically`); if the stage's command does not
   make exactly it (the pipeline's code changed: it does), it was edited by hand and is refused.
   An output older than a changed dependency is stale and refused too; an output of a stage whose
   command or parameters changed is recorded only when the current command makes it exactly;
3. the raw data folder: **inside the repository** ``dvc add DIR`` writes ``DIR.dvc`` (and fills
   the DVC cache, so a team can ``dvc push`` / ``dvc pull`` it); **outside** (a shared,
   possibly read-only folder) nothing is added or copied: the split and preprocess stages of
   ``dvc.yaml`` depend on ``{data.dir}/{task}``, an absolute path, and ``dvc.lock`` records each
   task folder's content hash, so ``dvc status`` reports when the external data changed;
4. ``dvc commit --force --no-relink dvc.yaml``: records in ``dvc.lock`` the split and preprocess
   stages whose outputs Snakemake just made (``--force`` only answers DVC's prompt; step 2 made
   the check), after removing the entries of stages ``dvc.yaml`` no longer has (another
   configuration's tasks or sizes), which ``dvc commit`` would otherwise keep
   (:func:`drop_stale_stages`).

Both ``dvc add`` and ``dvc commit`` run with ``--no-relink``: they copy into the cache and leave
the workspace's files alone. Without it DVC replaces each file output (a split's JSON) by deleting
it and moving a copy in, and Snakemake runs this job beside the training and evaluation jobs that
read those files: a job opening the split in that instant found no file (seen in CI).

Any failure raises :class:`~medvisionllama.errors.InputError` with one line (what failed, what
to do) and puts ``params.yaml``, ``dvc.lock``, ``DIR.dvc`` and the ``.gitignore`` ``dvc add``
edits back byte for byte. Only stages of ``dvc.yaml`` and ``DIR.dvc`` are touched: another
``.dvc`` file (the committed ``data.dvc`` when ``data.dir`` is elsewhere) is left alone.

DVC takes a repository-wide lock; two DVC commands at once fail with "Unable to acquire lock".
Snakemake runs this as one local job; a lock held by a user's own ``dvc`` command is waited for
(retries with backoff) rather than failed on at once.
"""

from __future__ import annotations

import argparse
import filecmp
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from medvisionllama.errors import InputError
from medvisionllama.experiments import load_config, sizes_needed
from medvisionllama.io_utils import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

#: the sections of the config that the data stages read; params.yaml holds these and PREPROCESSED
PARAM_SECTIONS = ("results_dir", "data", "split", "preprocess")
#: the key of params.yaml naming the (task, size) pairs to preprocess (derived from the experiments)
PREPROCESSED = "preprocessed"
LOCK_MESSAGE = "Unable to acquire lock"
DVC_FILE = Path("dvc.yaml")
LOCK_FILE = Path("dvc.lock")


class DvcError(RuntimeError):
    """A ``dvc`` command failed; ``summary`` is DVC's own error in one line."""

    def __init__(self, args: list[str], returncode: int, output: str) -> None:
        self.command = "dvc " + " ".join(args)
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        self.summary = " ".join((errors or lines[-1:] or [f"exit {returncode}"])[0].split())
        super().__init__(f"`{self.command}` failed (exit {returncode}):\n{output}")


def _dvc(args: list[str], *, retries: int = 8, delay: float = 1.0) -> str:
    """Run ``dvc <args>`` in the current folder, waiting out DVC's repository lock."""
    exe = shutil.which("dvc")
    command = [exe] if exe else [sys.executable, "-m", "dvc"]
    for attempt in range(retries + 1):
        proc = subprocess.run([*command, *args], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout
        if LOCK_MESSAGE in proc.stderr + proc.stdout and attempt < retries:
            wait = delay * 2**attempt
            log.warning("DVC repository is locked by another dvc process; retrying in %.0f s", wait)
            time.sleep(wait)
            continue
        raise DvcError(args, proc.returncode, (proc.stderr or proc.stdout).strip())
    raise AssertionError("unreachable")


def preprocessed_stages(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The (task, size) pairs the pipeline preprocesses, keyed as DVC names the stages.

    ``{"Task01_BrainTumour-32x32x16": {"task": "Task01_BrainTumour", "size": "32x32x16"}, ...}``:
    only the sizes the active experiments' runs read (:func:`medvisionllama.experiments.sizes_needed`).
    ``dvc.yaml``'s ``preprocess_task`` loops over this mapping (``foreach``), so its stages are
    ``preprocess_task@{task}-{size}``, one per folder Snakemake makes.
    """
    return {
        f"{task}-{size}": {"task": task, "size": size}
        for task, sizes in sizes_needed(config).items()
        for size in sizes
    }


def lineage_params(config: dict[str, Any]) -> dict[str, Any]:
    """What ``params.yaml`` holds: the sections :data:`PARAM_SECTIONS` of ``config`` and
    ``preprocessed`` (:func:`preprocessed_stages`, computed from the experiments unless ``config``
    already carries it, as the lineage part of the resolved config does)."""
    missing = [k for k in PARAM_SECTIONS if k not in config]
    if missing:
        raise InputError(f"lineage: the config lacks the sections {missing}")
    params = {k: config[k] for k in PARAM_SECTIONS}
    if isinstance(params["split"], dict):  # dvc.yaml's split stage passes it: null, the single split
        params["split"] = {**params["split"], "folds": params["split"].get("folds")}
    stages = config.get(PREPROCESSED)
    if stages is None:
        stages = preprocessed_stages(config)
    if not isinstance(stages, dict) or not all(
        isinstance(v, dict) and set(v) == {"task", "size"} and k == f"{v['task']}-{v['size']}" for k, v in stages.items()
    ):
        raise InputError(f"lineage: '{PREPROCESSED}' must map '<task>-<size>' to {{task, size}}, got {stages!r}")
    params[PREPROCESSED] = stages
    return params


#: the line of params.yaml holding the SHA-256 of the lines below it, as `mvl lineage` wrote them
CONTENT_LINE = "# content sha256: "


def _params_text(params: dict[str, Any]) -> str:
    body = yaml.safe_dump(lineage_params(params), sort_keys=True, default_flow_style=False)
    header = (
        "# Written by `mvl lineage` from the validated Snakemake config: the settings the data\n"
        "# stages last ran with. dvc.yaml reads them. Edit config.yaml, not this file.\n"
        f"{CONTENT_LINE}{hashlib.sha256(body.encode()).hexdigest()}\n"
    )
    return header + body


def write_params(params: dict[str, Any], params_file: Path = Path("params.yaml")) -> Path:
    """Write ``params_file`` from ``params`` (a validated config, or the lineage part of one): the
    data stages' sections and the (task, size) pairs to preprocess (:func:`lineage_params`), under
    a line holding the hash of that content, so a hand edit is recognised (:func:`params_file_problem`).
    The file is left untouched (its time too) when it already holds these bytes."""
    text = _params_text(params)
    if not (params_file.is_file() and params_file.read_text() == text):
        write_text_atomic(params_file, text)
    return params_file


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def params_file_problem(params: dict[str, Any], params_file: Path = Path("params.yaml")) -> str | None:
    """One line when ``params_file`` was edited by hand to other values than ``params`` (the config)
    say, else None. ``params.yaml`` is written from ``config.yaml``: rewriting it would hide the
    edit (``dvc repro`` may already have made outputs from it), so the change must go into the
    config. A file whose content still matches its hash line (written by `mvl lineage`, perhaps
    for an older config), or without one (an earlier version), is not an edit."""
    if not params_file.is_file():
        return None
    text = params_file.read_text()
    lines = text.splitlines(keepends=True)
    recorded = next((line[len(CONTENT_LINE):].strip() for line in lines if line.startswith(CONTENT_LINE)), None)
    if recorded is None:
        return None
    body = "".join(line for line in lines if not line.startswith("#"))
    if hashlib.sha256(body.encode()).hexdigest() == recorded:
        return None
    try:
        edited = _flat(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        return f"{params_file}: edited by hand and no longer valid YAML ({' '.join(str(exc).split())}); restore it (`git checkout {params_file}`)"
    wanted = _flat(lineage_params(params))
    changed = [key for key in sorted(set(edited) | set(wanted)) if edited.get(key) != wanted.get(key)]
    if not changed:
        return None
    shown = "; ".join(f"{key} is {edited.get(key)!r}, config.yaml says {wanted.get(key)!r}" for key in changed[:3])
    return (f"{params_file} was edited by hand ({shown}{' ...' if len(changed) > 3 else ''}): it is written from "
            f"config.yaml, so put the change into config.yaml and run snakemake, or restore it (`git checkout {params_file}`)")


# --------------------------------------------------------------------------- checks
def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved, symlinks followed) lies in the folder ``root``."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` or of any file below it (0 when absent)."""
    if not path.exists():
        return 0.0
    if path.is_file():
        return path.stat().st_mtime
    times = [path.stat().st_mtime]
    for folder, _, files in os.walk(path):
        times.extend(os.stat(os.path.join(folder, name)).st_mtime for name in files)
    return max(times)


def _rule_name(stage: str) -> str:
    """``preprocess_task@Task01_BrainTumour-32x32x16`` -> ``preprocess_task`` (the Snakemake rule)."""
    return stage.split("@", 1)[0]


#: command-line options of the data stages that cannot change an output (speed only)
RUNTIME_OPTIONS = re.compile(r"\s+--workers\s+('[^']*'|\S+)")


def result_command(command: str) -> str:
    """``command`` without its speed-only options (``--workers``): what decides the outputs."""
    return " ".join(RUNTIME_OPTIONS.sub("", str(command)).split())


def check_outputs_made_by_pipeline(
    status: dict[str, list[Any]],
    lock: dict[str, Any],
    params_file: Path = Path("params.yaml"),
    remake: Callable[[str, Path], bool] | None = None,
    stages: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Refuse to certify outputs the pipeline did not make.

    ``status`` is ``dvc status --json dvc.yaml``: per stage a list of ``{"changed deps": {path:
    state}}``, ``{"changed outs": {path: state}}`` and strings such as ``"changed command"``.
    ``lock`` is the parsed ``dvc.lock`` (``{}`` when there is none). ``params_file`` (just
    written from the config) counts as parameters, not as data, for the age check. ``remake``
    (stage command, output) says whether the command makes exactly that output again (see
    :func:`remade_identically`): an output that changed while its inputs did not is accepted
    when it does (the pipeline's code changed), refused otherwise. ``stages`` (stage name ->
    ``{"cmd", "outs"}`` as ``dvc.yaml`` now renders them): a stage whose command or parameters
    changed is recorded only when its current command makes its outputs exactly (so ``dvc.lock``
    never pairs a command with an output it does not make: a split made by ``dvc repro`` from a
    hand-edited ``params.yaml``, or a hand-edited split beside a hand-edited ``dvc.lock``); the age
    check looks at the outputs the stage has now (another ``results_dir`` than ``dvc.lock``'s).

    Raises:
        InputError: an output differs from ``dvc.lock`` while nothing its stage reads changed (a
            hand edit); an output is missing; an output is older than a dependency that changed
            (the pipeline did not re-run it).
    """
    locked = lock.get("stages", {}) if isinstance(lock, dict) else {}
    for stage, changes in sorted(status.items()):
        rule = _rule_name(stage)
        outs: dict[str, Any] = {}
        deps: dict[str, Any] = {}
        inputs_changed = settings_changed = False
        current = (stages or {}).get(stage)
        for change in changes:
            if isinstance(change, dict) and set(change) == {"changed outs"}:
                outs.update(change["changed outs"])
                continue
            if change == "changed command" and current and stage in locked and \
                    result_command(locked[stage].get("cmd", "")) == result_command(current["cmd"]):
                continue  # only a speed option (--workers) changed: not an input of the outputs
            inputs_changed = True
            if isinstance(change, dict):
                deps.update(change.get("changed deps", {}))
            elif change == "changed command":
                settings_changed = True
        settings_changed |= any(isinstance(state, dict) for state in deps.values())  # params.yaml keys
        if settings_changed and stage in locked and current and remake is not None:
            for path in current["outs"]:
                if Path(path).exists() and not remake(str(current["cmd"]), Path(path)):
                    raise InputError(
                        f"{path} is not what stage {stage}'s command makes now (its settings changed in "
                        f"params.yaml or dvc.lock, not through config.yaml): put the change into config.yaml and "
                        f"run snakemake, or restore the edited file"
                    )
        for path, state in sorted(outs.items()):
            if state == "deleted":
                raise InputError(
                    f"{path}: missing, though stage {stage} of dvc.yaml outputs it: "
                    f"run the pipeline (`snakemake --forcerun {rule}`) before recording the lineage"
                )
            if state == "modified" and not inputs_changed and stage in locked:
                if remake is not None and remake(str(locked[stage]["cmd"]), Path(path)):
                    log.info("%s differs from dvc.lock but `%s` makes it again: recording it", path, stage)
                    continue
                raise InputError(
                    f"{path} changed since the pipeline wrote it: re-run `snakemake --forcerun {rule}` or restore it"
                )
        changed_data = [Path(p) for p, state in deps.items() if not isinstance(state, dict) and Path(p).resolve() != params_file.resolve()]
        if not changed_data:
            continue
        newest_dep = max(changed_data, key=_newest_mtime)
        if current is not None:  # the outputs the stage has now, not another results_dir's in dvc.lock
            paths = set(current["outs"]) | set(outs)
        else:
            paths = {str(out["path"]) for out in locked.get(stage, {}).get("outs", [])} | set(outs)
        for path in sorted(Path(p) for p in paths):
            if _newest_mtime(path) < _newest_mtime(newest_dep):
                # outputs are rewritten only when their content changes: an old one may still be
                # exactly what the command makes from the new data (e.g. the split after an image edit)
                if current is not None and remake is not None and path.exists() and remake(str(current["cmd"]), path):
                    continue
                raise InputError(
                    f"{path} is older than {newest_dep}, which changed since dvc.lock: "
                    f"re-run `snakemake --forcerun {rule}` so the output matches its data"
                )


def _dvcignore_patterns(root: Path) -> list[str]:
    """The name patterns of ``root/.dvcignore`` (comments and blank lines dropped, ``dir/`` -> ``dir``)."""
    path = root / ".dvcignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _files(path: Path, ignore: list[str]) -> dict[str, Path]:
    """The files DVC hashes for ``path``: relative name -> path, names matching ``ignore`` left out."""
    if path.is_file():
        return {"": path}
    found = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if not any(fnmatch.fnmatchcase(part, pattern) for part in rel.parts for pattern in ignore):
            found[rel.as_posix()] = file
    return found


def remade_identically(command: str, output: Path, root: Path | None = None) -> bool:
    """Whether the stage ``command`` (as in ``dvc.lock``) makes ``output`` again byte for byte.

    The command runs, as ``dvc repro`` would run it, in a scratch folder under ``.dvc/tmp`` that
    links every top-level entry of the repository ``root`` except the output's top folder, so the
    real output is never touched. Both trees are compared file by file (``.dvcignore`` names left
    out). Only called for an output that changed while its inputs did not; the data stages are
    deterministic, so a difference means the file was not made by the pipeline.
    """
    root = (root or Path.cwd()).resolve()
    ignore = _dvcignore_patterns(root)
    scratch_parent = root / ".dvc" / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mvl-lineage-", dir=scratch_parent) as name:
        scratch = Path(name)
        for entry in root.iterdir():
            if entry.name not in {output.parts[0], ".dvc", ".git"}:
                (scratch / entry.name).symlink_to(entry)
        proc = subprocess.run(command, shell=True, cwd=scratch, capture_output=True, text=True)
        if proc.returncode != 0:
            log.warning("`%s` failed while checking %s: %s", command, output, proc.stderr.strip()[-500:])
            return False
        made, found = _files(scratch / output, ignore), _files(root / output, ignore)
        return made.keys() == found.keys() and all(filecmp.cmp(made[k], found[k], shallow=False) for k in made)


def _dvc_file_of(folder: Path) -> Path:
    """The ``.dvc`` file ``dvc add folder`` writes: that of a tracked folder holding it (DVC 3
    updates ``data.dvc`` for ``dvc add data/msd``), else ``folder.dvc``."""
    for candidate in (folder, *folder.parents[:-1]):  # relative path: parents end with "."
        dvc_file = candidate.with_name(candidate.name + ".dvc")
        if dvc_file.is_file():
            return dvc_file
    return folder.with_name(folder.name + ".dvc")


def drop_stale_stages(lock_file: Path, current: set[str]) -> list[str]:
    """Remove from ``lock_file`` the stages ``dvc.yaml`` no longer has (``current``: its stage
    names), so ``dvc.lock`` describes only what this configuration makes: ``dvc commit`` updates
    the stages it commits and keeps every other entry, e.g. the preprocessed sizes of an earlier
    configuration. Returns the names removed (the file is left as it is when there are none)."""
    if not lock_file.is_file():
        return []
    lock = yaml.safe_load(lock_file.read_text()) or {}
    stages = lock.get("stages") or {}
    stale = [name for name in stages if name not in current]
    if stale:
        lock["stages"] = {name: entry for name, entry in stages.items() if name in current}
        write_text_atomic(lock_file, yaml.safe_dump(lock, sort_keys=False, default_flow_style=False))
    return stale


def current_stages(dvc_file: Path = DVC_FILE) -> dict[str, dict[str, Any]]:
    """Stage name -> ``{"cmd", "outs"}`` of ``dvc_file`` as DVC renders it now (with params.yaml)."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return {
            stage.addressing.split(":", 1)[-1]: {"cmd": stage.cmd, "outs": [str(out.def_path) for out in stage.outs]}
            for stage in repo.index.stages
            if getattr(stage, "cmd", None) and Path(stage.path).resolve() == dvc_file.resolve()
        }


def other_results_problem(results: Path, params_file: Path, record_name: str) -> str | None:
    """One line when this checkout's lineage (``params_file``, dvc.lock) describes another results
    folder that still holds its own lineage record: one checkout's ``dvc.lock`` describes one results
    folder, so a second one is refused unless that record is removed (the lineage moves over)."""
    if not params_file.is_file():
        return None
    try:
        previous = (yaml.safe_load(params_file.read_text()) or {}).get("results_dir")
    except yaml.YAMLError:
        return None
    if not previous or Path(str(previous)).resolve() == results.resolve():
        return None
    record = Path(str(previous)) / record_name
    if not record.is_file():
        return None
    return (f"results_dir {results}: this checkout's dvc.lock describes {previous} ({record} certifies it); one "
            f"checkout records the lineage of one results folder: delete {record} to move the lineage to {results}, "
            "run the other configuration in its own clone, or set lineage.dvc: false for it")


# --------------------------------------------------------------------------- transaction
def _snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    """The bytes of each of ``paths`` (``None``: absent), to put back on failure."""
    return {path: path.read_bytes() if path.is_file() else None for path in paths}


def _restore(snapshot: dict[Path, bytes | None]) -> None:
    """Put every file of ``snapshot`` back as it was (atomically), removing those that were absent."""
    for path, payload in snapshot.items():
        if payload is None:
            path.unlink(missing_ok=True)
        elif not path.is_file() or path.read_bytes() != payload:
            with atomic_path(path) as tmp:
                tmp.write_bytes(payload)


def record_lineage(data: Path, params: dict[str, Any], params_file: Path = Path("params.yaml"),
                   record_name: str = "lineage.json") -> list[Path]:
    """Write ``params_file``, check the outputs, track ``data`` and ``dvc commit`` the data stages.

    Runs in the DVC repository's root (where ``dvc.yaml`` is). ``data`` is the raw data folder
    (``data.dir``): inside the repository it is ``dvc add``-ed (``<data>.dvc``); outside it is
    only hashed, as the stages' dependencies, and may be read-only.

    Returns:
        The files written: ``params_file``, ``<data>.dvc`` (data inside the repository only) and
        ``dvc.lock``.

    Raises:
        InputError: one line naming what failed and what to do; ``params_file``, ``dvc.lock``,
            ``<data>.dvc`` and its ``.gitignore`` are then exactly as before the call.
    """
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"{data}: raw data folder not found")
    here = Path.cwd().resolve()
    if not any((folder / ".dvc").is_dir() for folder in (here, *here.parents)):
        raise InputError(f"{here}: not inside a DVC repository (run `dvc init`, or set lineage.dvc: false)")
    if not DVC_FILE.is_file():
        raise InputError(f"{here / DVC_FILE}: missing (run `mvl lineage` in the project's root)")
    results = Path(str(params.get("results_dir", "results")))
    if not is_inside(results, here):
        raise InputError(
            f"results_dir {results}: outside the repository {here}, where DVC cannot track outputs; "
            "keep results_dir inside it (data.dir may be anywhere)"
        )
    for problem in (params_file_problem(params, params_file), other_results_problem(results, params_file, record_name)):
        if problem:
            raise InputError(f"{problem} (lineage not recorded; nothing written)")
    inside = is_inside(data, here)
    if inside and data.resolve() == here:
        raise InputError(f"data.dir {data}: is the repository itself; keep the raw data in a folder of it or elsewhere")
    tracked = Path(os.path.relpath(data.resolve(), here)) if inside else None
    dvc_file = _dvc_file_of(tracked) if tracked else None
    protected = [params_file, LOCK_FILE]
    if dvc_file is not None:
        protected += [dvc_file, dvc_file.parent / ".gitignore"]
    before = _snapshot(protected)
    try:
        write_params(params, params_file)
        status = json.loads(_dvc(["status", "--json", str(DVC_FILE)]) or "{}")
        lock = yaml.safe_load(LOCK_FILE.read_text()) if LOCK_FILE.is_file() else {}
        check_outputs_made_by_pipeline(status, lock or {}, params_file, remake=remade_identically,
                                       stages=current_stages() if status else None)
        if tracked is not None:
            _dvc(["add", "--no-relink", tracked.as_posix()])
        current = set(_dvc(["stage", "list", "--name-only", str(DVC_FILE)]).split())
        stale = drop_stale_stages(LOCK_FILE, current)  # dvc commit rewrites the file in its own format
        if stale:
            log.info("dvc.lock: dropped %d stages dvc.yaml no longer has: %s", len(stale), ", ".join(stale))
        _dvc(["commit", "--force", "--no-relink", str(DVC_FILE)])
    except BaseException as exc:
        _restore(before)
        kept = ", ".join(str(p) for p in protected[:3])
        if isinstance(exc, InputError):
            raise InputError(f"{exc} (lineage not recorded; {kept} unchanged)") from None
        if isinstance(exc, DvcError):
            raise InputError(
                f"`{exc.command}` failed: {exc.summary} (lineage not recorded; {kept} unchanged): "
                f"fix what DVC names, or set lineage.dvc: false"
            ) from exc
        raise
    return [params_file, *([dvc_file] if dvc_file else []), LOCK_FILE]


def write_record(record: Path, data: Path, written: list[Path]) -> Path:
    """Write ``record`` (JSON, atomically): the data folder, how it is tracked, and the md5 of each
    lineage file just written. Snakemake's ``record_lineage`` rule asks for this file, never for
    ``params.yaml`` or ``dvc.lock`` themselves: Snakemake deletes a failed job's outputs, and
    those are committed files."""
    tracked = [str(p) for p in written if p.suffix == ".dvc"]
    write_json_atomic(record, {
        "data": str(data),
        "tracked_by": tracked[0] if tracked else "dvc.lock (external dependency of the dvc.yaml stages)",
        "md5": {str(path): hashlib.md5(path.read_bytes()).hexdigest() for path in written},
    })
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl lineage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="raw data folder (dvc add when inside the repository)")
    parser.add_argument("--config", required=True, type=Path,
                        help="the lineage part of the resolved config (results/config/lineage.yaml): its sections "
                        + ", ".join(PARAM_SECTIONS) + f" and {PREPROCESSED}")
    parser.add_argument("--params-file", type=Path, default=Path("params.yaml"))
    parser.add_argument("--record", type=Path, default=None,
                        help="write this JSON file once the lineage is recorded (what was written, with md5s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    params = load_config(args.config)
    written = record_lineage(data=args.data, params=params, params_file=args.params_file,
                             record_name=args.record.name if args.record is not None else "lineage.json")
    for path in written:
        print(path)
    if args.record is not None:
        write_record(args.record, args.data, written)
    return 0
