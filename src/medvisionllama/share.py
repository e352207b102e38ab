"""``mvl share`` and ``mvl regenerate``: results for reviewers, without data, training or a GPU.

``mvl share`` (run in the repository root after the pipeline) copies exactly what the tables,
figures and report need out of ``results_dir`` into one folder, ``shared-results/`` (replaced as a
whole, atomically), then ``dvc add``s that folder (``shared-results.dvc``, to commit) and
``dvc push``es it. The folder holds, relative to ``results_dir``:

* ``config.yaml`` and ``config/*.yaml`` (the resolved config), ``long.csv``, ``plots/curves.csv``,
  ``metrics.json`` and the original ``tables/`` (so a reviewer can check the regenerated ones);
* per run of the config's experiments, ``runs/{run}/``: ``run.json``, ``history.csv``,
  ``metrics.csv``, ``samples.npz``, ``summary.json`` (when the run has one) and
  ``predictions/*.nii.gz``;
* ``SHARE.json``: the package version, ``results_dir`` and every file's sha256.

Never checkpoints, raw data or preprocessed arrays. The folder lies outside ``results/`` because
DVC refuses an output that overlaps another (``results/`` holds the outputs of dvc.yaml's data
stages) and because a ``.dvc`` file inside the git-ignored ``results/`` could not be committed.
Raw data is shared only with ``--with-data`` (``dvc push data.dvc``).

It also writes the committed summary folder ``shared-summary/``: ``metrics/{experiment}/{group}.json``
(the headline metrics, :func:`medvisionllama.paper.metrics_json.headline_metrics`, which
``dvc metrics show``/``diff`` read) and ``config.yaml`` (the resolved config, a ``params`` file of
dvc.yaml, so ``dvc params diff`` shows any changed setting). Git holds them, so every commit has
them without a ``dvc pull``.

``mvl share --archive results.tar.gz`` writes the folder as a tarball plus
``results.tar.gz.sha256`` (``sha256sum`` format) instead of pushing, for a reviewer without DVC.

``mvl regenerate`` (a reviewer, after ``dvc pull shared-results.dvc``, or with ``--archive``:
checksum verified, safe extraction shared with the task download) verifies every file against
``SHARE.json``, restores the shared files into ``results_dir`` (predictions stay in the shared
folder), writes the tables, ``metrics.json`` and figures by calling the package's functions
directly (no Snakemake DAG: it would want raw data and training), reports which regenerated
tables differ from the originals, and builds the report with ``snakemake --report`` (which reads
existing outputs; upstream inputs may be missing).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from medvisionllama import __version__
from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_dir, atomic_path, read_json, write_json_atomic, write_text_atomic

SHARE_DIR = Path("shared-results")
SUMMARY_DIR = Path("shared-summary")
MANIFEST = "SHARE.json"
FORMAT = 1
#: files every run must have (what `mvl aggregate` reads) and those shared when present
RUN_FILES_REQUIRED = ("run.json", "history.csv", "metrics.csv")
RUN_FILES_OPTIONAL = ("samples.npz", "summary.json")
#: files of results_dir itself: required, then optional
TOP_REQUIRED = ("config.yaml", "long.csv", "plots/curves.csv")
TOP_OPTIONAL = ("metrics.json",)
TOP_FOLDERS = ("config", "tables")  #: shared as they are (flat folders)
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------- share
def shareable_files(results: Path) -> list[str]:
    """Paths (relative to ``results``, POSIX, sorted) of what is shared; see the module docstring.

    The runs are those the resolved ``results/config.yaml``'s experiments need; a missing required
    file raises :class:`InputError` naming it.
    """
    from medvisionllama.experiments import all_runs, load_config

    results = Path(results)
    for name in TOP_REQUIRED:
        if not (results / name).is_file():
            raise InputError(f"{results / name}: missing; run the pipeline before `mvl share`")
    files = list(TOP_REQUIRED) + [n for n in TOP_OPTIONAL if (results / n).is_file()]
    for folder in TOP_FOLDERS:
        if (results / folder).is_dir():
            files += [f"{folder}/{p.name}" for p in sorted((results / folder).iterdir())
                      if p.is_file() and not p.name.startswith(".")]
    for run in all_runs(load_config(results / "config.yaml")):
        run_dir = f"runs/{run.path()}"
        for name in RUN_FILES_REQUIRED:
            if not (results / run_dir / name).is_file():
                raise InputError(f"{results / run_dir / name}: missing; is the run trained and evaluated?")
        files += [f"{run_dir}/{n}" for n in RUN_FILES_REQUIRED + RUN_FILES_OPTIONAL if (results / run_dir / n).is_file()]
        predictions = results / run_dir / "predictions"
        if predictions.is_dir():
            files += [f"{run_dir}/predictions/{p.name}" for p in sorted(predictions.glob("*.nii.gz"))]
    return sorted(files)


def collect(results: Path, out: Path) -> dict:
    """Copy :func:`shareable_files` of ``results`` into ``out`` (replaced atomically) with the
    manifest ``SHARE.json``; returns the manifest."""
    results, out = Path(results), Path(out)
    files = shareable_files(results)
    config = _load_yaml(results / "config.yaml")
    manifest = {"format": FORMAT, "version": __version__, "results_dir": str(config.get("results_dir", results)),
                "files": {}}
    with atomic_dir(out) as tmp:
        for rel in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / rel, target)
            manifest["files"][rel] = sha256_file(target)
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def write_summary(shared: Path, summary: Path) -> list[Path]:
    """The committed summary of the shared results (replaced atomically): ``metrics/{experiment}/
    {group}.json`` (headline metrics for ``dvc metrics``) and ``config.yaml`` (for ``dvc params``)."""
    from medvisionllama.experiments import load_experiments
    from medvisionllama.paper.aggregate import read_long
    from medvisionllama.paper.metrics_json import headline_metrics
    from medvisionllama.paper.summary import score_experiment

    shared, summary = Path(shared), Path(summary)
    long = read_long(shared / "long.csv")
    scored = [score_experiment(long, spec) for spec in load_experiments(shared / "config.yaml", None)]
    written = []
    with atomic_dir(summary) as tmp:
        for rel, values in headline_metrics(scored).items():
            write_json_atomic(tmp / "metrics" / rel, values)
            written.append(summary / "metrics" / rel)
        shutil.copyfile(shared / "config.yaml", tmp / "config.yaml")
        written.append(summary / "config.yaml")
    return written


def write_archive(shared: Path, archive: Path) -> str:
    """``archive`` (gzipped tar of ``shared``, members under ``shared-results/``, sorted, owner and
    times zeroed) and ``{archive}.sha256``; returns the digest."""
    shared, archive = Path(shared), Path(archive)
    check_archive_name(archive)

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with atomic_path(archive, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(shared, arcname=SHARE_DIR.name, recursive=False, filter=clean)
            for path in sorted(shared.rglob("*")):
                tar.add(path, arcname=f"{SHARE_DIR.name}/{path.relative_to(shared).as_posix()}", recursive=False,
                        filter=clean)
    digest = sha256_file(archive)
    write_text_atomic(checksum_path(archive), f"{digest}  {archive.name}\n")
    return digest


def check_archive_name(archive: Path) -> None:
    if not Path(archive).name.endswith((".tar.gz", ".tgz")):
        raise InputError(f"{archive}: the archive's name must end in .tar.gz or .tgz")


def checksum_path(archive: Path) -> Path:
    return Path(archive).with_name(Path(archive).name + ".sha256")


def dvc(args: list[str], cwd: Path) -> str:
    """Run ``dvc <args>`` in ``cwd``; a failure is an :class:`InputError` with DVC's own error."""
    try:
        done = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise InputError("dvc: command not found (install the project's environment)") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        first = next((i for i, ln in enumerate(lines) if ln.startswith("ERROR")), max(len(lines) - 1, 0))
        message = " ".join(lines[first:first + 3]) or "no output"  # DVC wraps its error over lines
        raise InputError(f"`dvc {' '.join(args)}` failed: {message}")
    return done.stdout


