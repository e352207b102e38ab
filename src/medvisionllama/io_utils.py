"""Atomic writes: a failed job leaves nothing that looks finished.

Files and folders are written under a temporary name beside their target and renamed into place
only once complete, so a crash, a kill or an exception leaves either the old output or none.

Every temporary name is ``.{target name}.mvl-tmp-{random}{suffix}`` (the old copy of a replaced
folder, briefly, ``.{target name}.mvl-tmp-old``): one pattern, :data:`TEMP_PATTERN`, which
``.dvcignore`` lists so that what a killed job leaves behind never enters ``dvc add``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from medvisionllama.errors import InputError, first_line

#: marks every temporary name the atomic writers use: ``.{name}{TEMP_MARK}{random}{suffix}``
TEMP_MARK = ".mvl-tmp-"
#: the gitignore-style pattern (``.dvcignore``) matching every such name
TEMP_PATTERN = f".*{TEMP_MARK}*"


def temp_prefix(target: Path) -> str:
    """The prefix of ``target``'s temporary names: ``.{target.name}.mvl-tmp-``."""
    return f".{target.name}{TEMP_MARK}"


def with_path(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """A copy of ``exc`` (same errno, hence same subclass) that names ``path``.

    Writes through a file object fail without a file name (``[Errno 28] No space left on
    device``), and writes under a temporary name name that name; the user needs the output's own
    path.
    """
    new = OSError(exc.errno, exc.strerror or str(exc), str(path))
    new.__cause__ = exc
    return new


def _names_no_user_file(exc: OSError, temporary: Path) -> bool:
    """True when ``exc`` names no file, or ``temporary`` or a file inside it."""
    if exc.filename is None:
        return True
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else str(exc.filename)
    return name == str(temporary) or name.startswith(str(temporary) + os.sep)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; rename it onto ``target`` on success.

    The caller writes to the yielded path (with any library). On an exception the temporary file
    is removed and ``target`` is untouched. An ``OSError`` that names no file (or the temporary
    one) is re-raised naming ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise with_path(exc, target) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give it a normal file's mode
        os.replace(tmp_path, target)
    except OSError as exc:
        if _names_no_user_file(exc, tmp_path):
            raise with_path(exc, target) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; it replaces ``target`` on success.

    An existing ``target`` is only removed once the new folder is complete. On an exception the
    temporary folder is deleted and ``target`` is left as it was. An ``OSError`` that names no
    file (or the temporary folder) is re-raised naming ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    except OSError as exc:
        raise with_path(exc, target) from exc
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if target.exists():
            old = target.with_name(f"{temp_prefix(target)}old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        if _names_no_user_file(exc, tmp):
            raise with_path(exc, target) from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_json(path: str | os.PathLike[str], *, missing: str = "file does not exist") -> Any:
    """The parsed JSON file ``path``; an ``InputError`` naming it when it is absent (``missing``
    says what to do) or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from exc


def read_csv(path: str | os.PathLike[str], what: str = "CSV file", **kwargs: Any):
    """``pandas.read_csv(path, **kwargs)``; an ``InputError`` naming ``path`` and ``what`` it should
    be when it is absent, empty, cut short, binary or not a CSV table (a shared result can be any
    of these whatever its checksum says)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty; not a {what}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable {what} ({first_line(exc)})") from None


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (stable bytes) to ``target`` atomically."""
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
