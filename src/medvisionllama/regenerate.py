"""``mvl regenerate``: every table, figure and the report from shared results (no raw data, no
training, no GPU); the other half of ``mvl share`` (:mod:`medvisionllama.share`, which describes
the shared folder).

Shared results were made by someone else: they are data, never code and never a source of paths.

* **Source.** ``shared-results/`` (after ``dvc pull shared-results.dvc``), or an archive of ``mvl
  share --archive``: its sha256 is checked against ``ARCHIVE.sha256`` or ``--sha256`` (which proves
  the archive is the one announced, not who made it), then its members are checked from their
  headers before anything is written: under ``shared-results/``, regular files only (no link,
  device, absolute path or ``..``: :func:`medvisionllama.data.download.safe_members`), each a path
  of the shared layout (:func:`medvisionllama.share.in_layout`) and at most ``--max-file-mb``;
  at most ``--max-members`` members, whose sizes together fit the free space where they go.
* **Checks.** Every file ``SHARE.json`` lists must be a path of the layout, a regular file inside
  the shared folder (a symlink only into a DVC cache), within the size cap, and match its
  sha256. ``SHARE.json``'s other fields are ignored: no path is taken from it.
* **Output.** Everything goes to :data:`REVIEWER_DIR` (``results/reviewer/``), replaced as a whole
  once complete (a refused or failed regeneration leaves the previous one): the extracted archive
  (``shared-results/``), the run files the tables read, a config built from the shared one
  (validated against the workflow's schema, names checked, paths pinned inside the reviewer
  folder, lineage off), and the regenerated tables, ``metrics.json`` and figures. The pipeline's
  own runs never read this folder, so nothing shared can steer a later training.
* **Report.** ``snakemake --report`` with that built config, which points the DAG at the reviewer
  folder; the workflow's code is the reviewer's own checkout, and no shared file is ever placed
  where Snakemake reads code or config.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_dir, atomic_path, read_json, with_path, write_text_atomic
from medvisionllama.share import (DATASETS, FORMAT, MANIFEST, SHARE_DIR, checksum_path, in_layout, render_dvc_plots,
                                  sha256_file)

#: the reviewer's own folder: every output of `mvl regenerate`, never read by the pipeline's runs
REVIEWER_DIR = Path("results/reviewer")
#: the largest shared file accepted (an archive member is checked from its header, before writing)
MAX_FILE_MB = 512
#: the most members an archive may hold (the paper's grid with 5 folds shares some 30,000 files:
#: one prediction per case and run group, and five files a run); read from the headers, before writing
MAX_MEMBERS = 200_000
#: the workflow's config schema, relative to the repository root
SCHEMA = Path("workflow/schemas/config.schema.yaml")
#: a name in the built config (experiment, model, size, task, ...): one plain word, no path, no markup
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


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


def _cap(max_file_mb: float) -> int:
    return int(max_file_mb * (1 << 20))


def extract_archive(archive: Path, folder: Path, named: Path | None = None, max_file_mb: float = MAX_FILE_MB,
                    max_members: int = MAX_MEMBERS) -> Path:
    """Extract the ``shared-results/`` files of ``archive`` into the empty ``folder``.

    Every member is checked from its header before anything is written (see the module
    docstring); a refusal names the member in one line. So are the number of members (at most
    ``max_members``) and their sizes together (at most the space free in ``folder``'s file
    system: an archive of many files under the size cap must not fill the reviewer's disk). An
    ``OSError`` while writing (a full disk) names the file's final path under ``named`` (default
    ``folder``), not a temporary one.
    """
    from medvisionllama.data.download import DownloadError, _check_not_truncated, safe_members

    folder, named = Path(folder), Path(named or folder)
    cap = _cap(max_file_mb)
    try:
        with tarfile.open(archive, "r:*") as tar:
            headers, total = [], 0
            while (member := tar.next()) is not None:  # header by header: a huge size claim names its member
                if member.isfile() and member.size > cap:  # before the next header, seeking past its data, fails
                    raise InputError(f"{archive}: member {member.name!r} is {member.size} bytes, over the "
                                     f"{max_file_mb:g} MB cap on a shared file (--max-file-mb): refusing to extract")
                if len(headers) >= max_members:
                    raise InputError(f"{archive}: more than {max_members} members, over the cap on a shared archive "
                                     "(--max-members): refusing to extract")
                headers.append(member)
                total += member.size if member.isfile() else 0
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
            if total > free:
                raise InputError(f"{archive}: its files hold {total / (1 << 20):.1f} MB, more than the "
                                 f"{free / (1 << 20):.1f} MB free where they would go ({named}): refusing to extract")
            members = safe_members(_check_not_truncated(tar, archive), SHARE_DIR.name)
            for member in headers:  # mvl share writes nothing else: a member elsewhere is refused, not skipped
                parts = [p for p in PurePosixPath(member.name).parts if p != "."]
                if parts[:1] != [SHARE_DIR.name]:
                    raise InputError(f"{archive}: member {member.name!r} lies outside {SHARE_DIR.name}/: "
                                     "refusing to extract")
            files = [(m, rel) for m, rel in members if m.isfile()]
            for member, rel in files:
                if rel != MANIFEST and not in_layout(rel):
                    raise InputError(f"{archive}: member {member.name!r} is not a file of the shared layout "
                                     "(mvl share writes none such): refusing to extract")
            if not any(rel == MANIFEST for _, rel in files):
                raise InputError(f"{archive}: holds no {SHARE_DIR.name}/{MANIFEST}; not an archive of `mvl share`")
            for member, rel in files:
                target = folder / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    with source, target.open("xb") as handle:  # "x": two members of one name are refused
                        shutil.copyfileobj(source, handle, 1 << 20)
                except FileExistsError:
                    raise InputError(f"{archive}: member {member.name!r} appears twice: refusing to extract") from None
                except OSError as exc:
                    raise with_path(exc, named / rel) from exc
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"archive {archive} is corrupt or truncated: {exc}") from exc
    return folder


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _dvc_cache_link(path: Path) -> bool:
    """A symlink a DVC checkout makes (``cache.type symlink``): into a cache's ``files/md5``."""
    target = path.resolve()
    return target.is_file() and "files" in target.parts and "md5" in target.parts


