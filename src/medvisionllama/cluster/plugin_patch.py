"""A fix the project carries for snakemake-executor-plugin-slurm (2.8.0, the newest release).

The plugin reads each job's state with ``sacct -X --parsable2 --format=JobIdRaw,State`` and
compares it with exact words: ``COMPLETED``, ``CANCELLED``, ``TIMEOUT``, ``OUT_OF_MEMORY``,
``NODE_FAIL`` and so on. SLURM writes a cancelled job's state as ``CANCELLED by <uid>`` (``scancel``
by the user, an admin or a limit), which matches none of them, so the plugin takes the job for
still running and Snakemake waits for it forever, printing nothing. The old Snakemake-Profiles/slurm
status script had the same bug (fixed there in 2019:
https://github.com/Snakemake-Profiles/slurm/pull/22); the plugin's own tracker has no issue for it
yet (docs/slurm.md, section 4, has the text to file).

The fix: the plugin's status query (``snakemake_executor_plugin_slurm.query_job_status``, a module
global its ``check_active_jobs`` calls) is wrapped so that each state it returns is a
:class:`SlurmState`: a string that prints in full (``CANCELLED by 0 (root)``: the error message
names who cancelled) and compares equal to its first word (``CANCELLED``), so the plugin's own
checks (``status == "COMPLETED"``, ``status in fail_stati``) see the state SLURM means and report
the job as failed, with the reason and its SLURM log, at the next status check.

:func:`patch_slurm_status` is called by the Snakefile; it does nothing unless Snakemake has loaded
the plugin, and nothing twice. It stays harmless once a plugin release compares the first word
itself (a plain state equals its own base); drop it then.

A second, smaller wrap keeps each attempt's error (:func:`patch_slurm_errors`): the rules write
their log with ``> {log}``, so a retry overwrites attempt 1's log, and a SLURM job's own log holds
only Snakemake's report, not the program's error. When the plugin reports a failed job, each of
its rule logs written by that job is copied to ``<log stem>.attempt<N><suffix>`` beside it, and
the error message gains one line per attempt so far, with the log's last line (the error) and the
copy's path: when attempt 2 fails, attempt 1's error is shown with it. For a group job (a
run's train_run and evaluate_run), whose error report in Snakemake 9.27 drops the executor's
message, the message (SLURM state, reason, attempts) is printed by the wrap itself.
"""

from __future__ import annotations

import functools
import pwd
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PLUGIN = "snakemake_executor_plugin_slurm"
_STATE = re.compile(r"[A-Z_]+")


def _user(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError, OverflowError):
        return ""


