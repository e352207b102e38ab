"""Per-task content fingerprints: how Snakemake sees an edit inside a task folder.

Snakemake compares modification times, and a folder's time changes only when an entry is added,
removed or renamed, not when a file inside it is rewritten in place. So an annotator's fix of one
label inside ``data.dir`` (perhaps a shared, read-only folder outside the repository) would be
invisible. ``results/fingerprints/{task}.json`` lists the SHA-256 of every file of the task
folder; the workflow refreshes it each time Snakemake reads the Snakefile
(``workflow/rules/common.smk``), and the split and preprocessing rules of that task read it. The
file is rewritten **only when a hash changes**, so its modification time moves exactly when the
task's content does: one edited case reruns that task's split, preprocessing, runs and the
tables, never another task.

Hashing is cached: ``.{task}.stat.json`` beside the fingerprint keeps each file's size and
modification time (ns) with its hash, and only files whose size or time changed are read again
(as DVC does). Hidden files (``.snakemake_timestamp``, download markers) are left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medvisionllama.errors import InputError
from medvisionllama.io_utils import write_text_atomic


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _visible_files(folder: Path) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of every file below ``folder``, hidden names left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                path = Path(dirpath) / name
                found.append((path.relative_to(folder).as_posix(), path))
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def task_fingerprint(task_dir: str | Path, cache: str | Path | None = None) -> dict[str, Any]:
    """``{"task": name, "files": {relative path: sha256}}`` of ``task_dir``. ``cache`` (a JSON file,
    rewritten when it changes): hashes of earlier calls keyed by size and modification time."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise InputError(f"{task_dir}: task folder not found")
    known = (_read_json(Path(cache)) if cache else None) or {}
    stats, files = {}, {}
    for rel, path in _visible_files(task_dir):
        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        entry = known.get(rel)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [st.st_size, st.st_mtime_ns]:
            digest = entry[2]
        else:
            try:
                digest = _sha256(path)
            except OSError as exc:
                raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        stats[rel] = [st.st_size, st.st_mtime_ns, digest]
        files[rel] = digest
    if cache and stats != known:
        write_text_atomic(cache, json.dumps(stats, sort_keys=True) + "\n")
    return {"task": task_dir.name, "files": files}


def update_fingerprint(task_dir: str | Path, output: str | Path) -> bool:
    """Write ``output`` (``results/fingerprints/{task}.json``) when the content of ``task_dir``
    differs from what it lists; returns whether it was written.

    A new fingerprint gets the time of the newest file of the folder (the outputs made from that
    folder are newer, so a first fingerprint of data already processed re-runs nothing); a changed
    one the present time (an edit may keep an older time, e.g. ``cp -p`` of an earlier version).
    """
    output = Path(output)
    cache = output.with_name(f".{output.stem}.stat.json")
    text = json.dumps(task_fingerprint(task_dir, cache), indent=1, sort_keys=True) + "\n"
    existed = output.is_file()
    try:
        if existed and output.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_text_atomic(output, text)
    if not existed:
        newest = _newest_time_ns(Path(task_dir))
        os.utime(output, ns=(newest, newest))
    return True


def _newest_time_ns(folder: Path) -> int:
    """The newest time Snakemake could compare for ``folder``: its files', its own, its
    ``.snakemake_timestamp``'s (a folder made by a rule)."""
    times = [p.stat().st_mtime_ns for _, p in _visible_files(folder)] + [folder.stat().st_mtime_ns]
    stamp = folder / ".snakemake_timestamp"
    if stamp.exists():
        times.append(stamp.stat().st_mtime_ns)
    return max(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl fingerprint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-dir", required=True, type=Path, help="MSD task folder")
    parser.add_argument("--output", required=True, type=Path, help="fingerprint JSON (results/fingerprints/{task}.json)")
    args = parser.parse_args(argv)
    update_fingerprint(args.task_dir, args.output)
    return 0
