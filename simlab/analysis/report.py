"""``simlab report``: one self-contained HTML page with every figure and table of a run.

Figures are embedded as base64 PNG (their SVG and PDF files stay in ``RUN/figures/`` for
slides and print), tables as HTML ``<pre>`` blocks of the analyses' own text tables plus a
summary table of each identification, so the page opens offline, in any browser, with
nothing beside it.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from simlab.fileio import write_text_atomic
from simlab.rundir import RunDirectory

__all__ = ["render_report", "write_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
nav a{margin-right:1em}.meta{color:#666;font-size:.85em}
"""


def _img(figure) -> str:
    """A figure's PNG embedded in the page, captioned with the names of its vector files."""
    data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
    caption = f"{figure.title} (also {figure.svg.name} and {figure.pdf.name} in figures/)"
    return (f'<figure><img alt="{html.escape(figure.title)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="meta">{html.escape(caption)}</figcaption></figure>')


def _accuracy_table(result: xr.Dataset) -> str:
    """Mean ± s.e.m. [pooled Wilson CI] (subject bootstrap CI) per feature set (rows) and
    classifier (columns)."""
    classifiers = [str(c) for c in result["classifier"].values]
    sets = [str(f) for f in result["feature_set"].values]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classifiers)
    rows = []
    for f in sets:
        cells = []
        for c in classifiers:
            m = float(result["accuracy_mean"].sel(classifier=c, feature_set=f))
            s = float(result["accuracy_sem"].sel(classifier=c, feature_set=f))
            ci = ""
            if "accuracy_mean_ci" in result:
                lo, hi = result["accuracy_mean_ci"].sel(classifier=c, feature_set=f).values
                ci = f" [{lo:.2f}, {hi:.2f}]"
            if "accuracy_mean_boot_ci" in result:
                lo, hi = result["accuracy_mean_boot_ci"].sel(classifier=c, feature_set=f).values
                ci += f" ({lo:.2f}, {hi:.2f})" if np.isfinite(lo) else ""
            cells.append(f"<td>{m:.3f} ± {s:.3f}{ci}</td>")
        rows.append(f"<tr><td>{html.escape(f)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>feature set</th>{head}</tr>{''.join(rows)}</table>"


def _protocol_summary(run: RunDirectory) -> str:
    try:
        text = run.protocol_text()
    except OSError:
        return ""
    return f"<details><summary>protocol</summary><pre>{html.escape(text)}</pre></details>"


def _training_table(run: RunDirectory) -> str:
    """Final test accuracy per population: mean and replicates."""
    if not run.subjects_file.is_file():
        return ""
    with xr.open_dataset(run.subjects_file) as table:
        table = table[["final_accuracy"]].load()
    rows = []
    for population, group in table.groupby("population", squeeze=False):
        acc = group["final_accuracy"].values
        rows.append(f"<tr><td>{html.escape(str(population))}</td><td>{np.nanmean(acc):.3f}</td>"
                    f"<td>{html.escape(', '.join(f'{a:.3f}' for a in acc))}</td></tr>")
    return ("<table><tr><th>population</th><th>mean final accuracy</th><th>replicates</th></tr>"
            + "".join(rows) + "</table>")


ORDER = ("identify", "trajectory", "generalization", "robustness", "confound")


def _order(path: Path) -> tuple[int, str]:
    """Analyses in the order of the reference's argument, then anything else by name."""
    kind = path.stem.split("-")[0].split(".")[0]
    return (ORDER.index(kind) if kind in ORDER else len(ORDER), path.stem)


def _plan(grid: xr.Dataset, targets=(0.9, 0.7)) -> str:
    """The design planner's answer at a few targets (lower Wilson bound)."""
    from simlab.analysis.plan import format_plan, plan_design

    texts = [format_plan(plan_design(grid, t), t, "wilson", grid) for t in targets]
    return "<h3>Design plan (simlab plan)</h3>" + "".join(f"<pre>{html.escape(t)}</pre>" for t in texts)


def render_report(run: RunDirectory, observables: Sequence[str] | None = None) -> str:
    """The HTML text of the run's report (figures drawn first, into ``RUN/figures/``)."""
    from simlab.analysis.analyses import load_result
    from simlab.analysis.figures import draw_run_figures

    figures = {f.png.stem: f for f in draw_run_figures(run, observables)}
    sections, nav = [], []

    def section(key: str, title: str, body: str) -> None:
        nav.append(f'<a href="#{key}">{html.escape(title)}</a>')
        sections.append(f'<h2 id="{key}">{html.escape(title)}</h2>\n{body}')

    section("training", "Training", _training_table(run) + _protocol_summary(run))
    if "trajectories" in figures:
        section("trajectories", "Observables over training", _img(figures["trajectories"]))
    for path in sorted(run.analysis_files().values(), key=_order):
        result = load_result(path)
        stem = path.stem.replace(".", "-")
        body = []
        if str(result.attrs.get("schema", "")).startswith("simlab.identify"):
            body.append(_accuracy_table(result))
        if stem in figures:
            body.append(_img(figures[stem]))
        txt = path.with_suffix(".txt")
        if txt.is_file():
            body.append(f"<pre>{html.escape(txt.read_text())}</pre>")
        if str(result.attrs.get("schema", "")).startswith("simlab.robustness"):
            body.append(_plan(result))
        title = str(result.attrs.get("title", path.stem))
        section(stem, f"{title[:1].upper()}{title[1:]}", "\n".join(body))
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>simlab report: {html.escape(run.path.name)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>simlab report: {html.escape(run.path.name)}</h1>\n"
        f"<p class=\"meta\">{html.escape(str(run.path.resolve()))}, {created}. Figures as PNG here; "
        "SVG and PDF versions in figures/.</p>\n"
        f"<nav>{''.join(nav)}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(run: RunDirectory, out: str | Path | None = None, observables: Sequence[str] | None = None) -> Path:
    """Write the report (default ``RUN/report.html``; replaced if it exists: it is derived)."""
    out = Path(out) if out is not None else run.report_file
    write_text_atomic(out, render_report(run, observables), force=True)
    return out
