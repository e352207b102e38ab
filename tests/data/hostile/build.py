"""Hostile shared results, built from a good shared folder (tests/test_hostile_share.py).

What someone who shares results can hand a reviewer: an archive whose sha256 file matches (the
checksum proves which archive, not who made it), with a manifest or members that try to write
outside the reviewer's folder, plant code or settings where Snakemake reads them, or fill the
disk. Each function writes one such archive (and its ``.sha256``) or edits a shared folder in
place. The planted files are the small committed files beside this script: ``common.smk`` (a
rules file that leaves a marker when parsed) and ``config.yaml`` (an attacker's settings).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLANTED_RULES = HERE / "common.smk"
PLANTED_CONFIG = HERE / "config.yaml"
#: the file the planted rules file writes beside the Snakefile if it is ever parsed
MARKER = "PLANTED_CODE_RAN"
TOP = "shared-results"
#: what the huge member's header claims (nothing of it is ever written: no data follows)
HUGE = 10 << 30


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member(name: str, data: bytes = b"", **fields) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info, (data if info.isfile() else None)


def write_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """``path`` (.tar.gz) with ``members`` and a matching ``{path}.sha256``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.with_name(path.name + ".sha256").write_text(f"{sha256(path.read_bytes())}  {path.name}\n")
    return path


def folder_members(shared: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [member(f"{TOP}/{p.relative_to(shared).as_posix()}", p.read_bytes())
            for p in sorted(shared.rglob("*")) if p.is_file()]


def plant(shared: Path, files: dict[str, bytes], results_dir: str | None = None) -> None:
    """Add ``files`` (relative path -> bytes) to the shared folder ``shared`` and to its manifest
    with their true sha256, and set the manifest's ``results_dir`` (the old format's field)."""
    manifest = json.loads((shared / "SHARE.json").read_text())
    for rel, data in files.items():
        (shared / rel).parent.mkdir(parents=True, exist_ok=True)
        (shared / rel).write_bytes(data)
        manifest["files"][rel] = sha256(data)
    if results_dir is not None:
        manifest["results_dir"] = results_dir
    (shared / "SHARE.json").write_text(json.dumps(manifest, indent=2))


def hostile_copy(good: Path, target: Path, results_dir: str | None = None, config: bool = False,
                 files: dict[str, bytes] | None = None) -> Path:
    """A copy of the good shared folder with a manifest ``results_dir``, the planted config as
    its ``config.yaml`` (``config``) and extra planted ``files``."""
    shutil.copytree(good, target)
    planted = dict(files or {})
    if config:
        planted["config.yaml"] = PLANTED_CONFIG.read_bytes()
    plant(target, planted, results_dir)
    return target


def archive_of(shared: Path, path: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    return write_archive(path, folder_members(shared) + list(extra))


def huge_member_archive(good: Path, path: Path) -> Path:
    """The good files plus a member whose header claims 10 GiB (no data follows it)."""
    info = tarfile.TarInfo(f"{TOP}/long.csv.bak")
    info.size = HUGE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for good_info, data in folder_members(good):
            tar.addfile(good_info, io.BytesIO(data))
        tar.fileobj.write(info.tobuf(tarfile.PAX_FORMAT))  # the header alone
    path.with_name(path.name + ".sha256").write_text(f"{sha256(path.read_bytes())}  {path.name}\n")
    return path


def unsafe_members(victim: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """One unsafe member each: links out, an absolute path, ``..``, and files outside ``TOP``."""
    return {
        "symlink": member(f"{TOP}/long.csv", type=tarfile.SYMTYPE, linkname=str(victim / "config.yaml")),
        "hardlink": member(f"{TOP}/metrics.json", type=tarfile.LNKTYPE, linkname=str(victim / "config.yaml")),
        "absolute": member(str(victim / "config.yaml"), b"overwritten\n"),
        "dotdot": member(f"{TOP}/../../config.yaml", b"overwritten\n"),
        "planted-rules": member(f"{TOP}/workflow/rules/common.smk", PLANTED_RULES.read_bytes()),
    }
