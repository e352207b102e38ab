"""Helpers shared by the download tests: tiny MSD-format archives and a local HTTP server
(127.0.0.1) that supports ``Range`` requests and can be told, per path, to drop the connection
half-way, answer 500, or serve what it holds; every request it sees is logged with its ``Range``
header.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pytest

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
