"""The default DAG end to end, two versions side by side: each from a fresh clone of this repository
at a git ref, `snakemake --cores all` (or another config), one after the other on the same machine.

    python benchmarks/bench_default_dag.py OLD_REF NEW_REF [--configfile configs/cv-demo.yaml]

Each clone runs its own code with this checkout's `.venv` (PYTHONPATH=<clone>/src ahead of the
editable install). Printed (Markdown): wall time of the snakemake command, jobs, job time summed per
rule from Snakemake's benchmark files, and whether the two runs' results agree: every table file
(`results*/tables/*.csv`) and `long.csv` byte for byte, apart from the columns that hold times.
Run it on an otherwise idle machine; nothing here is a test.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: columns holding wall-clock times, which differ between any two runs
TIME_COLUMNS = {"train_seconds", "seconds", "time", "train time"}


def run_version(ref: str, workdir: Path, configfiles: list[str]) -> dict:
    clone = workdir / ref.replace("/", "_")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(clone / "src")}
    command = ["snakemake", "--cores", "all"] + (["--configfile", *configfiles] if configfiles else [])
    start = time.perf_counter()
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{ref}: snakemake failed:\n{done.stderr[-3000:]}")
    per_rule: dict[str, float] = collections.defaultdict(float)
    for tsv in (clone / "benchmarks" / "logs").rglob("*.tsv"):
        rows = tsv.read_text().splitlines()
        if len(rows) > 1:
            per_rule[tsv.relative_to(clone / "benchmarks" / "logs").parts[0]] += float(rows[1].split("\t")[0])
    jobs = sum(1 for line in done.stderr.splitlines() if line.startswith("Finished job"))
    return {"ref": ref, "clone": clone, "wall": wall, "jobs": jobs, "per_rule": dict(per_rule),
            "commit": subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()}


def _without_times(path: Path) -> str:
    text = path.read_text()
    if path.suffix != ".csv":
        return text
    lines = text.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    rows = list(csv.reader(io.StringIO("\n".join(line for line in lines if not line.startswith("#")))))
    if not rows:
        return text
    keep = [i for i, name in enumerate(rows[0])  # "TT": a table's training-time column
            if name.strip().lower() not in TIME_COLUMNS and not name.strip().endswith(" TT")]
    return "\n".join(comments + [",".join(row[i] for i in keep if i < len(row)) for row in rows])


def compare(a: Path, b: Path) -> list[str]:
    """Result files that differ (apart from time columns) or exist in one run only."""
    def files(root: Path) -> dict[str, Path]:
        return {str(p.relative_to(root)): p for p in root.glob("results*/**/*.csv")
                if "runs" not in p.relative_to(root).parts and "benchmarks" not in p.parts}

    fa, fb = files(a), files(b)
    out = sorted(set(fa) ^ set(fb))
    for rel in sorted(set(fa) & set(fb)):
        if _without_times(fa[rel]) != _without_times(fb[rel]):
            out.append(rel)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("refs", nargs="+", help="git refs to time, in this order")
    p.add_argument("--configfile", nargs="*", default=[], help="config files layered on config.yaml")
    p.add_argument("--keep", action="store_true", help="keep the clones (printed)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    results = [run_version(ref, workdir, args.configfile) for ref in args.refs]
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}; config: "
          f"config.yaml{''.join(' + ' + c for c in args.configfile)}\n")
    rules = sorted({r for res in results for r in res["per_rule"]})
    print("| version | wall | jobs | " + " | ".join(f"{r} (s, summed)" for r in rules) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in rules) + " |")
    for res in results:
        minutes, seconds = divmod(res["wall"], 60)
        print(f"| {res['ref']} ({res['commit']}) | {int(minutes)} min {seconds:04.1f} s | {res['jobs']} | "
              + " | ".join(f"{res['per_rule'].get(r, 0):.0f}" for r in rules) + " |")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"\nspeed-up {first['ref']} -> {last['ref']}: {first['wall'] / last['wall']:.2f}x")
        differ = compare(first["clone"], last["clone"])
        print("results (tables, long.csv) apart from time columns: " + ("identical" if not differ else
              "DIFFER: " + ", ".join(differ)))
    if args.keep:
        print(f"\nclones kept in {workdir}")
    else:
        subprocess.run(["rm", "-rf", str(workdir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
