"""The figures' house style, proved with known truth: TrueType (Type 42) fonts in every PDF,
class colours that stay apart for red-green colour-blind readers (a published simulation),
per-class masks rather than nested ``label >= k`` regions, the forest plot drawn from the claims
columns of docs/contracts.md, the report's categories in the paper's order and a landing text
that states the seeds, controls and test-set sizes the config really has."""

import itertools

import jinja2
import matplotlib
import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, tiny_config

from medvisionllama.data.split import split_counts
from medvisionllama.paper import figures as F
from medvisionllama.paper.figures import base
from medvisionllama.paper.outputs.figures import PAPER_ORDER, figure_files
from medvisionllama.experiments import experiment_specs
from test_paper_fixtures import make_sample

# Machado, Oliveira & Fernandes (2009), "A physiologically-based model for simulation of color
# vision deficiency", IEEE TVCG 15(6): the matrices for severity 1.0, applied to linear RGB
PROTANOPIA = np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                       [-0.003882, -0.048116, 1.051998]])
DEUTERANOPIA = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                         [-0.011820, 0.042940, 0.968881]])


def _linear(rgb):
    rgb = np.asarray(rgb, dtype=float)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb):
    """CIELAB (D65) of a linear-RGB colour."""
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(linear_rgb, 0, 1)
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _delta_e(a, b, vision=np.eye(3)):
    """CIE76 distance of two colours as a reader with ``vision`` sees them."""
    la, lb = (_lab(vision @ _linear(matplotlib.colors.to_rgb(c))) for c in (a, b))
    return float(np.linalg.norm(la - lb))


def test_the_simulation_does_tell_red_from_green_apart_only_for_normal_vision():
    # the check can fail: the red and green of a default plot collapse for a deuteranope
    assert _delta_e("#d62728", "#2ca02c") > 60
    assert _delta_e("#d62728", "#2ca02c", DEUTERANOPIA) < 20


@pytest.mark.parametrize("vision", [np.eye(3), DEUTERANOPIA, PROTANOPIA], ids=["normal", "deuteranopia", "protanopia"])
def test_class_and_verdict_colours_stay_apart_for_colour_blind_readers(vision):
    for a, b in itertools.combinations(F.CLASS_COLORS, 2):
        assert _delta_e(a, b, vision) >= 20, (a, b)
    for a, b in itertools.combinations(F.CLASS_COLORS[:3], 2):  # the MSD tasks have at most 3 classes
        assert _delta_e(a, b, vision) >= 40, (a, b)
    verdicts = [F.VERDICT_STYLES[v][0] for v in ("supported", "contradicted", "inconclusive")]
    for a, b in itertools.combinations(verdicts, 2):
        assert _delta_e(a, b, vision) >= 20, (a, b)


def _pdf_fonts(path):
    data = path.read_bytes()
    return b"/Type3" in data, b"/TrueType" in data or b"/CIDFontType2" in data


def test_pdfs_embed_truetype_fonts_not_type3(tmp_path):
    out = F.figure_activation_maps({"vit": make_sample(False), "smollm2-135m": make_sample(True)}, tmp_path / "fig4")
    type3, truetype = _pdf_fonts(out.paths[1])  # text, mathtext ($V_E$) and the stamp
    assert truetype and not type3
    with matplotlib.rc_context({"pdf.fonttype": 3}):  # the check can fail: matplotlib's default is Type 3
        fig = matplotlib.figure.Figure()
        fig.text(0.5, 0.5, "$V_E$ Dice")
        fig.savefig(tmp_path / "type3.pdf")
    assert _pdf_fonts(tmp_path / "type3.pdf")[0]


def test_each_class_is_its_own_mask_not_the_nested_region(monkeypatch):
    import matplotlib.pyplot as plt

    label = np.zeros((40, 40), np.uint8)
    label[5:15, 5:15] = 1  # class 1 on the left
    label[25:35, 25:35] = 2  # class 2 apart from it: "label >= 1" would be their union
    fig, ax = plt.subplots()
    F.draw_classes(ax, np.zeros((40, 40)), label, label, [1, 2])
    outlines = {}
    for artist in ax.collections:
        color = matplotlib.colors.to_hex(artist.get_edgecolor()[0])
        outlines[color] = [p for p in artist.get_paths() if len(p.vertices)]
    one, two = outlines[F.class_color(1)], outlines[F.class_color(2)]
    inside = lambda paths, x, y: any(p.contains_point((x, y)) for p in paths)  # noqa: E731 (image: .T, so (x, y))
    assert inside(one, 10, 10) and not inside(one, 30, 30)
    assert inside(two, 30, 30) and not inside(two, 10, 10)
    fills = [im for im in ax.images[1:]]  # after the grey slice: one filled prediction per class
    assert len(fills) == 2
    plt.close(fig)


