"""Download Medical Segmentation Decathlon tasks: resumable, retried, md5-checked, extracted atomically.

The archives and their md5 checksums are MONAI's (``monai.apps.DecathlonDataset.resource`` and
``.md5``, the mirror ``DecathlonDataset(download=True)`` uses). One task is one ``.tar`` archive
holding ``{task}/dataset.json``, ``{task}/imagesTr/``, ``{task}/labelsTr/`` and ``{task}/imagesTs/``.

What happens, in order (``download_task``):

1. ``data/{task}/`` already complete (its marker ``.mvl-download.json`` names the expected md5, or
   it has no marker but its ``dataset.json`` and every file it lists are present): nothing to do,
   no network. Every file ``dataset.json`` lists must lie inside the task folder
   (``data.io.listed_files``), or the folder is refused.
   A folder that exists but is not complete is never deleted unless the downloader made it (its
   marker names the expected md5) or it is empty: otherwise the download refuses, naming what it
   found, and the user moves or deletes the folder (it may hold their own files). Even a folder
   the downloader made is replaced only when it holds nothing but what the archive put there (the
   marker lists those files): a file the user added is named and the download refuses.
2. A ``{cache}/{task}.tar`` that is the user's own copy of the archive (the expected md5) is used
   as it is and never deleted or changed; any other file of the user's in the cache is left alone.
   The downloader's own files carry its name, :data:`PART_SUFFIX` and :data:`ARCHIVE_SUFFIX`: the
   archive is streamed into ``{cache}/{task}.mvl-download.tar.part`` (``cache`` defaults to
   ``data/.downloads``). An interrupted transfer is resumed with an HTTP ``Range`` request;
   connection errors, timeouts and 5xx answers are retried with exponential backoff; any other
   HTTP error (404, 403, ...) fails at once, naming the URL and the status.
3. The md5 is checked. A mismatch deletes the partial file and downloads once more from zero; a
   second mismatch is an error naming the URL and both checksums.
4. The archive is checked (no absolute paths, no ``..``, only files and folders, a
   ``{task}/dataset.json``, not truncated: the end-of-archive blocks follow the last member),
   extracted into a temporary folder beside ``data/{task}`` and renamed into place, so a failure
   leaves no task folder. macOS ``._*`` resource-fork files, which the
   real archives carry, are skipped. The downloader's archive is deleted once extracted (unless
   asked to keep it), and the cache folder too when the downloader made it and it is empty.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from medvisionllama.data.io import listed_files
from medvisionllama.errors import ExternalError, InputError
from medvisionllama.io_utils import atomic_dir, read_json, with_path, write_json_atomic
from medvisionllama.tasks import TASKS, get_task

MARKER = ".mvl-download.json"
ARCHIVE_SUFFIX = ".mvl-download.tar"  #: ``{cache}/{task}{ARCHIVE_SUFFIX}``: an archive this downloader fetched
PART_SUFFIX = ARCHIVE_SUFFIX + ".part"  #: its partial download, resumed by the next attempt
UNREADABLE = "(unreadable marker)"  #: what :func:`marker_md5` gives for a damaged marker
CHUNK = 1 << 20  # bytes read and hashed at a time


class DownloadError(ExternalError):
    """A download that cannot complete: an HTTP error, a checksum mismatch, a broken archive.

    The user fixes it (another URL or md5, a retry later); ``mvl`` prints it on one line, exit 2.
    """


class _Retryable(Exception):
    """A transient failure (connection, timeout, 5xx, short read): try again after a pause."""


@dataclass(frozen=True)
class Source:
    """Where a task's archive lives and what its md5 must be."""

    url: str
    md5: str


def monai_source(task: str) -> Source:
    """The URL and md5 MONAI's ``DecathlonDataset`` uses for ``task`` (imports MONAI, slow)."""
    from monai.apps import DecathlonDataset

    return Source(url=DecathlonDataset.resource[task], md5=DecathlonDataset.md5[task])


# --------------------------------------------------------------------------------------------
# small pieces
# --------------------------------------------------------------------------------------------
def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ensure_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and prove a file can be written in it, else an InputError naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mvl-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {str(folder)!r} is not writable: {exc.strerror or exc}") from exc


