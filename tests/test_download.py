"""``mvl download`` against a local HTTP server (127.0.0.1) serving tiny MSD-format archives.

The server supports ``Range`` requests and can be told, per path, to drop the connection half-way,
answer 500, or serve what it holds; every request it sees is logged with its ``Range`` header.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvisionllama.data import download as dl
from medvisionllama.errors import InputError

TASK = "Task09_Spleen"


# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------
def _nifti_bytes(array: np.ndarray) -> bytes:
    image = nib.Nifti1Image(array, np.diag([0.8, 0.8, 5.0, 1.0]))
    return gzip.compress(image.to_bytes(), mtime=0)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_archive(task: str = TASK, cases: int = 2, extra: dict[str, bytes] | None = None) -> bytes:
    """An MSD-layout tar: ``{task}/dataset.json``, ``imagesTr``, ``labelsTr`` (random, incompressible)."""
    rng = np.random.default_rng(0)
    training = [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"} for i in range(cases)]
    dataset = {"name": task, "description": "test", "modality": {"0": "CT"},
               "labels": {"0": "background", "1": "spleen"}, "numTraining": cases,
               "training": training, "test": []}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, f"{task}/dataset.json", json.dumps(dataset).encode())
        for i in range(cases):
            image = rng.normal(size=(16, 16, 8)).astype(np.float32)
            label = (rng.random((16, 16, 8)) > 0.5).astype(np.uint8)
            _add(tar, f"{task}/imagesTr/case_{i}.nii.gz", _nifti_bytes(image))
            _add(tar, f"{task}/labelsTr/case_{i}.nii.gz", _nifti_bytes(label))
        _add(tar, f"{task}/imagesTr/._case_0.nii.gz", b"macOS resource fork")
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return buffer.getvalue()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------
@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    #: path -> actions for the next requests ("drop": half the body then close; "500")
    actions: dict[str, list[str]] = field(default_factory=dict)
    #: (path, Range header or None) of every request
    requests: list[tuple[str, str | None]] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        queue = state.actions.get(self.path) or []
        action = queue.pop(0) if queue else "ok"
        if action == "500":
            self.send_error(500, "Internal Server Error")
            return
        if self.path not in state.files:
            self.send_error(404, "Not Found")
            return
        data = state.files[self.path]
        start = 0
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if action == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return  # the promised Content-Length is never reached
        self.wfile.write(body)


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1; yields (base_url, state)."""
    state = ServerState()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


FAST = dict(retries=2, timeout=5.0, backoff=0.0, progress=False)


def _serve(state: ServerState, data: bytes, path: str = f"/{TASK}.tar") -> str:
    state.files[path] = data
    return path


