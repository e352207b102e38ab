"""``mvl config``: write the pipeline's resolved configuration to a file.

Snakemake validates ``config.yaml`` (with any ``--configfile`` layered on top) and fills the
schema's defaults; this command saves that resolved configuration (or the part of it one stage
reads: the workflow writes ``results/config.yaml`` whole and ``results/config/{stage}.yaml`` per
costly stage), so that later stages (``mvl train``, ``mvl evaluate``, ``mvl lineage``, ``mvl
tables``, ``mvl figures``) and people reading the results see exactly the settings the pipeline
ran with, not only what one of the YAML files said.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from medvisionllama import __version__
from medvisionllama.errors import InputError
from medvisionllama.experiments import experiment_specs
from medvisionllama.io_utils import write_text_atomic


def write_resolved_config(values: dict[str, Any], output: Path) -> Path:
    """Check that ``values`` expand into experiments, then write them to ``output`` as YAML."""
    if not isinstance(values, dict):
        raise InputError("the resolved configuration must be a mapping")
    experiment_specs(values)  # fails here, naming the experiment, rather than in a later stage
    header = f"# Resolved configuration of the medvisionllama pipeline (version {__version__}).\n"
    write_text_atomic(output, header + yaml.safe_dump(values, sort_keys=False, default_flow_style=False))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl config", description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", required=True, help="the configuration as a JSON object")
    parser.add_argument("--output", required=True, type=Path, help="YAML file to write")
    args = parser.parse_args(argv)
    try:
        values = json.loads(args.values)
    except json.JSONDecodeError as exc:
        raise InputError(f"--values is not valid JSON: {exc}") from None
    print(write_resolved_config(values=values, output=args.output))
    return 0