def missing_files(task_dir: Path, *, dataset_name: str | None = None) -> list[str]:
    """What ``task_dir`` lacks: ``dataset.json`` itself, or files it lists. Empty when complete.

    Raises:
        InputError: ``dataset.json`` lists a file outside ``task_dir`` (``dataset_name`` names
            dataset.json in the message; default its path).
    """
    dataset = task_dir / "dataset.json"
    if not dataset.is_file():
        return ["dataset.json"]
    try:
        content = read_json(dataset)
    except InputError:
        return ["dataset.json (unreadable)"]
    if not isinstance(content, dict):
        return ["dataset.json (not a JSON object)"]
    listed = listed_files(task_dir, content, dataset_path=dataset_name or dataset)
    return [rel for _, rel, file in listed if not file.is_file()]


def check_replaceable(target: Path, md5: str) -> None:
    """Refuse to replace ``target`` (an existing, incomplete task folder) unless this downloader
    made it for the same archive (its marker names ``md5``) or it is empty.

    Raises:
        InputError: naming the folder, what was found in it and what to do.
    """
    if not target.exists() and not target.is_symlink():
        return
    advice = "move it aside or delete it, then run `mvl download` again"
    if target.is_symlink() or not target.is_dir():
        raise InputError(f"{target}: exists but is not a folder `mvl download` made ({advice})")
    if not any(target.iterdir()):
        return  # an empty folder: nothing of the user's to lose
    recorded = marker_md5(target)
    if recorded == md5:  # our own download of this archive, left incomplete: replaced, unless the
        added = files_not_downloaded(target)  # user added files to it
        if added:
            more = f" and {len(added) - 3} more" if len(added) > 3 else ""
            raise InputError(
                f"{target}: is incomplete, but holds file(s) `mvl download` did not write "
                f"({', '.join(added[:3])}{more}); replacing the folder would delete them, so it is left "
                "alone: move them out of it (or move the folder aside), then run `mvl download` again"
            )
        return
    lacks = missing_files(target)
    found = f"incomplete (lacks {', '.join(lacks[:3])}{' ...' if len(lacks) > 3 else ''})" if lacks else "complete"
    if recorded is None:
        raise InputError(
            f"{target}: exists, is {found} and was not made by `mvl download` (no {MARKER}); "
            f"it may hold your own files, so it is left alone: {advice}"
        )
    if recorded == UNREADABLE:
        raise InputError(f"{target}: its {MARKER} is unreadable or a link, so it is left alone: {advice}")
    raise InputError(
        f"{target}: holds another download (its {MARKER} records md5 {recorded}, expected {md5}); "
        f"it is left alone: {advice}"
    )


def downloaded_files(task_dir: Path) -> set[str] | None:
    """The files (relative POSIX paths) the download that made ``task_dir`` wrote: the marker's
    ``paths``; for a marker written before it listed them, ``dataset.json`` and every file it
    lists; ``None`` when neither can be read."""
    try:
        paths = json.loads((task_dir / MARKER).read_text()).get("paths")
    except (OSError, ValueError, AttributeError):
        paths = None
    if isinstance(paths, list) and all(isinstance(p, str) for p in paths):
        return set(paths)
    try:
        content = read_json(task_dir / "dataset.json")
        listed = listed_files(task_dir, content, dataset_path=task_dir / "dataset.json")
    except (InputError, OSError, AttributeError, TypeError):
        return None
    return {"dataset.json", *(Path(os.path.normpath(rel)).as_posix() for _, rel, _ in listed)}


def files_not_downloaded(task_dir: Path) -> list[str]:
    """Files (and links) under ``task_dir`` that its download did not write: the user's. Sorted
    relative paths; every file but the marker when the download's list is unknown."""
    known = downloaded_files(task_dir) or set()
    found = sorted(p.relative_to(task_dir).as_posix() for p in task_dir.rglob("*") if p.is_file() or p.is_symlink())
    return [rel for rel in found if rel != MARKER and rel not in known]


def marker_md5(task_dir: Path) -> str | None:
    """The md5 the marker of ``task_dir`` records; ``None`` without a marker; :data:`UNREADABLE`
    for a marker that is a link, not JSON or without an md5 string."""
    marker = task_dir / MARKER
    if not marker.exists() and not marker.is_symlink():
        return None
    try:
        if marker.is_symlink() or not marker.is_file():
            raise ValueError("not a plain file")
        recorded = json.loads(marker.read_text()).get("md5")
        if not isinstance(recorded, str):
            raise ValueError("no md5")
        return recorded
    except (OSError, ValueError, AttributeError):
        return UNREADABLE


