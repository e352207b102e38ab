"""Write a table (a DataFrame of strings, index as the first column) as CSV, Markdown, LaTeX and
HTML (the form the Snakemake report shows), with header lines (the provenance) above it and
footnote lines (what the cells' markers mean) below it."""

from __future__ import annotations

from pathlib import Path

import html

import pandas as pd

from medvisionllama.io_utils import atomic_path, write_text_atomic

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "✓": r"\checkmark{}", "×": r"$\times$", "−": "-", "†": r"\dag{}",
                  "‡": r"\ddag{}", "≥": r"$\geq$", "≤": r"$\leq$"}


def fmt(mean: float, std: float = float("nan"), decimals: int = 2) -> str:
    """``0.72 ± 0.14``; without ``±`` when ``std`` is NaN; ``n/a`` when ``mean`` is NaN."""
    if pd.isna(mean):
        return "n/a"
    if pd.isna(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """Index as columns; MultiIndex column labels joined with a space."""
    out = df.reset_index()
    out.columns = [" ".join(str(p) for p in c if str(p)).strip() if isinstance(c, tuple) else str(c)
                   for c in out.columns]
    return out


def to_markdown(df: pd.DataFrame, header_lines: list[str] | None = None,
                footer_lines: list[str] | None = None) -> str:
    flat = _flat(df).astype(str)
    lines = [f"> {line}" for line in header_lines or []]
    if lines:
        lines.append("")
    lines.append("| " + " | ".join(flat.columns) + " |")
    lines.append("|" + "|".join("---" for _ in flat.columns) + "|")
    lines += ["| " + " | ".join(v.replace("|", r"\|") for v in row) + " |" for row in flat.itertuples(index=False)]
    if footer_lines:
        lines += ["", *(f"{line}  " for line in footer_lines)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    for sym, rep in _LATEX_SYMBOLS.items():
        out = out.replace(sym, rep)
    return out


def to_latex(df: pd.DataFrame, caption: str, label: str, header_lines: list[str] | None = None,
             footer_lines: list[str] | None = None) -> str:
    """A booktabs ``table`` environment; two header rows (``\\multicolumn``) for MultiIndex columns."""
    body = df.reset_index()
    n = body.shape[1]
    lines = [r"% " + line for line in header_lines or []]
    lines += [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * (n - 1) + "}", r"\toprule"]
    if isinstance(df.columns, pd.MultiIndex):
        top = [latex_escape(df.index.name or "")]
        groups: list[tuple[str, int]] = []
        for c in df.columns:
            if groups and groups[-1][0] == c[0]:
                groups[-1] = (c[0], groups[-1][1] + 1)
            else:
                groups.append((c[0], 1))
        top += [rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(g)}}}" for g, k in groups]
        lines.append(" & ".join(top) + r" \\")
        start = 2
        rules = []
        for g, k in groups:
            rules.append(rf"\cmidrule(lr){{{start}-{start + k - 1}}}")
            start += k
        lines.append(" ".join(rules))
        lines.append(" & ".join([""] + [latex_escape(c[1]) for c in df.columns]) + r" \\")
    else:
        lines.append(" & ".join(latex_escape(c) for c in body.columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in body.astype(str).itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if footer_lines:
        lines += [r"\par\smallskip\footnotesize"] + [latex_escape(line) + r"\\" for line in footer_lines]
    lines += [rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, caption: str, header_lines: list[str] | None = None,
            footer_lines: list[str] | None = None) -> str:
    """A standalone HTML page: the caption, the provenance lines, the table, the footnotes."""
    notes = "".join(f"<p class=\"provenance\">{html.escape(line)}</p>\n" for line in header_lines or [])
    foot = "".join(f"<p class=\"note\">{html.escape(line)}</p>\n" for line in footer_lines or [])
    table = _flat(df).astype(str).to_html(index=False, border=0, classes="table", escape=True)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
        f"{html.escape(caption)}</title>\n<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}"
        " th,td{padding:2px 8px;border-bottom:1px solid #ccc;text-align:center} .provenance{color:#a40}"
        " .note{font-size:smaller}</style>"
        f"</head><body>\n<h3>{html.escape(caption)}</h3>\n{notes}{table}\n{foot}</body></html>\n"
    )


def write_csv(df: pd.DataFrame, path: Path, header_lines: list[str] | None = None, index: bool = True,
              footer_lines: list[str] | None = None) -> None:
    """CSV; ``header_lines`` and ``footer_lines`` become leading and trailing ``# `` comment lines
    (read with ``comment="#"``)."""
    with atomic_path(path, suffix=".csv") as tmp:
        with tmp.open("w") as handle:
            for line in header_lines or []:
                handle.write(f"# {line}\n")
            (_flat(df) if index else df).to_csv(handle, index=False)
            for line in footer_lines or []:
                handle.write(f"# {line}\n")


def write_all(df: pd.DataFrame, stem: Path, caption: str, header_lines: list[str] | None = None,
              footer_lines: list[str] | None = None) -> list[Path]:
    """``{stem}.csv``, ``{stem}.md``, ``{stem}.tex``, ``{stem}.html``; returns the paths."""
    paths = [stem.with_suffix(f".{ext}") for ext in ("csv", "md", "tex", "html")]
    write_csv(df, paths[0], header_lines, footer_lines=footer_lines)
    write_text_atomic(paths[1], f"**{caption}**\n\n" + to_markdown(df, header_lines, footer_lines))
    write_text_atomic(paths[2], to_latex(df, caption, f"tab:{stem.name}", header_lines, footer_lines))
    write_text_atomic(paths[3], to_html(df, caption, header_lines, footer_lines))
    return paths
