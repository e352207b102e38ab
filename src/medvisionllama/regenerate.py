"""``mvl regenerate``: every table, figure and the report from shared results (no raw data, no
training, no GPU); the other half of ``mvl share`` (:mod:`medvisionllama.share`, which describes
the shared folder).

From ``shared-results/`` (after ``dvc pull shared-results.dvc``) or from an archive of ``mvl share
--archive`` (its sha256 checked against ``ARCHIVE.sha256`` or ``--sha256``, then extracted with
the task download's checks, :func:`medvisionllama.data.download.safe_members`): every file is
checked against ``SHARE.json``; the shared files except predictions and original tables are
copied into the shared ``results_dir``; the tables, ``metrics.json`` and figures are written by
calling the package's functions (not Snakemake: its DAG would want raw data and training); the
tables are compared byte for byte with the shared originals; ``snakemake --report`` builds the
report from the outputs present (it reads them; their upstream inputs may be missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_dir, atomic_path, read_json
from medvisionllama.share import DATASETS, FORMAT, MANIFEST, SHARE_DIR, checksum_path, render_dvc_plots, sha256_file


def verify_archive(archive: Path, sha256: str | None = None) -> str:
    """The archive's sha256, checked against ``sha256`` or else ``{archive}.sha256``; a mismatch
    or a missing checksum is refused in one line."""
    archive = Path(archive)
    if not archive.is_file():
        raise InputError(f"{archive}: archive not found")
    if sha256 is None:
        sums = checksum_path(archive)
        if not sums.is_file():
            raise InputError(f"{sums}: checksum file not found (or give --sha256)")
        fields = sums.read_text().split()
        if not fields:
            raise InputError(f"{sums}: empty checksum file")
        sha256 = fields[0]
    actual = sha256_file(archive)
    if actual != sha256.strip().lower():
        raise InputError(f"{archive}: sha256 {actual} does not match the expected {sha256.strip()}: "
                         "the archive is damaged or not the one shared")
    return actual


def extract_archive(archive: Path, target: Path) -> Path:
    """Extract the ``shared-results/`` folder of ``archive`` into ``target`` (atomically), with the
    task download's checks (:func:`medvisionllama.data.download.safe_members`)."""
    from medvisionllama.data.download import DownloadError, _check_not_truncated, safe_members

    try:
        with tarfile.open(archive, "r:*") as tar:
            members = safe_members(_check_not_truncated(tar, archive), SHARE_DIR.name)
            if not any(rel == MANIFEST and m.isfile() for m, rel in members):
                raise InputError(f"{archive}: holds no {SHARE_DIR.name}/{MANIFEST}; not an archive of `mvl share`")
            with atomic_dir(target) as tmp:
                for member, rel in members:
                    if rel:
                        tar.extract(member.replace(name=rel, deep=False), tmp, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"archive {archive} is corrupt or truncated: {exc}") from exc
    return Path(target)


def verify_shared(shared: Path) -> dict:
    """The manifest of ``shared``, every file checked against its sha256 (one line on the first
    missing or changed file)."""
    shared = Path(shared)
    manifest = read_json(shared / MANIFEST, missing=f"not a folder of `mvl share` (run `dvc pull {SHARE_DIR}.dvc`)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{shared / MANIFEST}: not a manifest of `mvl share` (format {FORMAT})")
    for rel, digest in manifest["files"].items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise InputError(f"{shared / MANIFEST}: lists {rel!r}, a path outside the shared folder")
        path = shared / rel
        if not path.is_file():
            raise InputError(f"{path}: listed in {MANIFEST} but missing (incomplete `dvc pull`?)")
        if sha256_file(path) != digest:
            raise InputError(f"{path}: sha256 differs from {MANIFEST}: the shared file was changed")
    return manifest


def restore(shared: Path, manifest: dict, results: Path) -> list[Path]:
    """Copy the shared files (not the predictions, not the original tables) into ``results``."""
    restored = []
    for rel in manifest["files"]:
        if "/predictions/" in rel or rel.startswith(("tables/", f"{DATASETS}/")):
            continue
        target = Path(results) / rel
        with atomic_path(target) as tmp:
            shutil.copyfile(Path(shared) / rel, tmp)
        restored.append(target)
    return restored


