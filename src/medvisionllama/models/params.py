"""``mvl params``: parameter counts of model variants, built on the ``meta`` device.

Nothing is allocated and no weights are read, so the 7-9 B models' layers cost nothing to count.
The frozen layer's size comes from the registry's real configs; the paper's numbers (Tables 3-4)
are printed beside ours, not forced: one layer of Gemma-2-9B (≈198 M) or Yi-1.5-9B (≈173 M) does
not match the paper's 264.25 M and 202.39 M.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path
from medvisionllama.llm.registry import PAPER_PARAMS_M, get_spec
from medvisionllama.models.config import ModelConfig
from medvisionllama.models.medvisionllama import build_model
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION, LLM_NAMES, parse_model_name, parse_size

DEFAULT_MODELS = ["vit", "mlp", *LLM_NAMES]
FIELDS = ["model", "attention", "img_size", "total_params", "trainable_params", "frozen_params", "total_params_m", "paper_params_m"]


@dataclasses.dataclass(frozen=True)
class ParamCount:
    """One variant's parameter counts (frozen = the LLM layer)."""

    model: str
    attention: str
    img_size: str
    total_params: int
    trainable_params: int
    frozen_params: int
    paper_params_m: float | None

    def row(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["total_params_m"] = round(self.total_params / 1e6, 2)
        data["paper_params_m"] = "" if self.paper_params_m is None else self.paper_params_m
        return data


def paper_params_m(model: str) -> float | None:
    """The paper's count for ``model`` (hybrid attention), or None."""
    name = parse_model_name(model)
    return PAPER_PARAMS_M.get(model) if name.llm is None else get_spec(name.llm).paper_params_m


def count_variants(
    models: list[str],
    *,
    in_channels: int = 4,
    num_classes: int = 4,
    img_size: tuple[int, int, int] = (64, 64, 40),
    attention: str = DEFAULT_ATTENTION,
    overrides: dict[str, object] | None = None,
) -> list[ParamCount]:
    """Build each model on ``meta`` and count its parameters (other settings: ModelConfig defaults
    updated with ``overrides``)."""
    rows = []
    for model in models:
        config = ModelConfig(
            model=model, in_channels=in_channels, num_classes=num_classes, img_size=tuple(img_size),
            attention=attention, **(overrides or {}),
        )
        total, trainable = build_model(config, device="meta", load_weights=False).parameter_counts()
        rows.append(
            ParamCount(
                model=model, attention=attention, img_size="x".join(map(str, config.img_size)),
                total_params=total, trainable_params=trainable, frozen_params=total - trainable,
                paper_params_m=paper_params_m(model) if attention.startswith("hybrid") else None,
            )
        )
    return rows


def write_csv(rows: list[ParamCount], output: str | os.PathLike[str]) -> None:
    """Write ``rows`` as CSV (columns FIELDS), atomically."""
    with atomic_path(output, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(row.row() for row in rows)


def format_table(rows: list[ParamCount]) -> str:
    header = f"{'model':<20} {'attention':<19} {'img_size':<10} {'total':>13} {'trainable':>11} {'M':>8} {'paper M':>8}"
    lines = [header]
    for r in rows:
        paper = "" if r.paper_params_m is None else f"{r.paper_params_m:.2f}"
        lines.append(
            f"{r.model:<20} {r.attention:<19} {r.img_size:<10} {r.total_params:>13,} {r.trainable_params:>11,} "
            f"{r.total_params / 1e6:>8.2f} {paper:>8}"
        )
    return "\n".join(lines)


def _parse_size(text: str) -> tuple[int, int, int]:
    size = parse_size(text)
    if size is None:
        raise InputError(f"--img-size {text!r} must look like 64x64x40, not 'full'")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl params", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="model names (default: %(default)s)")
    parser.add_argument("--attention", default=DEFAULT_ATTENTION, choices=ATTENTIONS)
    parser.add_argument("--img-size", default="64x64x40", help="XxYxZ (default: %(default)s)")
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--output", help="also write the counts to this CSV file")
    args = parser.parse_args(argv)
    rows = count_variants(
        args.models, in_channels=args.in_channels, num_classes=args.num_classes,
        img_size=_parse_size(args.img_size), attention=args.attention,
    )
    print(format_table(rows))
    if args.output:
        write_csv(rows, args.output)
    return 0
