"""``mvl tables``: the paper's tables rebuilt from the long table, beside the published numbers.

For each experiment of the config (see :mod:`medvisionllama.paper.spec`) it writes, into the
output folder (replaced as a whole, atomically), the files its table object names
(:mod:`medvisionllama.paper.outputs`: layout, caption, metrics, claims):

* ``{name}.csv|.md|.tex|.html``: the table in the paper's layout, ``mean ± std`` over test cases
  (over several seeds: mean of the seed means ± std of all cases pooled; see
  :mod:`medvisionllama.paper.summary`), each score followed by ``†k`` when k of its cases were
  penalised (a miss or a false alarm, worst value) and ``‡k`` when k were undefined; a footnote
  says so. Parameters in millions are ``params_total`` of ``run.json`` (the frozen LLM block
  included), training time is ``train_seconds`` / 3600, beside the device it was measured on.
* ``{name}_comparison.csv|.md|.tex|.html``: published vs reproduced value and difference per cell,
  with the cell's n and its counts of penalised and undefined cases.
* ``{name}_claims.csv|.md|.html``: the paper's claims weighed, decided once over all the config's
  experiments (:func:`.compare.paper_claims`): family, effect with its interval (or the raw
  differences when not testable), n and unit, mde, the test, raw and adjusted p, verdict; the
  method (``verdicts.METHOD_NOTE``, ``compare.UNITS_NOTE``) in the header, headline rows first.

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

import numpy as np
import pandas as pd

from medvisionllama.experiments import load_config, load_experiments
from medvisionllama.io_utils import atomic_dir, write_text_atomic
from medvisionllama.paper.aggregate import read_long
from medvisionllama.paper.compare import UNITS_NOTE, claims, comparison_values, paper_claims, provenance_header
from medvisionllama.paper.metrics_json import write_metrics_json
from medvisionllama.paper.outputs import layer_sweep
from medvisionllama.paper.outputs.base import marker_notes, short_task
from medvisionllama.paper.published import METRIC_LABELS, model_label
from medvisionllama.paper.render import fmt, to_html, to_markdown, write_all, write_csv
from medvisionllama.paper.summary import ExperimentScores, score_experiment
from medvisionllama.paper.verdicts import METHOD_NOTE


def build_table(scored: ExperimentScores) -> pd.DataFrame:
    """The reproduced table of an experiment in the paper's layout (strings): its table object's
    layout, filled from the experiment's scores (:func:`score_experiment`)."""
    return scored.spec.table.layout(scored.spec, scored.cell)


def _count(value: float) -> str:
    return "" if pd.isna(value) else str(int(value))