@dataclass
class ShareResult:
    shared: Path
    files: int
    summary: list[Path] = field(default_factory=list)
    dvc_file: Path | None = None
    archive: Path | None = None
    sha256: str | None = None


def share(results: Path = Path("results"), out: Path = SHARE_DIR, summary: Path | None = SUMMARY_DIR,
          archive: Path | None = None, push: bool = True, remote: str | None = None,
          with_data: bool = False, repo: Path = Path(".")) -> ShareResult:
    """Collect the shareable results into ``out`` and write the committed ``summary``; then either
    write ``archive`` (and its ``.sha256``) or ``dvc add`` ``out`` and, if ``push``, ``dvc push`` it
    (with ``with_data``, also ``data.dvc``). Paths are relative to ``repo`` (the DVC root)."""
    repo = Path(repo)
    results, out = repo / results, repo / out
    if archive is not None:
        check_archive_name(Path(archive))
    manifest = collect(results, out)
    result = ShareResult(shared=out, files=len(manifest["files"]))
    if summary is not None:
        result.summary = write_summary(out, repo / summary)
    if archive is not None:
        result.archive = Path(archive)
        result.sha256 = write_archive(out, result.archive)
        return result
    rel = os.path.relpath(out, repo)
    dvc(["add", rel], repo)
    result.dvc_file = repo / f"{rel}.dvc"
    if push:
        remote_args = ["-r", remote] if remote else []
        dvc(["push", *remote_args, f"{rel}.dvc"], repo)
        if with_data:
            data_dvc = [p.name for p in sorted(repo.glob("*.dvc")) if p.name != f"{Path(rel).name}.dvc"]
            if not data_dvc:
                raise InputError(f"{repo}: no .dvc file of raw data to push (is lineage.dvc on?)")
            dvc(["push", *remote_args, *data_dvc], repo)
    return result


