"""Metrics, evaluation of a run, and inference on new images.

Public names are re-exported lazily (``mvl split`` should not pay for importing torch):
:class:`SegmentationMetrics` and the functional metrics from :mod:`.metrics`,
:func:`evaluate_run` from :mod:`.evaluate`, :func:`predict_files` from :mod:`.predict`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "METRIC_NAMES": "metrics", "SegmentationMetrics": "metrics", "case_metrics": "metrics",
    "confusion_counts": "metrics", "foreground_dice": "metrics", "hd95": "metrics",
    "scores_from_counts": "metrics", "evaluate_run": "evaluate", "predict_files": "predict",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
