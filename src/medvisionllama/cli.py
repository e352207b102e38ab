"""``mvl``: one command, one verb per pipeline stage.

Each verb lives in its own module, which defines ``main(argv) -> int``: it parses arguments and
calls that module's typed function by keyword. Modules are imported only when their verb runs (a
deliberate deferral: ``mvl split`` does not pay for importing torch).

Exit status: 0 done; 2 an error the user can fix, printed as one line ``mvl <verb>: error: ...``
(bad input, a failed download, and ``OSError``s such as a full disk, a read-only folder or a
missing permission, which name the path and the cause); 1 an unexpected error (a bug: traceback).
"""

from __future__ import annotations

import importlib
import sys

from medvisionllama import __version__
from medvisionllama.errors import ExternalError, InputError
from medvisionllama.warm import run_in_worker

#: verb -> (module, one-line help). The module defines ``main(argv: list[str]) -> int``.
VERBS: dict[str, tuple[str, str]] = {
    "synthesize": ("medvisionllama.data.synthesize", "write synthetic tasks in the MSD layout"),
    "download": ("medvisionllama.data.download", "download and verify MSD tasks"),
    "split": ("medvisionllama.data.split", "split a task's cases 70/20/10 (seeded)"),
    "preprocess": ("medvisionllama.data.preprocess", "reorient, resize and normalise a task"),
    "fingerprint": ("medvisionllama.data.fingerprint", "content hashes of a task folder (written when they change)"),
    "config": ("medvisionllama.config", "write the resolved pipeline configuration"),
    "lineage": ("medvisionllama.lineage", "record data lineage with DVC (dvc add / dvc commit)"),
    "extract-layer": ("medvisionllama.llm.extract", "save one LLM decoder layer as a small safetensors file"),
    "params": ("medvisionllama.models.params", "count parameters of model variants (meta device)"),
    "train": ("medvisionllama.training.train", "train one run"),
    "evaluate": ("medvisionllama.evaluation.evaluate", "score one run on its test split"),
    "predict": ("medvisionllama.evaluation.predict", "segment NIfTI files with a checkpoint"),
    "aggregate": ("medvisionllama.paper.aggregate", "collect run metrics into one long table"),
    "tables": ("medvisionllama.paper.tables", "write the paper's tables"),
    "figures": ("medvisionllama.paper.figures", "draw the paper's figures"),
    "share": ("medvisionllama.share", "share the results tables and figures need (DVC remote or archive)"),
    "regenerate": ("medvisionllama.regenerate", "rebuild every table, figure and the report from shared results"),
    "preflight": ("medvisionllama.cluster.preflight", "check every cluster job against the SLURM partitions"),
    "warm-worker": ("medvisionllama.warm", "serve local pipeline jobs from one process that imported torch once"),
}


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["usage: mvl <verb> [options]   (mvl <verb> --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def describe_os_error(exc: OSError) -> str:
    """``"<path>: <cause>"`` of an ``OSError`` (no space left, read-only, permission denied ...)."""
    cause = exc.strerror or str(exc)
    if exc.filename is None:
        return cause
    path = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{path}: {cause}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"mvl: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    status = run_in_worker([verb, *rest])  # a local pipeline's warm worker (medvisionllama.warm), if any
    if status is not None:
        return status
    module = importlib.import_module(VERBS[verb][0])
    try:
        return int(module.main(rest) or 0)
    except (InputError, ExternalError) as exc:
        print(f"mvl {verb}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a missing permission: the user's to fix
        print(f"mvl {verb}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
