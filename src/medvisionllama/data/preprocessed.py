"""The reader of ``mvl preprocess``'s output (:mod:`medvisionllama.data.preprocess`, its writer):
a preprocessed task folder as the trainer and the evaluator see it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvisionllama.data.preprocess import load_preprocessed_case, manifest_case, read_manifest
from medvisionllama.errors import InputError
from medvisionllama.vocabulary import parse_size


@dataclass(frozen=True)
class PreprocessedInfo:
    """``manifest.json`` of ``results/preprocessed/{task}/{size}/`` plus the folder it lives in."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def size(self) -> str:
        return str(self.manifest["size"])

    @property
    def size_tuple(self) -> tuple[int, int, int] | None:
        """``(X, Y, Z)`` of every volume, or ``None`` for ``full`` (each case keeps its grid)."""
        return parse_size(self.size)

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def num_channels(self) -> int:
        return int(self.manifest["num_channels"])

    @property
    def class_names(self) -> dict[int, str]:
        """Label value -> name, background included, sorted by value."""
        return {int(k): str(v) for k, v in sorted(self.manifest["labels"].items(), key=lambda kv: int(kv[0]))}

    @property
    def num_classes(self) -> int:
        return max(self.class_names) + 1

    @property
    def case_ids(self) -> list[str]:
        return [c["case_id"] for c in self.manifest["cases"]]

    def case_meta(self, case_id: str) -> dict[str, Any]:
        return manifest_case(self.manifest, case_id)

    def load_case(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        return load_preprocessed_case(self.folder, case_id)

    def to_checkpoint(self) -> dict[str, Any]:
        """What inference on a new image needs to preprocess it like the training data."""
        return {
            "task": self.task, "size": self.size, "kind": self.kind, "num_channels": self.num_channels,
            "num_classes": self.num_classes, "labels": {str(k): v for k, v in self.class_names.items()},
            "modality": self.manifest.get("modality"),
        }


def read_preprocessed(folder: str | Path) -> PreprocessedInfo:
    """Read ``{folder}/manifest.json`` (raises :class:`InputError` naming it when it is unusable)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest["cases"]:
        raise InputError(f"{folder / 'manifest.json'}: lists no cases")
    return PreprocessedInfo(folder, manifest)
