"""A warm worker for local pipeline runs: ``mvl`` jobs fork from a process that has already imported
torch, transformers, pandas and matplotlib, instead of importing them afresh in every job.

Why: on the embedded default most of a job's time is Python start-up (importing torch alone takes
about 2 s, the LLM block's transformers classes 1-2 s more) while the work itself takes a second or
two (BENCHMARKS.md, "Warm worker"). The DAG is unchanged: every job is still one ``mvl <verb>``
command with the same arguments, log, outputs and exit status. Only where the command runs differs.

How: where Snakemake runs jobs on this machine (the local executor, no conda, no GPU: :func:`has_gpu`), the Snakefile's
``onstart`` starts ``mvl warm-worker`` and puts its socket's path in ``MVL_WARM_WORKER``. A job's
``mvl`` (:func:`run_in_worker`) connects, sends its arguments, working directory, environment and
umask, and passes its standard input, output and error as file descriptors. The worker forks a
child that takes all of these on, runs the verb exactly as ``mvl`` would, and exits; the job's
``mvl`` waits for the child and exits with its status. Signals the job gets (Snakemake's SIGTERM
on Ctrl-C or a failed job) are passed on to the child's process group, and a child whose job is
gone (killed with SIGKILL) terminates itself.

When the worker cannot serve a job it runs in its own process as before, so the worker can only
save time: no ``MVL_WARM_WORKER``, no socket, a verb not on :data:`VERBS`, a worker started from
another Python or whose source files changed since it imported them (an edit mid-run must not run
old code), or a worker that does not answer in time. A worker whose Snakemake is gone (Ctrl-C,
``kill -9``) stops accepting jobs and exits once its children are done; it also exits after
:data:`IDLE_EXIT_S` idle seconds.

Not served: verbs that start other programs or talk to the network (``lineage`` runs DVC,
``download``, ``share``, ``regenerate``). Where exact measurements of a job matter, note that
Snakemake's ``benchmark:`` files then measure the job's waiting ``mvl`` for memory and CPU time
(its wall time is right); set ``MVL_WARM_WORKER=off`` (or ``execution.warm_worker: false``) for
per-job memory figures.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: the environment variable holding the worker's socket path ("off": never use a worker)
ENV = "MVL_WARM_WORKER"
#: verbs a worker runs (pure Python work on files; no subprocesses, no network)
VERBS = frozenset({"synthesize", "split", "fingerprint", "preprocess", "config", "extract-layer", "train",
                   "evaluate", "predict", "aggregate", "tables", "figures", "params"})
#: modules imported once, before the first job (what the served verbs spend their start-up on)
PRELOAD = ("torch", "torch._dynamo", "numpy", "pandas", "scipy.ndimage", "nibabel", "medvisionllama.training.train",
           "medvisionllama.evaluation.evaluate", "medvisionllama.data.preprocess", "medvisionllama.llm.factory",
           "medvisionllama.paper.aggregate", "medvisionllama.paper.tables", "medvisionllama.paper.figures")
#: seconds without a job after which a worker exits on its own
IDLE_EXIT_S = 600.0
#: seconds a job waits for the worker to take it (the worker may still be importing) before it runs itself
ACCEPT_TIMEOUT_S = 120.0
_HEADER = struct.Struct("!I")
#: True in a worker's child: its own ``mvl`` runs the verb (never the worker again)
_IN_WORKER = False


def code_stamp() -> str:
    """What the served code is: the Python executable and every source file of the package (path,
    size, modification time). A worker serves a job only while this equals the stamp it took when
    it imported the package."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{package}\n".encode())
    for path in sorted(package.rglob("*")):
        if path.suffix in {".py", ".csv", ".yaml", ".json"} and "__pycache__" not in path.parts:
            st = path.stat()
            digest.update(f"{path.relative_to(package)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


OFF = frozenset({"off", "0", "false", "no"})


# ------------------------------------------------------------------------------------- starting it
def start(log: str | Path | None = None) -> str | None:
    """Start a warm worker for the jobs of this process (Snakemake's ``onstart`` on the local
    executor) and put its socket in ``MVL_WARM_WORKER``, which the jobs inherit; the socket path,
    or None when ``MVL_WARM_WORKER`` is ``off`` or no ``mvl`` is on PATH. The worker is the ``mvl``
    the jobs would run; it exits when this process does (at exit it is also told to)."""
    if os.environ.get(ENV, "").lower() in OFF or has_gpu():
        return None
    mvl = shutil.which("mvl")
    if mvl is None:
        return None
    try:
        folder = tempfile.mkdtemp(prefix="mvl-warm-")  # short (a socket path has ~100 characters) and private
    except OSError:  # no usable temporary folder: every job runs in its own process
        return None
    path = os.path.join(folder, "worker.sock")
    stderr = subprocess.DEVNULL
    if log is not None:
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            stderr = open(log, "ab")  # noqa: SIM115 - the worker's own lines (the jobs log to their own files)
        except OSError:  # a read-only project folder: the worker runs without its log
            stderr = subprocess.DEVNULL
    try:
        proc = subprocess.Popen([mvl, "warm-worker", "--socket", path, "--parent-pid", str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)  # the terminal's Ctrl-C goes to Snakemake, not to it
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    finally:
        if stderr is not subprocess.DEVNULL:
            stderr.close()
    os.environ[ENV] = path
    atexit.register(_stop, proc, folder)
    return path


def has_gpu() -> bool:
    """Whether this machine has an NVIDIA or AMD GPU (its device files), read without importing
    torch. There the worker stays off: CUDA cannot be used in a process forked from one in which
    anything touched it, and GPU jobs spend their time computing, not importing."""
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (nvidia.is_dir() and any(nvidia.iterdir())) or Path("/dev/nvidiactl").exists() or Path("/dev/kfd").exists()


def _stop(proc: subprocess.Popen, folder: str) -> None:
    if proc.poll() is None:
        proc.terminate()  # it finishes the jobs it runs, then exits
    shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------- client side
def run_in_worker(argv: list[str]) -> int | None:
    """Run ``mvl argv`` in the warm worker named by ``MVL_WARM_WORKER``; its exit status, or None when
    no worker takes the job (the caller then runs it itself)."""
    path = os.environ.get(ENV, "")
    if _IN_WORKER or not path or path.lower() in OFF or not argv or argv[0] not in VERBS:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
                              "stamp": code_stamp()}).encode()
        socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
        sock.sendall(request)
        sock.settimeout(ACCEPT_TIMEOUT_S)
        reader = sock.makefile("r", encoding="utf-8", newline="\n")
        first = reader.readline().split()
    except OSError:  # no worker, a dead one, or one that did not answer in time: run here
        sock.close()
        return None
    if not first or first[0] != "P":  # refused (another Python, changed code): run here
        sock.close()
        return None
    child = int(first[1])
    forward = lambda signum, frame: _signal_group(child, signum)  # noqa: E731
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    sock.settimeout(None)
    while True:
        try:
            line = reader.readline()
        except InterruptedError:  # pragma: no cover - retried by Python itself (PEP 475)
            continue
        if not line:
            print(f"mvl: the warm worker's job {child} ended without an exit status", file=sys.stderr)
            return 1
        parts = line.split()
        if parts and parts[0] == "X":
            return int(parts[1])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except OSError:
        pass


