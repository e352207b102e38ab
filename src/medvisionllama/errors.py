"""Errors the user can act on."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-blank line of ``exc``'s message (at most ``limit`` characters), or its type's
    name: what a one-line error says of a library's multi-line one."""
    line = next((text.strip() for text in str(exc).splitlines() if text.strip()), type(exc).__name__)
    return line[:limit]


class InputError(ValueError):
    """Bad input: a file, a config value or an argument the user must fix.

    The message names the offending file or setting and says what is wrong with it. The command
    line prints it as one line (no traceback) and exits with status 2.
    """


class ExternalError(RuntimeError):
    """A failure outside the program that the user can fix or retry: a download that cannot
    complete (an HTTP error, a checksum mismatch, a broken archive).

    Like :class:`InputError`, the command line prints it as one line and exits with status 2.
    """