def comparison_table(values: pd.DataFrame) -> pd.DataFrame:
    """Readable form of :func:`comparison_values`: one row per cell, published | reproduced |
    difference, the cell's n and how many of its cases were penalised or undefined (empty for
    parameters and training time), and the device where the table compares training times."""
    rows = []
    times = bool((values["metric"] == "train_hours").any())
    for _, v in values.iterrows():
        d = 2 if v["metric"] != "hd95" else 1
        row = {"Task": short_task(v["task"]), "Model": model_label(v["model"]),
               "Paper model": model_label(v["paper_model"]), "Attention": v["attention"], "Size": v["size"],
               "Metric": METRIC_LABELS[v["metric"]],
               "Published": fmt(v["published_mean"], v["published_std"], d),
               "Reproduced": fmt(v["reproduced_mean"], v["reproduced_std"], d),
               "Difference": "n/a" if pd.isna(v["difference"]) else f"{v['difference']:+.{d}f}",
               "n": str(int(v["n_cases"])), "n_penalised": _count(v["n_penalised"]),
               "n_undefined": _count(v["n_undefined"])}
        if times:
            row["Device"] = str(v["device"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("Task")


COUNT_NOTES = ["n: test cases of the cell (over all seeds); n_penalised: of them, a miss or a false alarm scored "
               "with the worst value (Dice 0, HD95 = image diagonal); n_undefined: every class absent in both masks "
               "(scored with the best value) or not computed."]


def _signed(value: float, d: int = 3) -> str:
    return "n/a" if pd.isna(value) else f"{value:+.{d}f}"


def _verdict_text(row: pd.Series) -> str:
    if row["verdict"] == "not testable":
        if int(row["n"]) and "differences zero" in str(row["test"]):
            return f"not testable (all n = {int(row['n'])} differences 0)"
        return f"not testable (n = {int(row['n'])})"
    return str(row["verdict"])


def _interval_text(effect: float, low: float, high: float, differences: str) -> str:
    if pd.isna(low):
        values = str(differences).split(";") if isinstance(differences, str) else []
        shown = ", ".join(_signed(float(x)) for x in values if x)
        return f"{_signed(effect)}; differences: {shown}" if shown else _signed(effect)

    def end(x: float) -> str:
        return ("−∞" if x < 0 else "+∞") if np.isinf(x) else _signed(x)

    return f"{_signed(effect)} [{end(low)}, {end(high)}]"


def claims_table(c: pd.DataFrame) -> pd.DataFrame:
    """Readable form of :func:`.compare.paper_claims`: one row per claim, its family, the headline
    rows marked; a not testable row lists its raw differences instead of an interval."""
    def pair(a: float, b: float, d: int) -> str:
        return f"{a:.{d}f} vs {b:.{d}f}" if pd.notna(a) and pd.notna(b) else "n/a"

    out = pd.DataFrame({
        "Claim": [("HEADLINE: " if h else "") + text for h, text in zip(c["headline"], c["claim"])],
        "Family": c["family"], "Source": c["claim_source"],
        "Published": [pair(a, b, 2) for a, b in zip(c["published_a"], c["published_b"])],
        "Reproduced": [pair(a, b, 3) for a, b in zip(c["reproduced_a"], c["reproduced_b"])],
        "Effect a − b [interval]": [_interval_text(*v) for v in zip(c["effect"], c["ci_low"], c["ci_high"],
                                                                   c["differences"])],
        "Better": c["better"],
        "n": [f"{n} {u}" for n, u in zip(c["n"], c["unit"])],
        "mde": ["n/a" if pd.isna(m) else "∞" if np.isinf(m) else f"{m:.3f}" for m in c["mde"]],
        "Test": c["test"],
        "p": ["n/a" if pd.isna(p) else f"{p:.3g}" for p in c["p_value"]],
        "p (adjusted)": ["n/a" if pd.isna(p) else f"{p:.3g}" for p in c["p_adjusted"]],
        "Verdict": [_verdict_text(r) for _, r in c.iterrows()]})
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


def write_experiment(scored: ExperimentScores, outdir: Path, provenance: dict[str, Any],
                     claims_frame: pd.DataFrame | None = None) -> list[Path]:
    """Write one experiment's table, comparison and claims into ``outdir`` (the names its table
    object gives). ``claims_frame``: its rows of :func:`.compare.paper_claims` (decided with the
    paper's other experiments); None: decided as a paper of this one experiment."""
    spec, table = scored.spec, scored.spec.table
    files = table.files(spec.name)
    header = provenance_header(spec, default_provenance(scored, provenance))
    stem = {kind: outdir / names[0].rsplit(".", 1)[0] for kind, names in files.items()}
    reproduced = build_table(scored)
    notes = marker_notes(reproduced, sorted(set(scored.summary["n_cases"].astype(int))))
    paths = write_all(reproduced, stem["table"], f"{table.caption}; reproduced", header, notes)
    if "comparison" in files:  # not for a custom experiment: nothing published to compare with
        paths += write_all(comparison_table(comparison_values(scored)), stem["comparison"],
                           f"{table.caption}: published vs reproduced", header, COUNT_NOTES)
    c = claims(scored) if claims_frame is None else claims_frame
    whose = "the paper's" if table.published else "its"  # a custom experiment's claims are the user's
    title = f"{table.title}: {whose} claims, weighed"
    claims_header = header + [METHOD_NOTE, UNITS_NOTE]
    claims_csv, claims_md, claims_html = (outdir / name for name in files["claims"])
    write_csv(c, claims_csv, claims_header, index=False)
    write_text_atomic(claims_md, f"**{title}**\n\n" + to_markdown(claims_table(c), claims_header))
    write_text_atomic(claims_html, to_html(claims_table(c), title, claims_header))
    if layer_sweep.wanted(spec):  # beyond the paper: Dice per LLM layer
        paths += layer_sweep.write_layer_table(scored, outdir, header)
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
    decided = paper_claims(scored)  # one hierarchy of hypotheses over every table of the paper
    outdir = Path(outdir)
    written: list[Path] = []
    with atomic_dir(outdir) as tmp:
        for experiment in scored:
            paths = write_experiment(experiment, tmp, provenance, decided[experiment.spec.name])
            written += [outdir / p.name for p in paths]
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