# ------------------------------------------------------------------------------------- worker side
def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10.0)
    data, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(data) != _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise OSError("malformed request")
    (length,) = _HEADER.unpack(data)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise OSError("request cut short")
        body += chunk
    return json.loads(body), fds


def _client_gone(conn: socket.socket) -> bool:
    """Whether the job's ``mvl`` hung up (it gave up waiting and runs the verb itself)."""
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.setblocking(True)  # the child's watcher blocks on it for as long as the job runs


def _child(conn: socket.socket, listener: socket.socket, siblings: list[socket.socket], request: dict,
           fds: list[int]) -> None:
    """Become the job: its process group, standard streams, directory, environment and umask; run
    the verb; send the exit status; exit. Never returns."""
    global _IN_WORKER
    _IN_WORKER = True
    code = 1
    try:
        listener.close()
        for other in siblings:  # the other jobs' connections are theirs alone
            other.close()
        os.setpgid(0, 0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # the job's TMPDIR (Snakemake's tmpdir resource), not the one the worker cached
        os.umask(int(request["umask"]))
        sys.argv = ["mvl", *request["argv"]]

        def watch() -> None:  # the job's mvl is gone (SIGKILL): so is its work
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
            os.killpg(0, signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
        from medvisionllama.cli import main

        try:
            code = int(main(list(request["argv"])) or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # what Python prints for an uncaught exception, and its status
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - the status must still be sent
            pass
        try:
            conn.sendall(f"X {code}\n".encode())
        except OSError:
            pass
        os._exit(code)


def preload() -> None:
    """Import :data:`PRELOAD` and the decoder-layer classes of the preset LLMs' families (importing
    transformers' modeling modules is most of an LLM run's start-up). A failed import is left to the
    verb that needs it, which imports (and reports) it itself."""
    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001
            pass
    try:
        from medvisionllama.llm.block import decoder_layer_class
        from medvisionllama.llm.registry import PRESET_CONFIGS

        for family in sorted({values["model_type"] for values in PRESET_CONFIGS.values()}):
            decoder_layer_class(family)
    except Exception:  # noqa: BLE001
        pass


def serve(path: str, *, parent: int | None = None, idle_exit_s: float = IDLE_EXIT_S) -> int:
    """Listen on ``path`` (a Unix socket), import :data:`PRELOAD`, and serve jobs until the parent
    process ``parent`` is gone (or SIGTERM, or ``idle_exit_s`` without a job) and no child is left."""
    started_by = os.getppid()
    parent = started_by if parent is None else parent
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # first: jobs that start while the imports run wait in the backlog
    os.chmod(path, 0o600)
    listener.listen(128)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is Snakemake's to handle
    started = time.monotonic()
    preload()
    stamp = code_stamp()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker {os.getpid()} ready on {path} (imports: "
          f"{time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
    children: dict[int, socket.socket] = {}
    last_job = time.monotonic()
    try:
        while True:
            _reap(children)
            if children:
                last_job = time.monotonic()
            gone = stop.is_set() or not _alive(parent, started_by) or time.monotonic() - last_job > idle_exit_s
            if gone:
                if listener.fileno() >= 0:
                    listener.close()
                    _unlink(path)
                if not children:
                    return 0
                time.sleep(0.1)
                continue
            ready, _, _ = select.select([listener], [], [], 0.2)
            if not ready:
                continue
            conn, _ = listener.accept()
            try:
                request, fds = _read_request(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            if request.get("stamp") != stamp or code_stamp() != stamp or _client_gone(conn):
                for fd in fds:
                    os.close(fd)
                try:
                    conn.sendall(b"R the code or the Python differ from the worker's\n")
                except OSError:
                    pass
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(conn, listener, list(children.values()), request, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            last_job = time.monotonic()
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} job {pid}: mvl {' '.join(request['argv'])[:300]}",
                  file=sys.stderr, flush=True)
            try:
                conn.sendall(f"P {pid}\n".encode())
            except OSError:
                pass
    finally:
        if listener.fileno() >= 0:
            listener.close()
            _unlink(path)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:  # a child killed by a signal sends nothing itself: the shell's 128 + signal
            conn.sendall(f"X {code if code >= 0 else 128 - code}\n".encode())
        except OSError:
            pass
        conn.close()


def _alive(pid: int, started_by: int) -> bool:
    if pid == started_by and os.getppid() != pid:  # reparented: the parent is gone (its pid may be reused)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mvl warm-worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", required=True, help="the Unix socket to listen on (jobs find it in MVL_WARM_WORKER)")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process (Snakemake) is gone; default: the process that started the worker")
    p.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S, help="seconds without a job before exiting")
    args = p.parse_args(argv)
    return serve(args.socket, parent=args.parent_pid, idle_exit_s=args.idle_exit)