def is_present(task_dir: Path, md5: str | None) -> bool:
    """True when ``task_dir`` holds a complete task: its marker names ``md5`` (when it has a
    marker) and ``dataset.json`` and every file it lists exist."""
    if not task_dir.is_dir() or missing_files(task_dir):
        return False
    recorded = marker_md5(task_dir)
    return recorded is None or md5 is None or recorded == md5


# --------------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------------
def _fetch(url: str, part: Path, *, timeout: float, progress: bool, label: str) -> None:
    """Append the rest of ``url`` to ``part`` (resuming with ``Range`` when ``part`` has bytes).

    Raises ``_Retryable`` for transient failures and ``DownloadError`` for final ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "medvisionllama-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already whole (or too long)
            return  # the md5 check decides; a mismatch restarts from zero
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code} {exc.reason} from {url}") from exc
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        raise _Retryable(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc

    with response:
        if offset and response.status == 206:
            mode = "ab"
        else:  # 200: the server sent the whole file (no Range support, or no partial file)
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, disable=not progress, mininterval=0.5 if interactive else 30.0,
            file=sys.stderr,
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    out.write(exc.partial)  # keep what arrived: the next attempt resumes after it
                    raise _Retryable(f"connection to {url} broke after {out.tell()} bytes") from exc
                except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                    raise _Retryable(f"connection to {url} broke after {out.tell()} bytes: {exc!r}") from exc
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:  # a full disk: the .part file keeps what arrived
                    raise with_path(exc, part) from exc
                bar.update(len(chunk))
            received = out.tell()
    if total is not None and received < total:
        raise _Retryable(f"connection to {url} closed after {received} of {total} bytes")


def fetch_verified(
    url: str,
    md5: str,
    archive: Path,
    *,
    retries: int,
    timeout: float,
    backoff: float,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``archive`` (via ``archive.part``), resuming, retrying and md5-checking.

    Transient failures are retried up to ``retries`` times, waiting ``backoff * 2**k`` seconds; a
    checksum mismatch deletes the partial file and starts once more from zero.
    """
    part = archive.with_name(archive.name + ".part")  # PART_SUFFIX for the downloader's archive
    failures = 0
    mismatches = 0
    while True:
        try:
            _fetch(url, part, timeout=timeout, progress=progress, label=archive.name)
        except _Retryable as exc:
            failures += 1
            if failures > retries:
                raise DownloadError(f"cannot download {url}: gave up after {failures} attempts; last error: {exc}") from exc
            wait = backoff * 2 ** (failures - 1)
            print(f"mvl download: {exc}; retrying in {wait:.1f} s ({failures}/{retries})", file=sys.stderr)
            sleep(wait)
            continue
        actual = file_md5(part) if part.exists() else "(no data)"
        if actual == md5:
            os.replace(part, archive)
            return archive
        part.unlink(missing_ok=True)
        mismatches += 1
        if mismatches > 1:
            raise DownloadError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {actual} "
                f"(downloaded twice from zero; the mirror's file differs from the expected one)"
            )
        print(f"mvl download: md5 of {url} is {actual}, expected {md5}; downloading again from zero", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------
def _check_not_truncated(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The members of ``tar``; a ``DownloadError`` when the archive ends early.

    ``tarfile`` stops listing silently at a cut-off header, so a truncated archive would look
    like a shorter one. A complete archive holds every member's data and then the end-of-archive
    marker (two zero blocks).
    """
    members = tar.getmembers()
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + (-(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE if last.isreg() else 0)
    tar.fileobj.seek(end)
    trailer = tar.fileobj.read(2 * tarfile.BLOCKSIZE)
    if len(trailer) < 2 * tarfile.BLOCKSIZE or trailer.count(0) != len(trailer):
        raise DownloadError(
            f"archive {archive} is corrupt or truncated: it ends after {len(members)} member(s) "
            "without the end-of-archive marker"
        )
    return members


def safe_members(members: list[tarfile.TarInfo], top: str) -> list[tuple[tarfile.TarInfo, str]]:
    """Members under ``{top}/`` with their path relative to it (other members are skipped);
    raises ``DownloadError`` for an absolute path, a ``..`` or a link or device under ``top``.
    Shared by the task download and ``mvl regenerate --archive``."""
    selected: list[tuple[tarfile.TarInfo, str]] = []
    task = top
    for member in members:
        name = member.name
        if name.startswith("/") or PurePosixPath(name).is_absolute():
            raise DownloadError(f"archive member {name!r} has an absolute path: refusing to extract")
        parts = PurePosixPath(name).parts
        if ".." in parts:
            raise DownloadError(f"archive member {name!r} contains '..': refusing to extract")
        parts = tuple(p for p in parts if p != ".")
        if not parts or parts[0] != task:
            continue  # not part of the task folder (e.g. a top-level ._ file)
        if not (member.isfile() or member.isdir()):
            raise DownloadError(f"archive member {name!r} is a link or device, not a file: refusing to extract")
        if parts[-1].startswith("._"):
            continue  # macOS resource fork, not data
        selected.append((member, "/".join(parts[1:])))
    return selected


def _checked_members(tar: tarfile.TarFile, task: str, members: list[tarfile.TarInfo]) -> list[tuple[tarfile.TarInfo, str]]:
    """Members under ``{task}/`` with their path relative to it; rejects unsafe members."""
    selected = safe_members(members, task)
    if not any(rel == "dataset.json" and m.isfile() for m, rel in selected):
        raise DownloadError(f"archive holds no {task}/dataset.json: not an MSD task archive for {task}")
    return selected


def extract_task(archive: Path, task: str, target: Path, *, source: Source, owned: bool = True) -> Path:
    """Extract ``{task}/`` of ``archive`` into ``target`` atomically and write the marker (which
    lists every file written, ``paths``).

    An ``OSError`` while writing (a full disk) names ``target``; the archive is kept for the next
    attempt. A truncated or unsafe archive is deleted when the downloader fetched it (``owned``);
    the user's own archive is never deleted.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, task, _check_not_truncated(tar, archive))
            with atomic_dir(target) as tmp:
                for member, rel in members:
                    if not rel:
                        continue
                    member = member.replace(name=rel, deep=False)
                    try:
                        tar.extract(member, tmp, filter="data")
                    except OSError as exc:
                        raise with_path(exc, target) from exc
                try:
                    missing = missing_files(tmp, dataset_name=f"{archive}: {task}/dataset.json")
                except InputError as exc:  # lists a file outside the task folder
                    raise DownloadError(str(exc)) from None
                if missing:
                    raise DownloadError(
                        f"archive {archive} is incomplete: {task}/ lacks {', '.join(missing[:5])}"
                        + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                    )
                paths = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
                write_json_atomic(tmp / MARKER, {
                    "task": task, "url": source.url, "md5": source.md5,
                    "archive_bytes": archive.stat().st_size, "files": len(paths), "paths": paths,
                })
    except (tarfile.TarError, EOFError, DownloadError) as exc:
        if owned:
            archive.unlink(missing_ok=True)  # broken: the next attempt downloads again
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"archive {archive} from {source.url} is corrupt or truncated: {exc}") from exc
    return target


# --------------------------------------------------------------------------------------------
# the typed function and the command line
# --------------------------------------------------------------------------------------------
def download_task(
    task: str,
    data_dir: str | os.PathLike[str],
    *,
    url: str | None = None,
    md5: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Make ``data_dir/{task}`` a complete, verified MSD task folder; return its path.

    ``url``/``md5`` override MONAI's address and checksum (a local mirror; ``{task}`` in ``url``
    is replaced by the task name). A task already present and verified is not downloaded again.
    Raises ``InputError`` for bad arguments or an unwritable folder, ``DownloadError`` when the
    download, the checksum or the archive fails; neither leaves a task folder behind.
    """
    name = get_task(task).name
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    if timeout <= 0 or backoff < 0:
        raise InputError(f"timeout must be > 0 and backoff >= 0, got timeout={timeout}, backoff={backoff}")
    if md5 is not None and not (len(md5) == 32 and all(c in "0123456789abcdef" for c in md5.lower())):
        raise InputError(f"invalid md5 {md5!r}: expected 32 hex digits")
    if url is None or md5 is None:
        default = monai_source(name)
        url, md5 = url or default.url, md5 or default.md5
    source = Source(url=url.replace("{task}", name), md5=md5.lower())

    data_dir = Path(data_dir)
    target = data_dir / name
    if is_present(target, source.md5):
        print(f"mvl download: {target} is present and complete; not downloading", file=sys.stderr)
        return target
    check_replaceable(target, source.md5)
    _ensure_writable(data_dir, "data folder")
    cache = Path(cache_dir) if cache_dir is not None else data_dir / ".downloads"
    cache_made = cache_dir is None or not cache.exists()  # the default cache is always ours
    _ensure_writable(cache, "download cache folder")

    users = cache / f"{name}.tar"  # the user's own copy of the archive: used, never deleted
    ours = cache / f"{name}{ARCHIVE_SUFFIX}"
    if users.is_file() and not users.is_symlink() and file_md5(users) == source.md5:
        print(f"mvl download: using {users} (its md5 is the expected one)", file=sys.stderr)
        archive, owned = users, False
    else:
        archive, owned = ours, True
        if not (ours.is_file() and file_md5(ours) == source.md5):
            ours.unlink(missing_ok=True)
            fetch_verified(source.url, source.md5, ours, retries=retries, timeout=timeout,
                           backoff=backoff, progress=progress)
    extract_task(archive, name, target, source=source, owned=owned)
    if owned and not keep_archive:
        archive.unlink(missing_ok=True)
    if cache_made:
        try:
            cache.rmdir()  # only when empty
        except OSError:
            pass
    print(f"mvl download: {name} ready in {target}", file=sys.stderr)
    return target


def mirror_url_option(mirror: str | None, task: str) -> list[str]:
    """``["--url", URL]`` for ``task`` on the mirror ``mirror`` (the config's ``data.msd_mirror``):
    a URL holding ``{task}``, or a base URL under which the archive is ``<task>.tar``; ``[]``
    without a mirror (MONAI's address). The workflow's ``download_task`` rule passes it on."""
    if not mirror:
        return []
    url = mirror if "{task}" in mirror else mirror.rstrip("/") + "/{task}.tar"
    return ["--url", url.replace("{task}", task)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvl download",
        description=(
            "Download MSD tasks (MONAI's mirror), verify their md5 and extract them into DATA_DIR/{task}. "
            "An existing DATA_DIR/{task} that is incomplete is replaced only if mvl download made it for "
            "the same archive (its .mvl-download.json) and holds no file you added, or it is empty; any other "
            "folder is left alone and the download refuses (exit 2), naming what it found. Errors the user "
            "can fix exit 2."
        ),
    )
    p.add_argument("--task", nargs="+", required=True,
                   help="task name(s) (Task09_Spleen or Task09), or 'all' for the ten tasks")
    p.add_argument("--data-dir", default="data", help="folder that receives {task}/ (default: data)")
    p.add_argument("--url", help="archive URL instead of MONAI's (a local mirror); '{task}' is replaced")
    p.add_argument("--md5", help="expected md5 of the archive instead of MONAI's (one task only)")
    p.add_argument("--cache-dir", help="where partial downloads live (default: DATA_DIR/.downloads); a {task}.tar "
                   "there with the expected md5 is used as it is; only the downloader's own *.mvl-download.tar[.part] "
                   "files are ever deleted")
    p.add_argument("--retries", type=int, default=5, help="retries on connection errors and 5xx (default: 5)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default: 60)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry pause in seconds, doubled each time (default: 2)")
    p.add_argument("--keep-archive", action="store_true",
                   help="keep the downloaded {task}.mvl-download.tar in the cache folder after extraction")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tasks = list(TASKS) if args.task == ["all"] else args.task
    if args.md5 and len(tasks) > 1:
        raise InputError("--md5 applies to one task; give one --task with it")
    if args.url and len(tasks) > 1 and "{task}" not in args.url:
        raise InputError("--url for several tasks must contain '{task}'")
    for task in tasks:  # a DownloadError reaches `mvl`, which prints it on one line (exit 2)
        download_task(
            task, args.data_dir, url=args.url, md5=args.md5, cache_dir=args.cache_dir,
            retries=args.retries, timeout=args.timeout, backoff=args.backoff,
            keep_archive=args.keep_archive, progress=not args.no_progress,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
