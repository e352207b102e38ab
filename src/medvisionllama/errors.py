"""Errors the user can act on."""

from __future__ import annotations


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
