"""``mvl tables``: the paper's tables rebuilt from the long table, beside the published numbers.

For each experiment of the config (see :mod:`medvisionllama.paper.spec`) it writes, into the
output folder (replaced as a whole, atomically):

* ``{name}.csv|.md|.tex``: the table in the paper's layout, ``mean ± std`` over test cases
  (over several seeds: mean of the seed means ± std of all cases pooled; see
  :mod:`medvisionllama.paper.summary`). Parameters in millions are ``params_total`` of
  ``run.json`` (the frozen LLM block included), training time is ``train_seconds`` / 3600.
* ``{name}_comparison.csv|.md|.tex``: published vs reproduced value and difference per cell.
* ``{name}_claims.csv|.md``: the paper's claims tested with paired tests on per-case scores.

Every file starts with the provenance header (CSV: ``# `` comment lines) saying how the
configuration differs from the paper's. ``--metrics-json`` also writes the DVC metrics summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from medvisionllama.io_utils import atomic_dir, write_text_atomic
from medvisionllama.paper.aggregate import read_long
from medvisionllama.paper.compare import claims, comparison_values, provenance_header
from medvisionllama.paper.metrics_json import write_metrics_json
from medvisionllama.paper.published import ATTENTION_LABELS, METRIC_LABELS, TABLES, model_label
from medvisionllama.paper.outputs import experiment_outputs  # noqa: F401  (re-exported)
from medvisionllama.paper.render import fmt, to_html, to_markdown, write_all, write_csv
from medvisionllama.experiments import load_experiments
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.paper.summary import case_scores, lookup, summarize
from medvisionllama.vocabulary import PAPER_METRICS as METRICS

CAPTIONS: dict[str, str] = {
    "main": "Metric scores of the ViT and the ViT with an LLM block per task (paper Table 2)",
    "llm_comparison": "Dice per task for the ViT and the ViT with each LLM block (paper Table 4)",
    "capacity": "Hybrid (HA) vs spatial (SA) attention, and the LLM block vs an MLP (paper Table 3)",
    "attention_strategy": "Hybrid attention strategies: parameters and Dice (paper Appendix Table 1)",
    "input_size": "Training time (h) and Dice per input size (paper Appendix Table 2)",
    "complexity": "Parameters, Dice and HD95 per model (paper Appendix Table 3)",
}


def _decimals(metric: str) -> int:
    return 1 if metric == "hd95" else 2


def _short(task: str) -> str:
    return task.split("_", 1)[0]


def _cell(row: pd.Series, metric: str) -> str:
    return fmt(row[f"{metric}_mean"], row[f"{metric}_std"], _decimals(metric))


def _params(row: pd.Series) -> str:
    return fmt(row["params_total"] / 1e6)


def _hours(seconds: float) -> str:
    """Training time in hours, as the paper gives it (two decimals); below 0.1 h (demo runs) in
    seconds or minutes with the unit, since 0.00 h would hide the comparison."""
    hours = seconds / 3600.0
    if pd.isna(hours) or hours >= 0.1:
        return fmt(hours)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def build_table(long: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """The reproduced table of ``spec`` in the paper's layout (strings)."""
    scores = case_scores(long, spec)
    s = summarize(scores, list(METRICS))
    att, size = spec.attention[0], spec.sizes[0]
    if spec.kind == "main":
        columns = pd.MultiIndex.from_tuples([(_short(t), model_label(m)) for t in spec.tasks for m in spec.models])
        data = [[_cell(lookup(s, t, m, att, size), metric) for t in spec.tasks for m in spec.models] for metric in METRICS]
        return pd.DataFrame(data, index=pd.Index([METRIC_LABELS[m] for m in METRICS], name="Metric"), columns=columns)
    if spec.kind == "llm_comparison":
        index = ["Params (M)"] + [_short(t) for t in spec.tasks]
        data = {model_label(m): [_params(lookup(s, spec.tasks[0], m, att, size))]
                + [_cell(lookup(s, t, m, att, size), "dice") for t in spec.tasks] for m in spec.models}
        return pd.DataFrame(data, index=pd.Index(index, name="Task"))
    if spec.kind == "capacity":
        rows = []
        for run in dict.fromkeys((r.model, r.attention) for r in spec.required_runs()):
            model, attention = run
            first = lookup(s, spec.tasks[0], model, attention, size)
            row = {"Model": model_label(model), "Params (M)": _params(first),
                   "HA": "×" if attention == "spatial" else "✓", "SA": "✓" if attention == "spatial" else "×"}
            row.update({_short(t): _cell(lookup(s, t, model, attention, size), "dice") for t in spec.tasks})
            rows.append(row)
        return pd.DataFrame(rows).set_index("Model")
    if spec.kind == "attention_strategy":
        rows = []
        for model in spec.models:
            for attention in spec.attention:
                row = {"Attention Strategy": ATTENTION_LABELS[attention]}
                if len(spec.models) > 1:
                    row["Model"] = model_label(model)
                row["Params (M)"] = _params(lookup(s, spec.tasks[0], model, attention, size))
                row.update({f"{_short(t)} Dice": _cell(lookup(s, t, model, attention, size), "dice") for t in spec.tasks})
                rows.append(row)
        return pd.DataFrame(rows).set_index("Attention Strategy")
    if spec.kind == "input_size":
        columns = pd.MultiIndex.from_tuples([(sz.replace("x", "×"), k) for sz in spec.sizes for k in ("TT", "DSC")])
        rows, index = [], []
        for task in spec.tasks:
            for model in spec.models:
                cells = []
                for sz in spec.sizes:
                    row = lookup(s, task, model, att, sz)
                    cells += [_hours(row["train_seconds"]), _cell(row, "dice")]
                rows.append(cells)
                index.append(model_label(model) if len(spec.tasks) == 1 else f"{_short(task)} {model_label(model)}")
        return pd.DataFrame(rows, index=pd.Index(index, name="Model"), columns=columns)
    if spec.kind == "complexity":
        rows = []
        for model in spec.models:
            row = {"Model": model_label(model), "Params (M)": _params(lookup(s, spec.tasks[0], model, att, size))}
            for t in spec.tasks:
                row[f"{_short(t)} Dice"] = _cell(lookup(s, t, model, att, size), "dice")
                row[f"{_short(t)} HD95"] = _cell(lookup(s, t, model, att, size), "hd95")
            rows.append(row)
        return pd.DataFrame(rows).set_index("Model")
    raise AssertionError(spec.kind)  # validated by ExperimentSpec


