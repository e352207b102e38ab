"""One measurement per fresh Python process, so peak memory (``ru_maxrss``) is that measurement's.

Used by the benchmark scripts beside this file: the script re-runs itself with ``--child ARGS``;
the child prints one JSON line (its last line of output), which :func:`measure_in_child` returns.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def measure_in_child(script: str, args: list[str]) -> dict:
    """Run ``python script --child *args`` and return the JSON of its last output line."""
    done = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
