"""``mvl share``: results for reviewers, who regenerate everything without data, training or a GPU.

``mvl share`` (run in the repository root after the pipeline) copies exactly what the tables,
figures and report need out of ``results_dir`` into one folder, ``shared-results/`` (replaced as a
whole, atomically), then ``dvc add``s that folder (``shared-results.dvc``, to commit) and
``dvc push``es it. The folder holds, relative to ``results_dir``:

* ``config.yaml`` and ``config/*.yaml`` (the resolved config), ``long.csv``, ``plots/curves.csv``,
  ``metrics.json`` and the original ``tables/`` (so a reviewer can check the regenerated ones);
* per run of the config's experiments, ``runs/{run}/``: ``run.json``, ``history.csv``,
  ``metrics.csv``, ``samples.npz``, ``summary.json`` (when the run has one) and
  ``predictions/*.nii.gz``;
* ``datasets/{task}/dataset.json`` of every task (the class names the segmentation figures print;
  metadata only, no image);
* ``SHARE.json``: the package version and every file's sha256 (no path: the layout is fixed,
  :data:`SHARED_LAYOUT`, and ``mvl regenerate`` takes no path from the manifest).

Never checkpoints, raw data or preprocessed arrays. The folder lies outside ``results/`` because
DVC refuses an output that overlaps another (``results/`` holds the outputs of dvc.yaml's data
stages) and because a ``.dvc`` file inside the git-ignored ``results/`` could not be committed.
Raw data is shared only with ``--with-data`` (``dvc push data.dvc``).

It also writes the committed summary folder ``shared-summary/``: ``metrics/{experiment}/{group}.json``
(the headline metrics, :func:`medvisionllama.paper.metrics_json.headline_metrics`, which
``dvc metrics show``/``diff`` read), ``config.yaml`` (the resolved config, a ``params`` file of
dvc.yaml, so ``dvc params diff`` shows any changed setting) and ``plots/curves.csv`` (what
``dvc plots`` draw). Git holds them, so every commit has them without a ``dvc pull``. The
pipeline's last rule writes the same summary from ``results_dir`` (``mvl share --summary-only``),
so the DVC views work right after a run.

``mvl share --archive results.tar.gz`` writes the folder as a byte-reproducible tarball plus
``results.tar.gz.sha256`` (``sha256sum`` format) instead of pushing, for a reviewer without DVC.
A push needs a DVC remote in the committed ``.dvc/config`` (:func:`dvc_remote`). A refused or
failed share leaves the previous ``shared-results/`` and ``shared-summary/`` as they were.

A reviewer rebuilds every table, figure and the report from the folder or the archive with
``mvl regenerate`` (:mod:`medvisionllama.regenerate`). ``make plots`` renders ``dvc plots show``
offline (:func:`render_dvc_plots`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medvisionllama import __version__
from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_dir, atomic_path, read_csv, write_json_atomic, write_text_atomic

SHARE_DIR = Path("shared-results")
SUMMARY_DIR = Path("shared-summary")
MANIFEST = "SHARE.json"
FORMAT = 1
#: files every run must have (what `mvl aggregate` reads) and those shared when present
RUN_FILES_REQUIRED = ("run.json", "history.csv", "metrics.csv")
#: where each task's dataset.json (class names for the figures; no images) goes in the shared folder
DATASETS = "datasets"
RUN_FILES_OPTIONAL = ("samples.npz", "summary.json")
#: files of results_dir itself: required, then optional
TOP_REQUIRED = ("config.yaml", "long.csv", "plots/curves.csv")
TOP_OPTIONAL = ("metrics.json",)
TOP_FOLDERS = ("config", "tables")  #: shared as they are (flat folders)
CHUNK = 1 << 20
#: the committed summary's copy of the training curves (dvc.yaml's plots read it: git holds it)
SUMMARY_CURVES = "plots/curves.csv"
#: columns of the curves the summary leaves out (timings: not results)
SUMMARY_CURVES_DROPPED = ("seconds",)

#: one path segment of the shared layout: no separator, no leading dot (so never ``.`` or ``..``)
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._@+-]*"
_RUN = rf"runs/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}/seed[0-9]+(?:-fold[0-9]+)?"
#: every path the shared folder may hold (relative, POSIX); nothing else is shared or read back
SHARED_LAYOUT = re.compile("|".join([
    *(re.escape(name) for name in TOP_REQUIRED + TOP_OPTIONAL),
    rf"config/{_SEGMENT}\.yaml",
    rf"tables/{_SEGMENT}",
    rf"{_RUN}/(?:{'|'.join(re.escape(n) for n in RUN_FILES_REQUIRED + RUN_FILES_OPTIONAL)})",
    rf"{_RUN}/predictions/{_SEGMENT}\.nii\.gz",
    rf"{DATASETS}/{_SEGMENT}/dataset\.json",
]))


def in_layout(rel: str) -> bool:
    """Whether ``rel`` (relative, POSIX) is a path of the shared layout (the module docstring):
    the one list both ``mvl share`` and ``mvl regenerate`` hold a shared path against."""
    return SHARED_LAYOUT.fullmatch(rel) is not None


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
    with atomic_dir(out) as tmp:
        return collect_into(results, tmp)


def collect_into(results: Path, folder: Path) -> dict:
    """Copy :func:`shareable_files` of ``results`` and each task's ``dataset.json`` into the empty
    ``folder`` with the manifest ``SHARE.json`` (``format``, ``version``, ``files``: relative path
    -> sha256; no path of the author's: the reviewer's side takes none from it); returns it."""
    results, folder = Path(results), Path(folder)
    files = shareable_files(results)
    config = _load_yaml(results / "config.yaml")
    manifest = {"format": FORMAT, "version": __version__, "files": {}}
    sources = {rel: results / rel for rel in files}
    data_dir = Path((config.get("data") or {}).get("dir", "data"))
    for task in (config.get("data") or {}).get("tasks", []):  # class names for the figures, no images
        dataset = data_dir / task / "dataset.json"
        if not dataset.is_file():
            raise InputError(f"{dataset}: missing; the segmentation figures need each task's class names")
        sources[f"{DATASETS}/{task}/dataset.json"] = dataset
    for rel, source in sorted(sources.items()):
        if not in_layout(rel):  # a name `mvl regenerate` would refuse: fail here, not at the reviewer's
            raise InputError(f"{source}: {rel!r} is not a path of the shared layout (a name with other characters?)")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        manifest["files"][rel] = sha256_file(target)
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def write_summary(source: Path, summary: Path) -> list[Path]:
    """The committed summary (replaced atomically) of a results folder or a shared folder (the same
    layout: ``long.csv``, ``config.yaml``, ``plots/curves.csv``): ``metrics/{experiment}/{group}.json``
    (headline metrics, for ``dvc metrics``), ``config.yaml`` (for ``dvc params``) and
    ``plots/curves.csv`` (for ``dvc plots``: a committed file, so ``dvc plots diff`` between commits
    has data on both sides)."""
    from medvisionllama.experiments import load_experiments
    from medvisionllama.paper.aggregate import read_long
    from medvisionllama.paper.metrics_json import headline_metrics
    from medvisionllama.paper.summary import score_experiment

    source, summary = Path(source), Path(summary)
    for name in TOP_REQUIRED:
        if not (source / name).is_file():
            raise InputError(f"{source / name}: missing; run the pipeline first")
    long = read_long(source / "long.csv")
    scored = [score_experiment(long, spec) for spec in load_experiments(source / "config.yaml", None)]
    written = []
    with atomic_dir(summary) as tmp:
        for rel, values in headline_metrics(scored).items():
            write_json_atomic(tmp / "metrics" / rel, values)
            written.append(summary / "metrics" / rel)
        shutil.copyfile(source / "config.yaml", tmp / "config.yaml")
        (tmp / SUMMARY_CURVES).parent.mkdir(parents=True)
        curves = read_csv(source / "plots/curves.csv", "training-curves CSV of `mvl aggregate --curves`")
        # wall-clock seconds differ on every run: without them the default run's summary is the same
        # bytes each time, so it can be committed like dvc.lock and `git status` stays clean
        curves.drop(columns=[c for c in SUMMARY_CURVES_DROPPED if c in curves.columns]).to_csv(
            tmp / SUMMARY_CURVES, index=False)
        written += [summary / "config.yaml", summary / SUMMARY_CURVES]
    return written


#: mode of the archive's members (the author's umask and file modes do not travel)
FILE_MODE = 0o644


def write_archive(shared: Path, archive: Path) -> str:
    """``archive`` and ``{archive}.sha256``; returns the digest. A gzipped tar of ``shared``'s
    files, members ``shared-results/<path>``, byte-reproducible: sorted by path, regular files
    only (folders are implied), modes 0644, owners and times zeroed, and a gzip header without
    a file name or time (two archives of the same files have the same sha256)."""
    shared, archive = Path(shared), Path(archive)
    check_archive_name(archive)
    files = sorted((p.relative_to(shared).as_posix(), p) for p in shared.rglob("*") if p.is_file())
    with atomic_path(archive, suffix=".tar.gz") as tmp:
        with tmp.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, path in files:
                info = tarfile.TarInfo(f"{SHARE_DIR.name}/{rel}")
                info.size, info.mode, info.mtime = path.stat().st_size, FILE_MODE, 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
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


def dvc_remote(repo: Path, remote: str | None) -> str:
    """The DVC remote ``dvc push`` will use (``remote``, else the default); refused in one line
    when there is none, or when it is not in the project's ``.dvc/config`` (a remote of
    ``.dvc/config.local`` or the user's global config is not in a reviewer's clone, so their
    ``dvc pull`` would fail)."""
    name = remote
    if name is None:
        try:
            done = subprocess.run(["dvc", "remote", "default"], cwd=repo, capture_output=True, text=True)
        except FileNotFoundError:
            raise InputError("dvc: command not found (install the project's environment)") from None
        name = done.stdout.strip() if done.returncode == 0 else ""
    if not name:
        raise InputError("no DVC remote to push to: add one reviewers can read with `dvc remote add -d NAME URL` "
                         "(written to .dvc/config: commit it), or share with --archive or --no-push")
    project = {line.split()[0] for line in dvc(["remote", "list", "--project"], repo).splitlines() if line.strip()}
    if name not in project:
        raise InputError(f".dvc/config: has no remote {name!r} (it is set in .dvc/config.local or the global DVC "
                         f"config, which a reviewer's clone lacks): add it with `dvc remote add --project {name} URL` "
                         "and commit .dvc/config")
    return name


@dataclass
class ShareResult:
    shared: Path
    files: int
    summary: list[Path] = field(default_factory=list)
    dvc_file: Path | None = None
    archive: Path | None = None
    sha256: str | None = None
    remote: str | None = None


def share(results: Path = Path("results"), out: Path = SHARE_DIR, summary: Path | None = SUMMARY_DIR,
          archive: Path | None = None, push: bool = True, remote: str | None = None,
          with_data: bool = False, repo: Path = Path(".")) -> ShareResult:
    """Collect the shareable results into ``out`` and write the committed ``summary``; then either
    write ``archive`` (and its ``.sha256``) or ``dvc add`` ``out`` and, if ``push``, ``dvc push`` it
    (with ``with_data``, also ``data.dvc``). Paths are relative to ``repo`` (the DVC root).

    Everything that can be refused is checked before ``out`` changes: the archive's name, the DVC
    remote (:func:`dvc_remote`), the results; the new folder, the archive and the summary are made
    beside the old ones, so a refused or failed share leaves the previous ``out`` as it was."""
    repo = Path(repo)
    results, out = repo / results, repo / out
    if archive is not None:
        check_archive_name(Path(archive))
        if Path(archive).resolve().is_relative_to(out.resolve()):
            raise InputError(f"{archive}: the archive may not lie inside {out} (which is replaced)")
    elif push:
        remote = dvc_remote(repo, remote)
    with atomic_dir(out) as tmp:
        manifest = collect_into(results, tmp)
        result = ShareResult(shared=out, files=len(manifest["files"]), remote=remote)
        if archive is not None:
            result.archive = Path(archive)
            result.sha256 = write_archive(tmp, result.archive)
        if summary is not None:
            result.summary = write_summary(tmp, repo / summary)
    if archive is not None:
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
    parser.add_argument("--summary-only", action="store_true",
                        help="only write the committed summary from --results (the pipeline's last step)")
    args = parser.parse_args(argv)
    if args.summary_only:
        written = write_summary(args.results, args.summary)
        print(f"share: summary of {args.results} -> {args.summary} ({len(written)} files)")
        return 0
    done = share(results=args.results, out=args.out, summary=args.summary, archive=args.archive,
                 push=not args.no_push, remote=args.remote, with_data=args.with_data)
    print(f"share: {done.files} files -> {done.shared}; summary -> {args.summary}")
    if done.archive is not None:
        print(f"share: archive {done.archive} (sha256 {done.sha256}, in {checksum_path(done.archive)})")
        return 0
    if args.no_push:
        print(f"share: {done.dvc_file} written, not pushed (--no-push)")
        return 0
    print(f"share: {done.dvc_file} written and pushed to DVC remote {done.remote!r}. Commit what a reviewer's "
          f"`dvc pull` needs (the remote's address is in .dvc/config): "
          f"git add {done.dvc_file} {args.summary} .dvc/config && git commit")
    return 0


main = share_main