def verify_shared(shared: Path, max_file_mb: float = MAX_FILE_MB) -> dict:
    """The manifest of ``shared``, every file it lists checked (one line on the first problem):
    a path of the shared layout, a regular file inside ``shared`` (a symlink only into a DVC cache),
    at most ``max_file_mb`` (a ``.npz``'s unpacked arrays too), and its sha256."""
    shared, cap = Path(shared), _cap(max_file_mb)
    if (shared / MANIFEST).is_file() and (shared / MANIFEST).stat().st_size > cap:
        raise InputError(f"{shared / MANIFEST}: over the {max_file_mb:g} MB cap on a shared file")
    manifest = read_json(shared / MANIFEST, missing=f"not a folder of `mvl share` (run `dvc pull {SHARE_DIR}.dvc`)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{shared / MANIFEST}: not a manifest of `mvl share` (format {FORMAT})")
    root = shared.resolve()
    for rel, digest in manifest["files"].items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise InputError(f"{shared / MANIFEST}: lists {rel!r}, a path outside the shared folder")
        if not in_layout(rel):
            raise InputError(f"{shared / MANIFEST}: lists {rel!r}, which is not a file of the shared layout")
        path = shared / rel
        for parent in list(reversed(path.relative_to(shared).parents))[1:]:
            if (shared / parent).is_symlink():
                raise InputError(f"{shared / parent}: a symbolic link inside the shared folder: refused")
        if path.is_symlink() and not _dvc_cache_link(path):
            raise InputError(f"{path}: a symbolic link to {os.readlink(path)!r}, not into a DVC cache: refused")
        if not path.is_symlink() and not _inside(path.resolve(), root):
            raise InputError(f"{path}: lies outside the shared folder: refused")
        if not path.is_file():
            raise InputError(f"{path}: listed in {MANIFEST} but missing (incomplete `dvc pull`?)")
        if path.stat().st_size > cap:
            raise InputError(f"{path}: {path.stat().st_size} bytes, over the {max_file_mb:g} MB cap on a shared file "
                             "(--max-file-mb)")
        if sha256_file(path) != digest:
            raise InputError(f"{path}: sha256 differs from {MANIFEST}: the shared file was changed")
        if rel.endswith(".npz"):
            _check_npz(path, cap, max_file_mb)
    return manifest


