"""``mvl lineage``: record the data lineage with DVC.

Two steps, each run once per pipeline run by Snakemake (or by hand):

``mvl lineage track --path data``
    ``dvc add`` of the raw task folders: writes ``data.dvc`` (the raw data's hash) and fills the
    DVC cache, so a team can ``dvc push`` / ``dvc pull`` the raw data.
``mvl lineage commit --params JSON``
    writes ``params.yaml`` (the validated settings of the data stages, which ``dvc.yaml``
    interpolates) and ``dvc commit``\\s the stages of ``dvc.yaml`` whose outputs Snakemake just
    made, so ``dvc status`` reports them up to date and ``dvc repro`` reproduces them.

DVC takes a repository-wide lock; two DVC commands at once fail with "Unable to acquire lock".
Snakemake runs both steps as local jobs, one after the other; a lock held by a user's own ``dvc``
command is waited for (retries with backoff) rather than failed on at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from medvisionllama.errors import InputError
from medvisionllama.io_utils import write_text_atomic

log = logging.getLogger(__name__)

#: the sections of the config that the data stages read; params.yaml holds exactly these
PARAM_SECTIONS = ("results_dir", "data", "split", "preprocess")
LOCK_MESSAGE = "Unable to acquire lock"


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
        output = (proc.stderr or proc.stdout).strip()
        if "not inside of a DVC repository" in output or "you are not inside" in output.lower():
            raise InputError(f"{Path.cwd()}: not a DVC repository (run `dvc init`, or set lineage.dvc: false)")
        raise RuntimeError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{output}")
    raise AssertionError("unreachable")


def track_raw_data(path: Path) -> Path:
    """``dvc add`` the raw data folder; returns the ``.dvc`` file written beside it."""
    if not path.is_dir():
        raise InputError(f"{path}: raw data folder not found")
    _dvc(["add", "--quiet", str(path)])
    return path.with_name(path.name + ".dvc")


def write_params(params: dict[str, Any], params_file: Path = Path("params.yaml")) -> Path:
    """Write the data stages' sections of ``params`` (a validated config) to ``params_file``."""
    missing = [k for k in PARAM_SECTIONS if k not in params]
    if missing:
        raise InputError(f"lineage parameters lack the sections {missing}")
    header = (
        "# Written by `mvl lineage commit` from the validated Snakemake config: the settings the\n"
        "# data stages last ran with. dvc.yaml reads them. Edit config.yaml, not this file.\n"
    )
    body = yaml.safe_dump({k: params[k] for k in PARAM_SECTIONS}, sort_keys=True, default_flow_style=False)
    write_text_atomic(params_file, header + body)
    return params_file


def commit_stages(params: dict[str, Any], params_file: Path = Path("params.yaml")) -> Path:
    """Write ``params_file`` from ``params`` and ``dvc commit`` every stage of ``dvc.yaml``."""
    write_params(params, params_file)
    _dvc(["commit", "--force", "--quiet"])
    return Path("dvc.lock")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl lineage", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    track = sub.add_parser("track", help="dvc add the raw data folder")
    track.add_argument("--path", type=Path, default=Path("data"))
    commit = sub.add_parser("commit", help="write params.yaml and dvc commit the data stages")
    commit.add_argument("--params", required=True, help="JSON object with the sections " + ", ".join(PARAM_SECTIONS))
    commit.add_argument("--params-file", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.action == "track":
        print(track_raw_data(path=args.path))
    else:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise InputError(f"--params is not valid JSON: {exc}") from None
        print(commit_stages(params=params, params_file=args.params_file))
    return 0