class SlurmState(str):
    """A job state as sacct prints it (``CANCELLED by 0``), equal to its base state (``CANCELLED``).

    ``base`` is the leading upper-case word; ``str(state)`` keeps the whole text, with the user
    name after a ``by <uid>`` (``CANCELLED by 0 (root)``)."""

    base: str

    def __new__(cls, text: str) -> "SlurmState":
        text = str(text).strip()
        match = _STATE.match(text)
        base = match.group(0) if match else text
        by = re.fullmatch(r"(.*\bby )(\d+)", text)
        shown = f"{text} ({_user(by.group(2))})" if by and _user(by.group(2)) else text
        state = super().__new__(cls, shown)
        state.base = base
        return state

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.base == (other.base if isinstance(other, SlurmState) else other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(self.base)


def normalise(states: dict[str, str] | None) -> dict[str, str] | None:
    """The plugin's ``{job id: state}`` with every state a :class:`SlurmState`."""
    if states is None:
        return None
    return {job: SlurmState(state) for job, state in states.items()}


def patch_slurm_status(plugin: Any = None) -> bool:
    """Wrap the plugin's status query (see the module docstring). ``plugin``: the plugin module
    (default: the loaded one; nothing happens when Snakemake has not loaded it). True when the
    query is wrapped (now or before)."""
    plugin = plugin if plugin is not None else sys.modules.get(PLUGIN)
    query = getattr(plugin, "query_job_status", None)
    if query is None:
        return False
    if getattr(query, "_mvl_patched", False):
        return True

    @functools.wraps(query)
    async def query_job_status(*args: Any, **kwargs: Any) -> Any:
        states, seconds = await query(*args, **kwargs)
        return normalise(states), seconds

    query_job_status._mvl_patched = True  # type: ignore[attr-defined]
    plugin.query_job_status = query_job_status
    return True


# --- each attempt's log ------------------------------------------------------------------------
def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log (a program's error comes last), at most ``limit`` chars."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - 8192))
            lines = [li.strip() for li in stream.read().decode("utf-8", "replace").splitlines() if li.strip()]
    except OSError:
        return ""
    text = lines[-1] if lines else "(empty log)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def keep_attempt_logs(job: Any, since: float, history: dict[str, list[str]]) -> list[str]:
    """Copy the rule logs that ``job`` (a Snakemake job or group job) wrote after ``since`` (its
    submission) to ``<stem>.attempt<N><suffix>``; return one line per attempt so far of each log
    (``history``: log path -> lines of earlier attempts, kept by the caller)."""
    attempt = int(getattr(job, "attempt", 1) or 1)
    members = list(getattr(job, "jobs", None) or [job])
    lines: list[str] = []
    for member in sorted(members, key=lambda m: m.rule.name != "train_run"):
        for log in getattr(member, "log", []) or []:
            path = Path(str(log))
            try:  # written by this job (an empty log is one Snakemake made for a rule that never ran)
                stat = path.stat()
                fresh = path.is_file() and stat.st_size > 0 and stat.st_mtime >= since - 1
            except OSError:
                fresh = False
            earlier = history.get(str(path), [])
            if not fresh:
                lines.extend(earlier)
                continue
            copy = path.with_name(f"{path.stem}.attempt{attempt}{path.suffix}")
            try:
                shutil.copyfile(path, copy)
            except OSError:
                copy = path
            line = f"attempt {attempt} of {member.rule.name}: {last_line(copy)} (log: {copy})"
            history[str(path)] = earlier + [line]
            lines.extend(earlier + [line])
    return lines


def patch_slurm_errors(plugin: Any = None) -> bool:
    """Wrap the plugin executor's ``report_job_submission`` (to note when each job went) and
    ``report_job_error`` (to keep and show each attempt's log); see the module docstring."""
    plugin = plugin if plugin is not None else sys.modules.get(PLUGIN)
    executor = getattr(plugin, "Executor", None)
    if executor is None:
        return False
    if getattr(executor, "_mvl_patched_errors", False):
        return True
    submitted: dict[str, float] = {}
    history: dict[str, list[str]] = {}
    report_submission, report_error = executor.report_job_submission, executor.report_job_error

    def report_job_submission(self: Any, job_info: Any) -> Any:
        submitted[str(job_info.external_jobid)] = time.time()
        return report_submission(self, job_info)

    def report_job_error(self: Any, job_info: Any, msg: Any = None, **kwargs: Any) -> Any:
        try:
            since = submitted.pop(str(job_info.external_jobid), 0.0)
            lines = keep_attempt_logs(job_info.job, since, history)
        except Exception as exc:  # never let the bookkeeping hide the job's own error
            lines = [f"(could not keep the attempt's log: {exc})"]
        if lines:
            msg = "\n".join([str(msg) if msg else "the job failed", *lines])
        if msg and getattr(job_info.job, "jobs", None) is not None:
            # Snakemake's report of a failed group job drops the executor's message (the SLURM
            # state and reason): print it here, once
            text = str(msg).replace("\n", "\n    ")
            self.logger.error(f"Group job {getattr(job_info.job, 'groupid', '')} (SLURM job {job_info.external_jobid}): {text}")
        return report_error(self, job_info, msg, **kwargs)

    executor.report_job_submission = report_job_submission
    executor.report_job_error = report_job_error
    executor._mvl_patched_errors = True
    return True