def _check_npz(path: Path, cap: int, max_file_mb: float) -> None:
    """A ``.npz`` (a zip file) whose arrays unpack to more than the cap is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: not a NumPy .npz file ({exc})") from None
    if unpacked > cap:
        raise InputError(f"{path}: unpacks to {unpacked} bytes, over the {max_file_mb:g} MB cap on a shared file")


def restore(shared: Path, manifest: dict, results: Path) -> list[Path]:
    """Copy the shared files the tables and figures read (not the predictions, the original tables,
    the datasets or the config: :func:`reviewer_config` builds that) into ``results``."""
    restored = []
    for rel in manifest["files"]:
        if "/predictions/" in rel or rel == "config.yaml" or rel.startswith(("tables/", "config/", f"{DATASETS}/")):
            continue
        target = Path(results) / rel
        with atomic_path(target) as tmp:
            shutil.copyfile(Path(shared) / rel, tmp)
        restored.append(target)
    return restored


def _check_names(value, where: str, source: Path) -> None:
    """Every key and string of ``value`` is a plain name (:data:`_NAME`); else one line naming it."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_names(key, where, source)
            _check_names(item, f"{where}.{key}" if where else str(key), source)
    elif isinstance(value, list):
        for item in value:
            _check_names(item, where, source)
    elif isinstance(value, str) and not _NAME.fullmatch(value):
        raise InputError(f"{source}: {where or 'a key'}: {value!r} is not a plain name (letters, digits, . _ @ + -)")


