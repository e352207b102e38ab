"""``mvl lineage``: record the data lineage with DVC.

``mvl lineage --data data --config results/config/lineage.yaml`` runs once at the end of the
pipeline's data stages; it reads their settings from that part of the resolved config:

1. writes ``params.yaml``: the validated settings of the data stages, which ``dvc.yaml``
   interpolates (DVC reads this file for every command, so it comes first);
2. ``dvc add data``: writes ``data.dvc`` (the raw task folders' hash) and fills the DVC cache,
   so a team can ``dvc push`` / ``dvc pull`` the raw data;
3. ``dvc commit``: records in ``dvc.lock`` the split and preprocess stages of ``dvc.yaml`` whose
   outputs Snakemake just made, so ``dvc status`` reports them up to date and ``dvc repro``
   reproduces them.

DVC takes a repository-wide lock; two DVC commands at once fail with "Unable to acquire lock".
Snakemake runs this as one local job; a lock held by a user's own ``dvc`` command is waited for
(retries with backoff) rather than failed on at once.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from medvisionllama.errors import InputError
from medvisionllama.experiments import load_config
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
        raise RuntimeError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{output}")
    raise AssertionError("unreachable")


def write_params(params: dict[str, Any], params_file: Path = Path("params.yaml")) -> Path:
    """Write the data stages' sections of ``params`` (a validated config) to ``params_file``."""
    missing = [k for k in PARAM_SECTIONS if k not in params]
    if missing:
        raise InputError(f"lineage: the config lacks the sections {missing}")
    header = (
        "# Written by `mvl lineage` from the validated Snakemake config: the settings the data\n"
        "# stages last ran with. dvc.yaml reads them. Edit config.yaml, not this file.\n"
    )
    body = yaml.safe_dump({k: params[k] for k in PARAM_SECTIONS}, sort_keys=True, default_flow_style=False)
    write_text_atomic(params_file, header + body)
    return params_file


def record_lineage(data: Path, params: dict[str, Any], params_file: Path = Path("params.yaml")) -> list[Path]:
    """Write ``params_file``, ``dvc add`` the raw data folder, ``dvc commit`` the data stages.

    Returns the files written: ``params_file``, ``<data>.dvc`` and ``dvc.lock``.
    """
    if not data.is_dir():
        raise InputError(f"{data}: raw data folder not found")
    here = Path.cwd().resolve()
    if not any((folder / ".dvc").is_dir() for folder in (here, *here.parents)):
        raise InputError(f"{here}: not inside a DVC repository (run `dvc init`, or set lineage.dvc: false)")
    write_params(params, params_file)
    _dvc(["add", str(data)])
    _dvc(["commit", "--force"])
    return [params_file, data.with_name(data.name + ".dvc"), Path("dvc.lock")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl lineage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="raw data folder to track (dvc add)")
    parser.add_argument("--config", required=True, type=Path,
                        help="the resolved pipeline config (results/config.yaml): its sections " + ", ".join(PARAM_SECTIONS))
    parser.add_argument("--params-file", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    params = load_config(args.config)
    for path in record_lineage(data=args.data, params=params, params_file=args.params_file):
        print(path)
    return 0