def _no_leftovers(data_dir: Path) -> None:
    assert not (data_dir / TASK).exists()
    left = [p.name for p in data_dir.iterdir()] if data_dir.exists() else []
    assert not [n for n in left if n.startswith(f".{TASK}")], left  # no temp extraction folder
    cache = data_dir / ".downloads"
    assert not cache.exists() or not list(cache.glob("*.part")), list(cache.iterdir())


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
def test_clean_download(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert target == tmp_path / "data" / TASK
    assert dl.missing_files(target) == []
    assert not (target / "imagesTr" / "._case_0.nii.gz").exists()  # resource forks skipped
    img = nib.load(target / "imagesTr" / "case_1.nii.gz")
    assert img.shape == (16, 16, 8)
    marker = json.loads((target / dl.MARKER).read_text())
    assert marker["md5"] == md5_of(data) and marker["url"] == base + path
    assert not (tmp_path / "data" / ".downloads").exists()  # archive removed, empty cache removed
    assert state.requests == [(path, None)]


def test_short_task_name_and_url_template(server, tmp_path):
    base, state = server
    data = make_archive()
    _serve(state, data)
    target = dl.download_task("Task09", tmp_path / "data", url=base + "/{task}.tar", md5=md5_of(data), **FAST)
    assert target.name == TASK and (target / "dataset.json").is_file()


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    base, state = server
    data = make_archive(cases=3)
    path = _serve(state, data)
    state.actions[path] = ["drop"]
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 2
    assert state.requests[0] == (path, None)
    resumed_range = state.requests[1][1]
    assert resumed_range is not None and resumed_range.startswith("bytes=")
    offset = int(resumed_range[len("bytes="):].rstrip("-"))
    assert 0 < offset < len(data)  # resumed mid-file, not from zero
    assert dl.missing_files(target) == []


def test_resume_from_existing_part_file(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    cache = tmp_path / "data" / ".downloads"
    cache.mkdir(parents=True)
    (cache / f"{TASK}.tar.part").write_bytes(data[:1000])  # left by an interrupted earlier run
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert state.requests == [(path, "bytes=1000-")]


def test_wrong_checksum_retries_then_fails_cleanly(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    wrong = "0" * 32
    with pytest.raises(dl.DownloadError) as info:
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=wrong, **FAST)
    message = str(info.value)
    assert base + path in message and wrong in message and md5_of(data) in message
    assert [r for r in state.requests] == [(path, None), (path, None)]  # once more from zero
    _no_leftovers(tmp_path / "data")


def test_truncated_archive_is_an_error_and_leaves_nothing(server, tmp_path):
    base, state = server
    data = make_archive(cases=3)
    truncated = data[: len(data) // 2 + 100]
    path = _serve(state, truncated)
    with pytest.raises(dl.DownloadError, match="truncated|incomplete"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(truncated), **FAST)
    _no_leftovers(tmp_path / "data")
    assert not (tmp_path / "data" / ".downloads" / f"{TASK}.tar").exists()


def test_archive_without_dataset_json_is_rejected(server, tmp_path):
    base, state = server
    data = make_archive(task="Task02_Heart")  # the wrong task's archive
    path = _serve(state, data)
    with pytest.raises(dl.DownloadError, match=f"{TASK}/dataset.json"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    _no_leftovers(tmp_path / "data")


@pytest.mark.parametrize("evil", ["../evil.txt", f"{TASK}/../../evil.txt", "/tmp/mvl-evil.txt"])
def test_unsafe_members_are_rejected(server, tmp_path, evil):
    base, state = server
    data = make_archive(extra={evil: b"x"})
    path = _serve(state, data)
    with pytest.raises(dl.DownloadError, match="refusing to extract"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    _no_leftovers(tmp_path / "data")
    assert not (tmp_path / "evil.txt").exists()


def test_404_fails_at_once(server, tmp_path):
    base, state = server
    url = base + "/missing.tar"
    with pytest.raises(dl.DownloadError) as info:
        dl.download_task(TASK, tmp_path / "data", url=url, md5="0" * 32, **FAST)
    assert url in str(info.value) and "404" in str(info.value)
    assert len(state.requests) == 1  # no retry
    _no_leftovers(tmp_path / "data")


def test_500_is_retried_then_fails(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    state.actions[path] = ["500"] * 10
    with pytest.raises(dl.DownloadError) as info:
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert base + path in str(info.value) and "500" in str(info.value)
    assert len(state.requests) == FAST["retries"] + 1
    _no_leftovers(tmp_path / "data")


def test_500_then_success(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    state.actions[path] = ["500"]
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 2 and dl.missing_files(target) == []


def test_connection_refused_is_retried_then_fails(tmp_path):
    url = "http://127.0.0.1:9/none.tar"  # discard port: nothing listens
    with pytest.raises(dl.DownloadError, match="gave up after 3 attempts"):
        dl.download_task(TASK, tmp_path / "data", url=url, md5="0" * 32, **FAST)


def test_unwritable_target_names_the_folder(server, tmp_path):
    base, state = server
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data_dir = blocker / "data"  # cannot be created, even by root
    with pytest.raises(InputError, match=str(data_dir)):
        dl.download_task(TASK, data_dir, url=base + "/x.tar", md5="0" * 32, **FAST)
    assert state.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_target_names_the_folder(server, tmp_path):
    base, _ = server
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            dl.download_task(TASK, data_dir, url=base + "/x.tar", md5="0" * 32, **FAST)
    finally:
        data_dir.chmod(0o755)


def test_present_task_is_not_fetched_again(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 1
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 1
    # a different expected md5 means a different archive: fetched again and replaced
    other = make_archive(cases=3)
    state.files[path] = other
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(other), **FAST)
    assert len(state.requests) == 2
    assert (target / "imagesTr" / "case_2.nii.gz").is_file()


def test_complete_folder_without_marker_is_accepted(server, tmp_path):
    base, state = server
    data = make_archive()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    (tmp_path / "data" / TASK / "imagesTr" / "._case_0.nii.gz").unlink()
    dl.download_task(TASK, tmp_path / "data", url=base + "/missing.tar", md5="0" * 32, **FAST)
    assert state.requests == []
    # a folder missing a listed file is not complete
    (tmp_path / "data" / TASK / "labelsTr" / "case_1.nii.gz").unlink()
    assert not dl.is_present(tmp_path / "data" / TASK, None)


def test_cli(server, tmp_path, capsys):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    argv = ["--task", TASK, "--data-dir", str(tmp_path / "data"), "--url", base + path,
            "--md5", md5_of(data), "--retries", "1", "--backoff", "0", "--no-progress"]
    assert dl.main(argv) == 0
    assert (tmp_path / "data" / TASK / "dataset.json").is_file()
    argv_bad = ["--task", TASK, "--data-dir", str(tmp_path / "other"), "--url", base + "/nope.tar",
                "--md5", "0" * 32, "--retries", "0", "--no-progress"]
    assert dl.main(argv_bad) == 1
    assert "404" in capsys.readouterr().err


def test_cli_through_mvl(server, tmp_path):
    from medvisionllama.cli import main as mvl

    assert mvl(["download", "--task", TASK, "--url", "http://127.0.0.1:9/x.tar", "--md5", "xyz"]) == 2


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown task"):
        dl.download_task("Task99_Nothing", "data", url="http://x/", md5="0" * 32)
    with pytest.raises(InputError, match="md5"):
        dl.download_task(TASK, "data", url="http://x/", md5="abc")


def test_monai_sources_cover_the_ten_tasks():
    from monai.apps import DecathlonDataset

    from medvisionllama.tasks import TASKS

    assert set(DecathlonDataset.resource) == set(TASKS) == set(DecathlonDataset.md5)
    source = dl.monai_source(TASK)
    assert source.url.endswith(f"/{TASK}.tar") and len(source.md5) == 32