CONTRACT = ["experiment", "family", "hypothesis", "headline", "task", "metric", "a", "b", "claim", "claim_source",
            "expected", "better", "published_a", "published_b", "reproduced_a", "reproduced_b", "paper_effect",
            "effect", "ci_low", "ci_high", "n", "unit", "n_missing", "differences", "test", "p_value", "p_adjusted",
            "mde", "verdict"]


def _claim(task, effect, lo, hi, verdict, paper, differences="", metric="dice", family="per-task"):
    headline = task == "all"
    return {"experiment": "main", "family": "primary" if headline else family,
            "hypothesis": f"ViT + Llama|ViT|{metric}|{'ALL' if headline else task}", "headline": headline,
            "task": task, "metric": metric, "a": "ViT + Llama", "b": "ViT", "claim": "c", "claim_source": "s",
            "expected": 1, "better": "higher is better", "published_a": 0.8, "published_b": 0.8 - paper,
            "reproduced_a": 0.5, "reproduced_b": 0.5 - effect, "paper_effect": paper, "effect": effect,
            "ci_low": lo, "ci_high": hi, "n": 3 if verdict == "not testable" else 12, "unit": "cases",
            "n_missing": 0, "differences": differences, "test": "t", "p_value": 0.01, "p_adjusted": 0.02,
            "mde": 0.1, "verdict": verdict}


def test_forest_plot_draws_the_contract_columns(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    claims = pd.DataFrame([
        _claim("all", 0.05, 0.02, 0.08, "supported", 0.03),
        _claim("Task01_BrainTumour", -0.04, -0.07, -0.01, "contradicted", 0.02),
        _claim("Task02_Heart", 0.01, np.nan, np.nan, "not testable", 0.04, differences="0.11;-0.05;0.2"),
    ], columns=CONTRACT)
    monkeypatch.setattr(base.plt, "close", lambda fig: None)
    out = F.figure_forest(claims, tmp_path / "forest", "Claims")
    fig = plt.gcf()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["All tasks", "Task01", "Task02"]
    xs = {round(float(x), 3) for line in ax.get_lines() for x in np.atleast_1d(line.get_xdata())}
    assert {0.11, -0.05, 0.2} <= xs  # the raw differences of the not-testable row
    assert {0.05, -0.04, 0.03, 0.02, 0.04} <= xs  # effects and the paper's effects
    segments = [tuple(np.round(s[:, 0], 3)) for c in ax.collections for s in c.get_segments()]
    assert (0.02, 0.08) in segments and (-0.07, -0.01) in segments  # the intervals, and none for Task02
    assert out.legend_colors["supported"] == F.VERDICT_STYLES["supported"][0]
    assert out.legend_colors["contradicted"] == F.VERDICT_STYLES["contradicted"][0]
    assert any("not testable" in t for t in out.texts)
    plt.close(fig)


def test_claims_of_the_older_columns_are_read_too(tmp_path):
    old = pd.DataFrame([_claim("all", 0.05, 0.02, 0.08, "supported", 0.03)], columns=CONTRACT)
    old = old.drop(columns=["family", "paper_effect", "differences", "p_adjusted", "hypothesis", "mde"])
    old["p_holm"] = 0.02
    (tmp_path / "main_claims.csv").write_text("# provenance\n" + old.to_csv(index=False) + "# footnote\n")
    read = F.read_claims(tmp_path / "main_claims.csv")
    assert read.loc[0, "family"] == "primary" and read.loc[0, "paper_effect"] == pytest.approx(0.03)
    assert read.loc[0, "p_adjusted"] == 0.02
    (tmp_path / "bad_claims.csv").write_text("experiment,task\nmain,all\n")
    with pytest.raises(Exception, match="lack columns"):
        F.read_claims(tmp_path / "bad_claims.csv")


def test_report_categories_follow_the_papers_order():
    specs = experiment_specs(tiny_config())
    files = figure_files(specs)
    categories = list(dict.fromkeys(f.category for f in files))
    assert sorted(categories) == sorted(categories, key=lambda c: int(c.split()[0]))  # the name sorts as the number
    items = [c.split(" ", 1)[1] for c in sorted(categories)]
    assert [i for i in items if i in PAPER_ORDER] == [i for i in PAPER_ORDER if i in items]
    assert "00" not in "".join(categories) and not any(f.name.startswith("history") for f in files)
    assert {f"{s.name}_{k}.png" for s in specs for k in ("forest", "cases", "curves")} <= {f.name for f in files}


def _landing(config):
    from snakemake.utils import validate

    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))

    class Snakemake:
        pass

    Snakemake.config = config
    return jinja2.Environment().from_string((ROOT / "workflow/report/workflow.rst").read_text()).render(snakemake=Snakemake)