# ---------------------------------------------------------------------------- regenerate
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
        if "/predictions/" in rel or rel.startswith("tables/"):
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
    figures = write_figures(results / "long.csv", config, results / "figures", curves_path=results / "plots/curves.csv",
                            samples=samples)
    differing = compare_tables(results / "tables", shared / "tables")
    built = build_report(Path(os.path.relpath(config, repo)), report, repo) if report is not None else None
    return RegenerateResult(results, tables, figures, differing, built)


# ------------------------------------------------------------------------ offline DVC plots
VEGA_SCRIPTS = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")


def offline_html_template() -> str:
    """An HTML template for ``dvc plots show --html-template`` with vega, vega-lite and
    vega-embed inlined (from the copies Snakemake ships for its reports), so the page renders
    without a network; DVC's own page loads them from a CDN."""
    import snakemake

    assets = Path(snakemake.__file__).parent / "assets" / "data"
    scripts = []
    for rel in VEGA_SCRIPTS:
        path = assets / rel
        if not path.is_file():
            raise InputError(f"{path}: missing from the Snakemake installation; cannot render offline")
        scripts.append(f"<script>\n{path.read_text(encoding='utf-8')}\n</script>")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots (offline)</title>\n"
            + "\n".join(scripts) + "\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


def render_dvc_plots(out: Path, repo: Path = Path(".")) -> Path:
    """``dvc plots show`` into ``out`` (``index.html``) with :func:`offline_html_template`."""
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "offline.html"
        template.write_text(offline_html_template(), encoding="utf-8")
        dvc(["plots", "show", "--html-template", str(template), "-o", str(Path(out).resolve())], Path(repo))
    return Path(out) / "index.html"


# -------------------------------------------------------------------------------------- CLI
def _load_yaml(path: Path) -> dict:
    from medvisionllama.experiments import load_config

    return load_config(path)


def share_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl share", description=__doc__.split("\n\n")[1])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the pipeline's results_dir")
    parser.add_argument("--out", type=Path, default=SHARE_DIR, help="the shared folder (DVC-tracked)")
    parser.add_argument("--summary", type=Path, default=SUMMARY_DIR, help="the committed summary folder")
    parser.add_argument("--archive", type=Path, default=None,
                        help="write this .tar.gz (and its .sha256) instead of dvc add/push")
    parser.add_argument("--no-push", action="store_true", help="dvc add only, no dvc push")
    parser.add_argument("--remote", default=None, help="DVC remote to push to (default: the default remote)")
    parser.add_argument("--with-data", action="store_true", help="also push the raw data (data.dvc)")
    args = parser.parse_args(argv)
    done = share(results=args.results, out=args.out, summary=args.summary, archive=args.archive,
                 push=not args.no_push, remote=args.remote, with_data=args.with_data)
    print(f"share: {done.files} files -> {done.shared}; summary -> {args.summary}")
    if done.archive is not None:
        print(f"share: archive {done.archive} (sha256 {done.sha256}, in {checksum_path(done.archive)})")
    else:
        pushed = "pushed" if not args.no_push else "not pushed (--no-push)"
        print(f"share: {done.dvc_file} written, {pushed}; commit it with {args.summary}/: "
              f"git add {done.dvc_file} {args.summary} && git commit")
    return 0


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


main = share_main
