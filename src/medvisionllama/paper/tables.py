"""``mvl tables``: the paper's tables rebuilt from the long table, beside the published numbers.

For each experiment of the config (see :mod:`medvisionllama.paper.spec`) it writes, into the
output folder (replaced as a whole, atomically), the files its table object names
(:mod:`medvisionllama.paper.outputs`: layout, caption, metrics, claims):

* ``{name}.csv|.md|.tex``: the table in the paper's layout, ``mean ± std`` over test cases
  (over several seeds: mean of the seed means ± std of all cases pooled; see
  :mod:`medvisionllama.paper.summary`). Parameters in millions are ``params_total`` of
  ``run.json`` (the frozen LLM block included), training time is ``train_seconds`` / 3600.
* ``{name}_comparison.csv|.md|.tex``: published vs reproduced value and difference per cell.
* ``{name}_claims.csv|.md``: the paper's claims tested with paired tests on per-case scores.

Every file starts with the provenance header (CSV: ``# `` comment lines) saying how the
configuration differs from the paper's, read from the (resolved) config the command is given:
``data.source``, ``training.batch_size`` and ``training.lr``; the epochs from the runs'
``history.csv``. ``--metrics-json`` also writes the DVC metrics summary. Each experiment's scores
are computed once and shared by all its outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from medvisionllama.experiments import load_config, load_experiments
from medvisionllama.io_utils import atomic_dir, write_text_atomic
from medvisionllama.paper.aggregate import read_long
from medvisionllama.paper.compare import claims, comparison_values, provenance_header
from medvisionllama.paper.metrics_json import write_metrics_json
from medvisionllama.paper.outputs.base import short_task
from medvisionllama.paper.published import METRIC_LABELS, model_label
from medvisionllama.paper.render import fmt, to_html, to_markdown, write_all, write_csv
from medvisionllama.paper.summary import ExperimentScores, score_experiment


def build_table(scored: ExperimentScores) -> pd.DataFrame:
    """The reproduced table of an experiment in the paper's layout (strings): its table object's
    layout, filled from the experiment's scores (:func:`score_experiment`)."""
    return scored.spec.table.layout(scored.spec, scored.cell)


def comparison_table(values: pd.DataFrame) -> pd.DataFrame:
    """Readable form of :func:`comparison_values`: one row per cell, published | reproduced | difference."""
    rows = []
    for _, v in values.iterrows():
        d = 2 if v["metric"] != "hd95" else 1
        rows.append({"Task": short_task(v["task"]), "Model": model_label(v["model"]),
                     "Paper model": model_label(v["paper_model"]), "Attention": v["attention"], "Size": v["size"],
                     "Metric": METRIC_LABELS[v["metric"]],
                     "Published": fmt(v["published_mean"], v["published_std"], d),
                     "Reproduced": fmt(v["reproduced_mean"], v["reproduced_std"], d),
                     "Difference": "n/a" if pd.isna(v["difference"]) else f"{v['difference']:+.{d}f}"})
    return pd.DataFrame(rows).set_index("Task")


def claims_table(c: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "Claim": c["claim"], "Source": c["claim_source"],
        "Published": [f"{a:.2f} vs {b:.2f}" if pd.notna(a) and pd.notna(b) else "n/a"
                      for a, b in zip(c["published_a"], c["published_b"])],
        "Reproduced": [f"{a:.3f} vs {b:.3f}" for a, b in zip(c["reproduced_a"], c["reproduced_b"])],
        "Test": c["test"], "p": ["n/a" if pd.isna(p) else f"{p:.3g}" for p in c["p_value"]],
        "Holds": c["claim_holds"]})
    return out.set_index("Claim")


def config_provenance(config: dict[str, Any]) -> dict[str, Any]:
    """The provenance a config states: ``data_source``, ``batch_size``, ``learning_rate`` (each None
    where the config leaves it out, e.g. a config of experiments only)."""
    data, training = config.get("data") or {}, config.get("training") or {}
    return {"data_source": data.get("source"), "batch_size": training.get("batch_size"),
            "learning_rate": training.get("lr"), "epochs": None, "notes": []}


def default_provenance(scored: ExperimentScores, provenance: dict[str, Any]) -> dict[str, Any]:
    """``provenance`` with ``epochs`` filled from the runs (rows of history.csv) when not given."""
    prov = dict(provenance)
    if prov.get("epochs") is None:
        epochs = sorted(set(scored.scores["epochs"].astype(int)))
        if len(epochs) == 1:
            prov["epochs"] = epochs[0]
        elif epochs:
            prov.setdefault("notes", []).append(f"runs trained for different numbers of epochs: {epochs}")
            prov["epochs"] = "/".join(map(str, epochs))
    return prov


def write_experiment(scored: ExperimentScores, outdir: Path, provenance: dict[str, Any]) -> list[Path]:
    """Write one experiment's table, comparison and claims into ``outdir`` (the names its table
    object gives)."""
    spec, table = scored.spec, scored.spec.table
    files = table.files(spec.name)
    header = provenance_header(spec, default_provenance(scored, provenance))
    stem = {kind: outdir / names[0].rsplit(".", 1)[0] for kind, names in files.items()}
    paths = write_all(build_table(scored), stem["table"], f"{table.caption}; reproduced", header)
    paths += write_all(comparison_table(comparison_values(scored)), stem["comparison"],
                       f"{table.caption}: published vs reproduced", header)
    c = claims(scored)
    title = f"{table.title}: the paper's claims, tested"
    claims_csv, claims_md, claims_html = (outdir / name for name in files["claims"])
    write_csv(c, claims_csv, header, index=False)
    write_text_atomic(claims_md, f"**{title}**\n\n" + to_markdown(claims_table(c), header))
    write_text_atomic(claims_html, to_html(claims_table(c), title, header))
    return paths + [claims_csv, claims_md, claims_html]


def write_tables(long_path: str | Path, config: str | Path, outdir: str | Path, experiments: list[str] | None = None,
                 notes: list[str] | None = None, metrics_json: str | Path | None = None) -> list[Path]:
    """All experiments' tables into ``outdir`` (replaced atomically); optionally the DVC metrics.
    ``config``: the pipeline's (resolved) config file: its experiments and its provenance."""
    long = read_long(long_path)
    specs = load_experiments(config, experiments)
    provenance = config_provenance(load_config(config))
    provenance["notes"] = list(notes or [])
    scored = [score_experiment(long, spec) for spec in specs]
    outdir = Path(outdir)
    written: list[Path] = []
    with atomic_dir(outdir) as tmp:
        for experiment in scored:
            written += [outdir / p.name for p in write_experiment(experiment, tmp, provenance)]
    if metrics_json is not None:
        write_metrics_json(scored, metrics_json)
        written.append(Path(metrics_json))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", required=True, help="long table from `mvl aggregate`")
    parser.add_argument("--config", required=True,
                        help="pipeline config (YAML; the resolved results/config.yaml): experiments and provenance")
    parser.add_argument("--outdir", required=True, help="folder to write (replaced as a whole)")
    parser.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    parser.add_argument("--note", action="append", default=[], help="extra provenance line (repeatable)")
    parser.add_argument("--metrics-json", default=None, help="also write the DVC metrics summary here")
    args = parser.parse_args(argv)
    written = write_tables(long_path=args.long, config=args.config, outdir=args.outdir, experiments=args.experiment,
                           notes=args.note, metrics_json=args.metrics_json)
    print(f"tables: {len(written)} files -> {args.outdir}")
    return 0