@pytest.mark.parametrize("cases", [3, 5, 6, 10, 23])
def test_landing_text_states_the_test_set_size_the_split_makes(cases):
    config = tiny_config()
    config["data"]["synthetic"]["cases"] = cases
    train, val, test = split_counts(cases, tuple(config["split"]["fractions"]))
    text = " ".join(_landing(config).split())
    assert f"{test} test case(s) per task** ({train} training, {val} validation)" in text


def test_landing_text_states_the_seeds_and_only_the_controls_run():
    config = tiny_config()
    text = " ".join(_landing(config).split())
    assert "one seed (0) per setting" in text and "smollm2-135m-shuffled" in text
    assert "Gaussian" not in text  # the -random control did not run: not explained
    config["training"]["seeds"] = [0, 1, 2]
    config["experiments"]["main"]["models"].append("smollm2-135m-random")
    text = " ".join(_landing(config).split())
    assert "3 seeds (0, 1, 2) per setting" in text and "Gaussian random weights" in text


def test_experiments_without_published_numbers_draw_without_paper_markers(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    claims = pd.DataFrame([_claim("all", 0.05, 0.02, 0.08, "supported", np.nan),
                           _claim("Task04_Hippocampus", 0.01, np.nan, np.nan, "not testable", np.nan, "0.1;0.2")],
                          columns=CONTRACT)
    monkeypatch.setattr(base.plt, "close", lambda fig: None)
    F.figure_forest(claims, tmp_path / "sweep_forest", "Layer sweep")
    markers = {line.get_marker() for ax in plt.gcf().axes for line in ax.get_lines()}
    assert "D" not in markers  # no paper's effect to draw
    plt.close(plt.gcf())
    values = pd.DataFrame([{"table": "Layer sweep", "task": "Task04_Hippocampus", "model": "smollm2-135m@3",
                            "paper_model": "smollm2-135m@3", "attention": "hybrid-sequential", "size": "16x16x8",
                            "metric": "dice", "published_mean": np.nan, "published_std": np.nan,
                            "reproduced_mean": 0.4, "reproduced_std": 0.1}])
    out = F.figure_published_vs_reproduced(values, tmp_path / "pvr")
    assert any("No run of this configuration has a published Dice" in t for t in out.texts)


def test_forest_rows_of_one_task_at_several_sizes_are_told_apart(tmp_path):
    rows = [_claim("Task04_Hippocampus", 0.01, -0.02, 0.04, "inconclusive", np.nan) for _ in range(2)]
    rows[0]["claim"], rows[1]["claim"] = "a better than b in Dice on Task04 at 16x16x8", "... on Task04 at 24x24x8"
    out = F.figure_forest(pd.DataFrame(rows, columns=CONTRACT), tmp_path / "sizes", "Sizes")
    assert {"Task04 16x16x8", "Task04 24x24x8"} <= set(out.texts)


def test_a_table_of_many_claims_still_fits_a_page(tmp_path):
    rows = []
    for metric in ("dice", "accuracy", "precision", "recall", "jaccard", "hd95"):  # Table 2: 6 metrics x 10 tasks
        rows.append(_claim("all", 0.01, -0.02, 0.04, "inconclusive", 0.02, metric=metric))
        rows += [_claim(f"Task{i:02d}_X", 0.01, -0.02, 0.04, "inconclusive", 0.02, metric=metric) for i in range(1, 11)]
    out = F.figure_forest(pd.DataFrame(rows, columns=CONTRACT), tmp_path / "table2", "Table 2",
                          stamp="NOT the paper's configuration: " + "synthetic data; " * 6)
    assert out.n_panels == 6 and out.min_font_pt >= F.MIN_FONT_PT
    assert out.size_inches[0] <= F.PAGE_INCHES[0] + 0.15 and out.size_inches[1] <= 11.0, out.size_inches
