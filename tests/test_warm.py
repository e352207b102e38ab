"""The warm worker (medvisionllama.warm): jobs forked from one process that imported torch once
behave as `mvl` run afresh (output, exit status, signals), and the worker never serves old code."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import env_with_venv

from medvisionllama import warm

#: a verb that records its pid and sleeps (registered in both the worker and the job by _PATCH)
NAP = textwrap.dedent("""
    import os, sys, time
    def main(argv):
        open(argv[0] + ".tmp", "w").write(str(os.getpid()))
        os.replace(argv[0] + ".tmp", argv[0])
        time.sleep(float(argv[1]))
        return 0
""")
#: a verb that writes the temporary folder it is given
TMPDIR_VERB = textwrap.dedent("""
    import tempfile
    def main(argv):
        open(argv[0], "w").write(tempfile.gettempdir())
        return 0
""")
_PATCH = ("import sys, medvisionllama.cli as c, medvisionllama.warm as w; "
          "c.VERBS['nap'] = ('napverb', 'sleep'); c.VERBS['tmpdir'] = ('tmpverb', 'tmpdir'); "
          "w.VERBS = w.VERBS | {'nap', 'tmpdir'}; ")


def _env(tmp: Path, sock: Path | str | None) -> dict[str, str]:
    env = env_with_venv()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp), env.get("PYTHONPATH", "")])
    if sock is None:
        env.pop(warm.ENV, None)
    else:
        env[warm.ENV] = str(sock)
    return env


def _wait(predicate, seconds: float = 300.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """A worker (with the nap verb) serving this test process; its socket, folder and log. (The waits
    below are deadlines for a hang, generous for a loaded machine: no outcome depends on a time.)"""
    tmp = tmp_path_factory.mktemp("warm")
    (tmp / "napverb.py").write_text(NAP)
    (tmp / "tmpverb.py").write_text(TMPDIR_VERB)
    sock = Path(f"/tmp/mvl-test-{os.getpid()}.sock")
    log = open(tmp / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _PATCH + "sys.exit(w.main(sys.argv[1:]))", "--socket", str(sock),
         "--parent-pid", str(os.getpid())],
        env=_env(tmp, None), stdout=log, stderr=log, start_new_session=True)
    assert _wait(sock.exists), "the worker did not bind its socket"
    assert _wait(lambda: " ready on " in (tmp / "worker.log").read_text()), "the worker did not finish its imports"
    yield sock, tmp, proc
    proc.terminate()
    proc.wait(timeout=300)
    log.close()
    assert not sock.exists()  # a worker removes its socket when it exits


def _mvl(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PATCH + "sys.exit(c.main(sys.argv[1:]))", *args],
                          env=env, capture_output=True, text=True, timeout=600, **kwargs)


def _jobs_in_log(tmp: Path) -> str:
    return (tmp / "worker.log").read_text()


def test_a_job_runs_in_the_worker_with_the_same_output_files_and_status(worker, tmp_path):
    sock, tmp, _ = worker
    values = json.dumps({"training": {"epochs": 3}, "results_dir": "results"})
    direct = _mvl(["config", "--values", values, "--output", str(tmp_path / "a.yaml")], _env(tmp, None))
    served = _mvl(["config", "--values", values, "--output", "b.yaml"], _env(tmp, sock), cwd=tmp_path)
    assert direct.returncode == served.returncode == 0, served.stderr
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()  # its working directory
    assert f"mvl config --values {values}" in _jobs_in_log(tmp)  # it ran in the worker
    help_direct, help_served = _mvl(["split", "--help"], _env(tmp, None)), _mvl(["split", "--help"], _env(tmp, sock))
    assert help_served.returncode == 0 and help_served.stdout == help_direct.stdout  # its standard output


def test_a_failing_job_reports_its_error_and_status(worker, tmp_path):
    sock, tmp, _ = worker
    args = ["evaluate", "--run-dir", str(tmp_path / "none"), "--preprocessed", "x", "--split", "y", "--data-dir", "z"]
    direct, served = _mvl(args, _env(tmp, None)), _mvl(args, _env(tmp, sock))
    assert served.returncode == direct.returncode == 2
    assert served.stderr == direct.stderr
    assert "checkpoint_best.pt" in served.stderr
    assert f"job" in _jobs_in_log(tmp) and str(tmp_path / "none") in _jobs_in_log(tmp)


def test_without_a_worker_the_job_runs_itself(tmp_path):
    for value in (str(tmp_path / "no.sock"), "off"):
        result = _mvl(["config", "--values", "{}", "--output", str(tmp_path / "c.yaml")], _env(tmp_path, value))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "c.yaml").exists()
        (tmp_path / "c.yaml").unlink()


def test_the_worker_refuses_a_job_of_other_code(worker):
    """A job whose package differs from what the worker imported (an edit mid-run) is refused and
    runs itself, so old code never produces a result."""
    sock, _, _ = worker
    request = json.dumps({"argv": ["split", "--help"], "cwd": "/", "env": {}, "umask": 0o22,
                          "stamp": "0" * 64}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        socket.send_fds(s, [warm._HEADER.pack(len(request))], [0, 1, 2])
        s.sendall(request)
        s.settimeout(300)
        assert s.makefile("r").readline().startswith("R ")


def test_signals_reach_the_job_and_a_killed_job_stops_its_work(worker, tmp_path):
    sock, tmp, _ = worker
    for signum, status in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, None)):
        pidfile = tmp_path / f"pid-{signum}"
        client = subprocess.Popen([sys.executable, "-c", _PATCH + "sys.exit(c.main(sys.argv[1:]))", "nap",
                                   str(pidfile), "120"], env=_env(tmp, sock))
        assert _wait(pidfile.exists), "the job did not start"
        child = int(pidfile.read_text())
        assert child != client.pid  # the work runs in the worker's child, not in the job's process
        client.send_signal(signum)
        returncode = client.wait(timeout=300)
        if status is not None:
            assert returncode == status  # the job's status is the work's: killed by SIGTERM
        assert _wait(lambda: not _running(child)), f"the work ({child}) outlived its job after {signum!r}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_worker_whose_snakemake_is_gone_exits(tmp_path):
    parent = subprocess.Popen(["sleep", "30"])
    sock = Path(f"/tmp/mvl-test-{os.getpid()}-orphan.sock")
    proc = subprocess.Popen(["mvl", "warm-worker", "--socket", str(sock), "--parent-pid", str(parent.pid)],
                            env=_env(tmp_path, None), start_new_session=True)
    try:
        assert _wait(sock.exists)
        parent.kill()
        parent.wait()
        assert proc.wait(timeout=300) == 0  # a deadline for a hang, not a timing
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_no_worker_on_a_machine_with_a_gpu_or_when_turned_off(monkeypatch):
    """CUDA cannot be used after a fork from a process that touched it: with a GPU, or with
    MVL_WARM_WORKER=off, start() starts nothing and the jobs run in their own processes."""
    monkeypatch.setattr(warm, "has_gpu", lambda: True)
    monkeypatch.delenv(warm.ENV, raising=False)
    assert warm.start() is None and warm.ENV not in os.environ
    monkeypatch.setattr(warm, "has_gpu", lambda: False)
    monkeypatch.setenv(warm.ENV, "off")
    assert warm.start() is None and os.environ[warm.ENV] == "off"



def test_a_job_in_the_worker_uses_its_own_temporary_folder(worker, tmp_path):
    """Snakemake gives each job its TMPDIR (the tmpdir resource); the worker, which imported
    tempfile under its own, must not hand the job that one."""
    sock, tmp, _ = worker
    (tmp_path / "t").mkdir()
    out = tmp_path / "tempdir.txt"
    result = _mvl(["tmpdir", str(out)], {**_env(tmp, sock), "TMPDIR": str(tmp_path / "t")})
    assert result.returncode == 0, result.stderr
    assert out.read_text() == str(tmp_path / "t")
    assert f"mvl tmpdir {out}" in _jobs_in_log(tmp)  # it ran in the worker