def comparison_table(values: pd.DataFrame) -> pd.DataFrame:
    """Readable form of :func:`comparison_values`: one row per cell, published | reproduced | difference."""
    rows = []
    for _, v in values.iterrows():
        d = 2 if v["metric"] != "hd95" else 1
        rows.append({"Task": _short(v["task"]), "Model": model_label(v["model"]),
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


def default_provenance(long: pd.DataFrame, spec: ExperimentSpec, provenance: dict[str, Any]) -> dict[str, Any]:
    """``provenance`` with ``epochs`` filled from the runs (rows of history.csv) when not given."""
    prov = dict(provenance)
    if prov.get("epochs") is None:
        epochs = sorted(set(case_scores(long, spec)["epochs"].astype(int)))
        if len(epochs) == 1:
            prov["epochs"] = epochs[0]
        elif epochs:
            prov.setdefault("notes", []).append(f"runs trained for different numbers of epochs: {epochs}")
            prov["epochs"] = "/".join(map(str, epochs))
    return prov


def write_experiment(long: pd.DataFrame, spec: ExperimentSpec, outdir: Path, provenance: dict[str, Any]) -> list[Path]:
    """Write one experiment's table, comparison and claims into ``outdir``."""
    header = provenance_header(spec, default_provenance(long, spec, provenance))
    caption = CAPTIONS[spec.kind]
    paths = write_all(build_table(long, spec), outdir / spec.name, f"{caption}; reproduced", header)
    values = comparison_values(long, spec)
    paths += write_all(comparison_table(values), outdir / f"{spec.name}_comparison",
                       f"{caption}: published vs reproduced", header)
    c = claims(long, spec)
    write_csv(c, outdir / f"{spec.name}_claims.csv", header, index=False)
    title = f"{TABLES[spec.paper_table]}: the paper's claims, tested"
    write_text_atomic(outdir / f"{spec.name}_claims.md", f"**{title}**\n\n" + to_markdown(claims_table(c), header))
    write_text_atomic(outdir / f"{spec.name}_claims.html", to_html(claims_table(c), title, header))
    return paths + [outdir / f"{spec.name}_claims.{ext}" for ext in ("csv", "md", "html")]


def write_tables(long_path: str | Path, config: str | Path, outdir: str | Path, experiments: list[str] | None = None,
                 provenance: dict[str, Any] | None = None, metrics_json: str | Path | None = None) -> list[Path]:
    """All experiments' tables into ``outdir`` (replaced atomically); optionally the DVC metrics."""
    long = read_long(long_path)
    specs = load_experiments(config, experiments)
    outdir = Path(outdir)
    written: list[Path] = []
    with atomic_dir(outdir) as tmp:
        for spec in specs:
            written += [outdir / p.name for p in write_experiment(long, spec, tmp, provenance or {})]
    if metrics_json is not None:
        write_metrics_json(long, specs, metrics_json)
        written.append(Path(metrics_json))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", required=True, help="long table from `mvl aggregate`")
    parser.add_argument("--config", required=True, help="pipeline config (YAML) with an 'experiments:' key")
    parser.add_argument("--outdir", required=True, help="folder to write (replaced as a whole)")
    parser.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    parser.add_argument("--data-source", default=None, help="where the images came from: msd, synthetic, ...")
    parser.add_argument("--epochs", type=int, default=None, help="epochs trained (default: from history.csv)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--note", action="append", default=[], help="extra provenance line (repeatable)")
    parser.add_argument("--metrics-json", default=None, help="also write the DVC metrics summary here")
    args = parser.parse_args(argv)
    provenance = {"data_source": args.data_source, "epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": args.learning_rate, "notes": args.note}
    written = write_tables(long_path=args.long, config=args.config, outdir=args.outdir, experiments=args.experiment,
                           provenance=provenance, metrics_json=args.metrics_json)
    print(f"tables: {len(written)} files -> {args.outdir}")
    return 0
