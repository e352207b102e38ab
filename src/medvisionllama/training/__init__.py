"""Training of one run.

Public names are re-exported lazily: :func:`train_run` and :class:`NonFiniteLossError` from
:mod:`.train`, :func:`load_checkpoint` and :func:`save_checkpoint` from :mod:`.checkpoint`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_run": "train", "NonFiniteLossError": "train",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