def compare_tables(regenerated: Path, original: Path) -> list[str]:
    """Names of the original tables that the regenerated folder lacks or holds with other bytes."""
    if not Path(original).is_dir():
        return []
    return [p.name for p in sorted(Path(original).iterdir())
            if p.is_file() and (not (Path(regenerated) / p.name).is_file()
                                or (Path(regenerated) / p.name).read_bytes() != p.read_bytes())]


def build_report(config: Path, report: Path, repo: Path) -> Path:
    """``snakemake --report`` from the outputs present (the DAG's upstream inputs may be missing)."""
    command = ["snakemake", "--report", str(report), "--configfile", str(config), "--cores", "1"]
    try:
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    except FileNotFoundError:
        raise InputError("snakemake: command not found (install the project's environment)") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        raise InputError(f"`{' '.join(command)}` failed: {lines[-1] if lines else 'no output'}")
    return Path(repo) / report


@dataclass
class RegenerateResult:
    results: Path
    tables: list[Path]
    figures: list[Path]
    differing_tables: list[str]
    report: Path | None


def regenerate(shared: Path = SHARE_DIR, archive: Path | None = None, sha256: str | None = None,
               results: Path | None = None, report: Path | None = Path("report.html"),
               repo: Path = Path(".")) -> RegenerateResult:
    """Every table, figure and the report from shared results (see the module docstring).

    ``archive``: extract it into ``shared`` first (after checking its sha256). ``results``: where
    to write (default: the shared config's ``results_dir``). ``report``: None skips the report.
    """
    from medvisionllama.paper.figures import write_figures
    from medvisionllama.paper.tables import write_tables

    repo = Path(repo)
    shared = repo / shared
    if archive is not None:
        verify_archive(Path(archive), sha256)
        extract_archive(Path(archive), shared)
    manifest = verify_shared(shared)
    results = repo / (results if results is not None else Path(manifest["results_dir"]))
    restore(shared, manifest, results)
    config = results / "config.yaml"
    tables = write_tables(results / "long.csv", config, results / "tables", metrics_json=results / "metrics.json")
    samples = sorted(str(results / rel) for rel in manifest["files"] if rel.endswith("/samples.npz"))
    datasets = sorted(str(shared / rel) for rel in manifest["files"] if rel.startswith(f"{DATASETS}/"))
    figures = write_figures(results / "long.csv", config, results / "figures", curves_path=results / "plots/curves.csv",
                            samples=samples, datasets=datasets, claims=sorted((results / "tables").glob("*_claims.csv")))
    differing = compare_tables(results / "tables", shared / "tables")
    built = build_report(Path(os.path.relpath(config, repo)), report, repo) if report is not None else None
    return RegenerateResult(results, tables, figures, differing, built)


def regenerate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl regenerate",
                                     description="every table, figure and the report from shared results")
    parser.add_argument("--shared", type=Path, default=SHARE_DIR, help="the shared folder (after dvc pull)")
    parser.add_argument("--archive", type=Path, default=None, help="a results archive of `mvl share --archive`")
    parser.add_argument("--sha256", default=None, help="the archive's expected sha256 (default: ARCHIVE.sha256)")
    parser.add_argument("--results", type=Path, default=None, help="where to write (default: the shared results_dir)")
    parser.add_argument("--report", type=Path, default=Path("report.html"), help="the Snakemake report to write")
    parser.add_argument("--no-report", action="store_true", help="skip the report (no Snakemake needed)")
    parser.add_argument("--dvc-plots", type=Path, default=None,
                        help="also render `dvc plots show` into this folder, offline (needs DVC)")
    args = parser.parse_args(argv)
    done = regenerate(shared=args.shared, archive=args.archive, sha256=args.sha256, results=args.results,
                      report=None if args.no_report else args.report)
    print(f"regenerate: {len(done.tables)} table files, {len(done.figures)} figure files -> {done.results}")
    if done.differing_tables:
        print(f"regenerate: warning: {len(done.differing_tables)} tables differ from the shared originals: "
              + ", ".join(done.differing_tables), file=sys.stderr)
    else:
        print("regenerate: every table equals the shared original")
    if done.report is not None:
        print(f"regenerate: report -> {done.report}")
    if args.dvc_plots is not None:
        print(f"regenerate: DVC plots -> {render_dvc_plots(args.dvc_plots)}")
    return 0


main = regenerate_main