def reviewer_config(shared_config: Path, repo: Path = Path(".")) -> dict:
    """The config the reviewer's tables, figures and report use, built from the shared one: parsed
    as data (safe YAML), validated against the workflow's schema (defaults filled), descriptions
    dropped, every key and string a plain name, and every path pinned: ``results_dir`` is
    :data:`REVIEWER_DIR` of ``repo`` (absolute: the report runs inside it), ``data.dir`` a folder
    inside it that does not exist, no LLM weight path, lineage off."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from medvisionllama.experiments import load_config

    config = copy.deepcopy(load_config(shared_config))
    schema = Path(repo) / SCHEMA
    if not schema.is_file():
        raise InputError(f"{schema}: missing; run `mvl regenerate` in the repository root")
    try:
        validate(config, str(schema), set_default=True)
    except WorkflowError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{shared_config}: not a valid config of this workflow: {reason[:300]}") from None
    for experiment in (config.get("experiments") or {}).values():
        if isinstance(experiment, dict):
            experiment.pop("description", None)
    config.pop("results_dir")
    config["data"].pop("dir")
    config["llm_weights"] = {name: None for name in config.get("llm_weights") or {}}
    _check_names(config, "", Path(shared_config))
    reviewer = (Path(repo) / REVIEWER_DIR).resolve()
    config["results_dir"] = reviewer.as_posix()
    config["data"]["dir"] = (reviewer / "no-data").as_posix()
    config["lineage"]["dvc"] = False
    return config


def compare_tables(regenerated: Path, original: Path) -> list[str]:
    """Names of the original tables that the regenerated folder lacks or holds with other bytes."""
    if not Path(original).is_dir():
        return []
    return [p.name for p in sorted(Path(original).iterdir())
            if p.is_file() and (not (Path(regenerated) / p.name).is_file()
                                or (Path(regenerated) / p.name).read_bytes() != p.read_bytes())]


def build_report(reviewer: Path, report: Path, repo: Path) -> Path:
    """``snakemake --report`` from the outputs present (the DAG's upstream inputs may be missing),
    with the reviewer's own Snakefile run in the folder ``reviewer`` as its working directory: the
    workflow's ``configfile: "config.yaml"`` is then the built config there, alone (not merged over
    the checkout's config.yaml), no workflow profile is looked for, and Snakemake's own state goes
    to ``reviewer/.snakemake``."""
    report = Path(report).resolve()
    command = ["snakemake", "--snakefile", str((Path(repo) / "Snakefile").resolve()), "--directory",
               str(Path(reviewer).resolve()), "--workflow-profile", "none", "--report", str(report), "--cores", "1"]
    try:
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    except FileNotFoundError:
        raise InputError("snakemake: command not found (install the project's environment)") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        raise InputError(f"`snakemake --report {report}` in {reviewer} failed: {lines[-1] if lines else 'no output'}")
    return report


@dataclass
class RegenerateResult:
    results: Path
    tables: list[Path]
    figures: list[Path]
    differing_tables: list[str]
    report: Path | None


def regenerate(shared: Path = SHARE_DIR, archive: Path | None = None, sha256: str | None = None,
               report: Path | None = REVIEWER_DIR / "report.html", repo: Path = Path("."),
               max_file_mb: float = MAX_FILE_MB, max_members: int = MAX_MEMBERS) -> RegenerateResult:
    """Every table, figure and the report from shared results into :data:`REVIEWER_DIR` (see the
    module docstring). ``archive``: read it instead of ``shared`` (after checking its sha256).
    ``report``: None skips the report; paths are relative to ``repo``."""
    from medvisionllama.paper.figures import write_figures
    from medvisionllama.paper.tables import write_tables

    repo = Path(repo)
    out = repo / REVIEWER_DIR
    if archive is not None:
        verify_archive(Path(archive), sha256)
    elif _inside((repo / shared).resolve(), out.resolve()):
        raise InputError(f"{shared}: lies inside {REVIEWER_DIR}, which regenerate replaces; give the shared folder "
                         "(or --archive)")
    with atomic_dir(out) as tmp:
        if archive is not None:
            source = extract_archive(Path(archive), tmp / SHARE_DIR.name, out / SHARE_DIR.name, max_file_mb,
                                     max_members)
        else:
            source = repo / shared
        manifest = verify_shared(source, max_file_mb)
        if "config.yaml" not in manifest["files"]:
            raise InputError(f"{source / MANIFEST}: lists no config.yaml")
        restore(source, manifest, tmp)
        config = tmp / "config.yaml"
        write_text_atomic(config, yaml.safe_dump(reviewer_config(source / "config.yaml", repo), sort_keys=False))
        tables = write_tables(tmp / "long.csv", config, tmp / "tables", metrics_json=tmp / "metrics.json")
        samples = sorted(str(tmp / rel) for rel in manifest["files"] if rel.endswith("/samples.npz"))
        datasets = sorted(str(source / rel) for rel in manifest["files"] if rel.startswith(f"{DATASETS}/"))
        figures = write_figures(tmp / "long.csv", config, tmp / "figures", curves_path=tmp / "plots/curves.csv",
                                samples=samples, datasets=datasets, claims=sorted((tmp / "tables").glob("*_claims.csv")))
        differing = compare_tables(tmp / "tables", source / "tables")
        tables = [out / Path(p).relative_to(tmp) for p in tables]
        figures = [out / Path(p).relative_to(tmp) for p in figures]
    built = build_report(out, repo / report, repo) if report is not None else None
    return RegenerateResult(out, tables, figures, differing, built)


def regenerate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl regenerate",
                                     description="every table, figure and the report from shared results, "
                                                 f"into {REVIEWER_DIR}/")
    parser.add_argument("--shared", type=Path, default=SHARE_DIR, help="the shared folder (after dvc pull)")
    parser.add_argument("--archive", type=Path, default=None, help="a results archive of `mvl share --archive`")
    parser.add_argument("--sha256", default=None, help="the archive's expected sha256 (default: ARCHIVE.sha256)")
    parser.add_argument("--report", type=Path, default=REVIEWER_DIR / "report.html",
                        help="the Snakemake report to write")
    parser.add_argument("--no-report", action="store_true", help="skip the report (no Snakemake needed)")
    parser.add_argument("--max-file-mb", type=float, default=MAX_FILE_MB,
                        help="refuse a shared file larger than this (default %(default)s)")
    parser.add_argument("--max-members", type=int, default=MAX_MEMBERS,
                        help="refuse an archive of more members than this (default %(default)s)")
    parser.add_argument("--dvc-plots", type=Path, default=None,
                        help="also render `dvc plots show` into this folder, offline (needs DVC)")
    args = parser.parse_args(argv)
    done = regenerate(shared=args.shared, archive=args.archive, sha256=args.sha256,
                      report=None if args.no_report else args.report, max_file_mb=args.max_file_mb,
                      max_members=args.max_members)
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
