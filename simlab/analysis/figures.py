"""Figures of a run's recordings and analyses, each saved as PNG, SVG and PDF.

Each figure has a builder, ``<name>_figure(data, ...)``, that returns a matplotlib figure (to
inspect or restyle in a notebook), and ``plot_<name>(data, stem, ...)``, which builds it and
saves it under the path stem. Drawing uses matplotlib's Agg backend (no display needed).

Made to be shown in a talk as they come out:

- colour means learning rule, and only that: :func:`rule_color` gives a rule the same colour
  in every figure of every run, whatever other rules are present. Rigs, measures and feature
  sets are drawn in greys with their own markers, line styles and hatches.
- :func:`class_label` spells a rule (or any class) the same way in legends and matrix ticks.
- every axis names its quantity and units; accuracies show the chance level; confusion
  matrices name their classifier and feature set and have a labelled colour bar.
- constrained layout sizes each figure to its labels: no tick label is cut short or clipped.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from simlab.errors import SimlabError  # noqa: E402

__all__ = [
    "ACCURACY_LABEL",
    "BUILTIN_RULE_COLORS",
    "DEFAULT_OBSERVABLES",
    "Figure",
    "class_label",
    "confound_figure",
    "confusion_figure",
    "draw_run_figures",
    "generalization_figure",
    "importance_figure",
    "observable_label",
    "plot_confound",
    "plot_confusion",
    "plot_generalization",
    "plot_importance",
    "plot_reliability",
    "plot_robustness",
    "plot_trajectories",
    "plot_trajectory_access",
    "reliability_figure",
    "robustness_figure",
    "rule_color",
    "save_figure",
    "site_trajectories",
    "trajectories_figure",
    "trajectory_access_figure",
]

# the reference's Figure 1 shows a few statistics of each measure over training
DEFAULT_OBSERVABLES = (
    "weight_raw_median", "weight_raw_norm", "activation_raw_median", "activation_raw_norm",
    "activity_change_raw", "activity_change_abs",
)
STYLE = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
    "figure.titlesize": 10.5, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "axes.spines.top": False, "axes.spines.right": False,
    "svg.fonttype": "none", "svg.hashsalt": "simlab", "pdf.fonttype": 42,
}

# --------------------------------------------------------------------------- quantities and units
# Samples of identification are sites (a real layer of a subject that did not diverge).
ACCURACY_LABEL = "accuracy (fraction of test sites)"
TASK_ACCURACY_LABEL = "final task accuracy\n(fraction of test inputs)"
FRACTION_LABEL = "fraction of training steps"
UNITS_LABEL = "units recorded per site (synapses for weights)"
NOISE_LABEL = "noise sd (units of the measured value)"
SESSIONS_LABEL = "sessions recorded (evenly spaced)"
IMPORTANCE_LABELS = {
    "impurity": "impurity importance\n(fraction of total decrease)",
    "permutation": "permutation importance\n(accuracy drop, fraction of test sites)",
}
_MEASURE_NOUNS = {"weight": "weights", "activation": "activations", "activity_change": "activity change"}
_FUNCTION_FORMS = {"raw": "{}", "abs": "|{}|", "sq": "({})²"}
_STATISTIC_PHRASES = {
    "norm": "norm of {}", "mean": "mean of {}", "median": "median of {}", "var": "variance of {}",
    "thirdquartile": "third quartile of {}", "skew": "skewness of {}", "kurtosis": "kurtosis of {}",
    "id": "{}",
}

# --------------------------------------------------------------------------- colours
# One colour per built-in rule, fixed by name (never by position among the rules present), from
# colour-blind-safe qualitative palettes: Okabe & Ito (2008) first, then Paul Tol's muted
# scheme, then a neutral grey; no two are closer than 25 (CIE76 delta E) to one another.
# The reference's rules get the most distinct colours; the two backprop optimizers share a hue.
BUILTIN_RULE_COLORS = {
    "sgdm": "#0072B2",                       # Okabe-Ito blue
    "adam": "#56B4E9",                       # Okabe-Ito sky blue
    "feedback_alignment": "#D55E00",         # Okabe-Ito vermillion
    "information_alignment": "#009E73",      # Okabe-Ito bluish green
    "kolen_pollack": "#CC79A7",              # Okabe-Ito reddish purple
    "weight_mirror": "#E69F00",              # Okabe-Ito orange
    "symmetric_alignment": "#332288",        # Tol indigo
    "sign_symmetry": "#999933",              # Tol olive
    "direct_feedback_alignment": "#882255",  # Tol wine
    "node_perturbation": "#000000",          # Okabe-Ito black
    "hebbian": "#777777",                    # grey
}
# a rule of a protocol's own or a user's keeps at least this distance from every built-in's
_MIN_DISTANCE = 25.0

# Measures and feature sets are not rules: greys with their own marker, line style and hatch
MEASURE_STYLES = {
    "weight": {"color": "#333333", "marker": "o", "ls": "-", "hatch": ""},
    "activation": {"color": "#808080", "marker": "s", "ls": "--", "hatch": "//"},
    "activity_change": {"color": "#bdbdbd", "marker": "^", "ls": ":", "hatch": ".."},
    "all": {"color": "#ffffff", "marker": "D", "ls": "-.", "hatch": "xx"},
}
_OTHER_MEASURE = {"color": "#a0a0a0", "marker": "v", "ls": "-", "hatch": "\\\\"}
CHANCE_STYLE = {"color": "black", "ls": (0, (4, 3)), "lw": 0.8}
BAR_EDGE = {"edgecolor": "black", "linewidth": 0.5}


def class_label(name) -> str:
    """How a rule (or any class or level) is spelled in every legend, tick and title."""
    return str(name).replace("_", " ")


def _lab(color) -> np.ndarray:
    """CIELAB (D65) coordinates of an sRGB colour, to measure how alike two colours look."""
    rgb = np.asarray(matplotlib.colors.to_rgb(color))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


_BUILTIN_LAB = np.array([_lab(c) for c in BUILTIN_RULE_COLORS.values()])


def _derived_color(name: str) -> str:
    """A colour that depends on the name alone: the first of ten candidates drawn from its
    SHA-256 digest (hue anywhere; saturation and value in a range that reads on white) that
    is at least ``_MIN_DISTANCE`` from every built-in rule's colour, else the farthest one."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    candidates = [
        matplotlib.colors.to_hex(matplotlib.colors.hsv_to_rgb(
            (digest[i] / 256, 0.45 + 0.5 * digest[i + 1] / 255, 0.40 + 0.45 * digest[i + 2] / 255)))
        for i in range(0, 30, 3)
    ]
    distance = [float(np.min(np.linalg.norm(_BUILTIN_LAB - _lab(c), axis=1))) for c in candidates]
    for color, d in zip(candidates, distance):
        if d >= _MIN_DISTANCE:
            return color
    return candidates[int(np.argmax(distance))]


def rule_color(name) -> str:
    """The colour of a learning rule (or of any class) in every figure: a built-in rule's
    fixed colour, else one derived from the name alone (see :func:`_derived_color`)."""
    name = str(name)
    return BUILTIN_RULE_COLORS.get(name) or _derived_color(name)


def _measure_style(name) -> dict:
    return MEASURE_STYLES.get(str(name), _OTHER_MEASURE)


# --------------------------------------------------------------------------- saving


@dataclass(frozen=True)
class Figure:
    """The files of one saved figure."""

    png: Path
    svg: Path
    pdf: Path
    title: str

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return self.png, self.svg, self.pdf


def save_figure(fig, stem, title: str) -> Figure:
    """Save ``fig`` as ``stem``.png, .svg and .pdf and close it. Vector files keep their text
    as text (editable on a slide) and carry no date or random ids, so a redrawn figure gives
    the same bytes."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg, pdf = (stem.with_suffix(s) for s in (".png", ".svg", ".pdf"))
    with plt.rc_context(STYLE):  # the file formats' settings apply when saving
        fig.savefig(png, dpi=150, bbox_inches="tight", metadata={"Software": "simlab"})
        fig.savefig(svg, bbox_inches="tight", metadata={"Date": None})
        fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Creator": "simlab"})
    plt.close(fig)
    return Figure(png, svg, pdf, title)


# --------------------------------------------------------------------------- shared pieces


def _grid(n: int, ncols: int, size=(3.2, 2.5)):
    """A constrained-layout figure with ``n`` panels in rows of ``ncols`` (the rest hidden)."""
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _accuracy_axis(ax, chance: float, vertical: bool = False, annotate: bool = False) -> None:
    """An identification-accuracy axis from 0 to 1, labelled, with the chance level as a dashed
    line: in the legend ("chance"), or written at the line's end where there is no legend."""
    (ax.set_xlim if vertical else ax.set_ylim)(0, 1.05)
    (ax.set_xlabel if vertical else ax.set_ylabel)(ACCURACY_LABEL)
    if not np.isfinite(chance):
        return
    (ax.axvline if vertical else ax.axhline)(chance, **CHANCE_STYLE, label="chance", zorder=3)
    if annotate and vertical:
        ax.text(chance, 1.0, " chance", transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=7)
    elif annotate:
        ax.text(1.0, chance, "chance ", transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=7)


def _room_above(ax) -> None:
    """Empty space above an accuracy axis for a legend inside it; the axis still reads 0 to 1."""
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.spines["left"].set_bounds(0, 1)


def _legend(owner, ax, **kwargs):
    """A legend (on ``owner``: ``ax`` or its figure) of what ``ax`` shows, "chance" last."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "chance")
    return owner.legend([handles[i] for i in order], [labels[i] for i in order], frameon=False, **kwargs)


def _category_ticks(ax, labels: Sequence[str], axis: str = "x", **kwargs) -> None:
    """Full category labels, never cut short: x labels longer than a short word stand upright,
    so that each takes only a line's height of its neighbours' room however long it is."""
    labels = [class_label(label) for label in labels]
    if axis == "y":
        ax.set_yticks(range(len(labels)), labels, **kwargs)
    elif max((len(label) for label in labels), default=0) > 7:
        ax.set_xticks(range(len(labels)), labels, rotation=90, **kwargs)
    else:
        ax.set_xticks(range(len(labels)), labels, **kwargs)


def _heatmap(ax, values: np.ndarray, rows, cols, fmt="{:.2f}", vmax=1.0, cmap="Blues"):
    """Values as coloured cells with their numbers written in (rows and columns labelled)."""
    # "auto": the axes fill the place the layout gives them (the figure's size makes the cells
    # about square), so titles and labels wider than the matrix get room from the layout
    im = ax.imshow(values, vmin=0, vmax=vmax, cmap=cmap, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "–" if not np.isfinite(v) else fmt.format(v)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(v) and v > 0.6 * vmax else "black")
    _category_ticks(ax, cols, "x")
    _category_ticks(ax, rows, "y")
    ax.spines[:].set_visible(False)
    return im


def _text_width(labels, per_char: float = 0.065) -> float:
    """About how wide (inches) the longest of ``labels`` is at tick-label size."""
    return per_char * max((len(class_label(label)) for label in labels), default=0)


def _grouped_bars(ax, groups: Sequence[str], values: dict, errors: dict) -> None:
    """Bars of each feature set (greys and hatches) side by side within each group."""
    width = 0.8 / max(1, len(values))
    for k, (name, heights) in enumerate(values.items()):
        x = np.arange(len(groups)) + (k - (len(values) - 1) / 2) * width
        style = _measure_style(name)
        ax.bar(x, heights, width, yerr=errors[name], color=style["color"], hatch=style["hatch"], **BAR_EDGE,
               label=class_label(name), error_kw={"lw": 0.7, "capsize": 1.5})


def observable_label(ds: xr.Dataset, observable: str) -> str:
    """An observable in words with its units, e.g. "median of |weights|\\n(dimensionless)",
    from its ``measure``, ``function`` and ``statistic`` coordinates and the recording's
    ``units`` attribute (CF units; "1" is dimensionless)."""
    def coordinate(name):
        return str(ds[name].sel(observable=observable).values) if name in ds.coords else ""

    measure, function, statistic = coordinate("measure"), coordinate("function"), coordinate("statistic")
    if measure in _MEASURE_NOUNS and function in _FUNCTION_FORMS and statistic in _STATISTIC_PHRASES:
        quantity = _STATISTIC_PHRASES[statistic].format(_FUNCTION_FORMS[function].format(_MEASURE_NOUNS[measure]))
    else:
        quantity = class_label(observable)
    units = str(ds["observation"].attrs.get("units", "1")) if "observation" in ds else "1"
    return f"{quantity}\n({'dimensionless' if units in ('1', '') else units})"


# --------------------------------------------------------------------------- trajectories


def site_trajectories(ds: xr.Dataset, observable: str, target: str = "learning_rule") -> xr.Dataset:
    """Mean and s.e.m. over sites (real layers of subjects that did not diverge) per class and
    session, of one observable: the numbers behind the trajectory figure."""
    if observable not in ds["observable"].values:
        raise SimlabError(f"observable {observable!r} is not in the recording")
    obs = ds["observation"].sel(observable=observable)
    keep = xr.ones_like(obs, dtype=bool)
    if "layer_name" in ds.coords:
        keep = keep & (ds["layer_name"] != "")
    if "status" in ds.coords:
        keep = keep & (ds["status"] == "ok")
    obs = obs.where(keep).stack(site=("subject", "layer"))
    labels = ds[target].values.astype(str)[ds.indexes["subject"].get_indexer(obs["subject"].values)]
    obs = obs.drop_vars(["subject", "layer", "site"]).assign_coords(label=("site", labels))
    mean = obs.groupby("label").mean("site", skipna=True)
    n = obs.notnull().groupby("label").sum("site")
    sem = obs.groupby("label").std("site", ddof=1, skipna=True) / np.sqrt(n.where(n > 0))
    return xr.Dataset({"mean": mean, "sem": sem, "n": n})


def _chosen_observables(ds: xr.Dataset, observables: Sequence[str] | None) -> list[str]:
    available = [str(o) for o in ds["observable"].values]
    if observables:
        missing = [o for o in observables if o not in available]
        if missing:
            raise SimlabError(f"observable(s) {', '.join(missing)} not in the recordings; "
                              f"they have e.g. {', '.join(available[:6])}")
        return list(observables)
    return [o for o in DEFAULT_OBSERVABLES if o in available] or available[:4]


def trajectories_figure(ds: xr.Dataset, observables: Sequence[str] | None = None, target: str = "learning_rule"):
    """Observables over training by class: mean ± s.e.m. over sites (the reference's Figure 1)."""
    chosen = _chosen_observables(ds, observables)
    classes = sorted(np.unique(ds[target].values.astype(str)))
    x = ds["fraction"].values if "fraction" in ds.coords else np.arange(ds.sizes["session"])
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(chosen), 3, size=(3.3, 2.7))
        for ax, name in zip(axes, chosen):
            t = site_trajectories(ds, name, target)
            for c in classes:
                if c not in t["label"].values:
                    continue
                m, s = t["mean"].sel(label=c).values, t["sem"].sel(label=c).values
                ax.plot(x, m, color=rule_color(c), lw=1.6, label=class_label(c))
                ax.fill_between(x, m - s, m + s, color=rule_color(c), alpha=0.2, lw=0)
            ax.set_title(class_label(name))
            ax.set_xlabel(FRACTION_LABEL if "fraction" in ds.coords else "session")
            ax.set_ylabel(observable_label(ds, name))
        _legend(fig, axes[0], loc="outside lower center", ncol=min(len(classes), 4), title=class_label(target))
        fig.suptitle(f"observables over training by {class_label(target)} (mean ± s.e.m. over sites)")
    return fig


def plot_trajectories(ds: xr.Dataset, stem, observables: Sequence[str] | None = None,
                      target: str = "learning_rule") -> Figure:
    """Save :func:`trajectories_figure` under ``stem``."""
    return save_figure(trajectories_figure(ds, observables, target), stem, "Observables over training")


# --------------------------------------------------------------------------- identification


def _confusion_sets(results: xr.Dataset) -> list[str]:
    """Feature sets worth a matrix: the measures and their union, not single observables."""
    sets = [str(f) for f in results["feature_set"].values]
    if "feature_kind" not in results.coords:
        return sets
    return [f for f in sets if results["feature_kind"].sel(feature_set=f) != "observable"]


def confusion_figure(results: xr.Dataset, classifier: str | None = None, title: str = ""):
    """Row-normalized confusion matrices (the fraction of each true class predicted as each
    class), one panel per feature set, each titled with its feature set, classifier and mean
    accuracy; one colour bar for all."""
    clf = classifier or str(results["classifier"].values[0])
    sets = _confusion_sets(results)
    classes = [str(c) for c in results["true_class"].values]
    chance = float(results.attrs.get("chance", np.nan))
    target = class_label(results.attrs.get("target", "class"))
    with plt.rc_context(STYLE):
        side = max(1.6, 0.45 * len(classes))  # the matrix, in inches: cells of about half an inch
        labels = _text_width(classes)
        ncols = len(sets) if len(sets) <= 3 else math.ceil(math.sqrt(len(sets)))
        nrows = math.ceil(len(sets) / ncols)
        width, height = side + labels + 0.8, side + labels + 1.2
        fig = plt.figure(figsize=(width * ncols + 0.9, height * nrows), layout="constrained")
        # the colour bar in a column of its own, so the layout keeps titles wider than their
        # matrix clear of it
        grid = fig.add_gridspec(nrows, ncols + 1, width_ratios=[width] * ncols + [0.15])
        axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(len(sets))]
        for ax, f in zip(axes, sets):
            cm = results["confusion"].sel(classifier=clf, feature_set=f).values.astype(float)
            norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            im = _heatmap(ax, norm, classes, classes)
            acc = float(results["accuracy_mean"].sel(classifier=clf, feature_set=f))
            ax.set_title(f"{class_label(f)} features, mean accuracy {acc:.2f}\n{clf}")
            ax.set_xlabel(f"predicted {target}")
            ax.set_ylabel(f"true {target}")
        fig.colorbar(im, cax=fig.add_subplot(grid[:, ncols]), label="fraction of true class")
        fig.suptitle(title or f"identification of {target}: confusion matrices (chance {chance:.2f})")
    return fig


def plot_confusion(results: xr.Dataset, stem, classifier: str | None = None, title: str = "") -> Figure:
    """Save :func:`confusion_figure` under ``stem``."""
    record_title = title or f"Confusion matrices: {class_label(results.attrs.get('title', 'identification'))}"
    return save_figure(confusion_figure(results, classifier, title), stem, record_title)


# --------------------------------------------------------------------------- reliability


PROBABILITY_LABEL = "predicted probability (calibrated)"


def reliability_figure(result: xr.Dataset, title: str = ""):
    """Reliability diagrams of ``simlab predict``'s probabilities: per class (one-vs-rest:
    the class's predicted probability vs the fraction of sites that are of the class, in the
    rule's colour) and for the top class (confidence vs accuracy), each bin's point sized by
    its sites; the diagonal is perfect calibration."""
    classes = [str(c) for c in result["class"].values]
    a = result.attrs
    with plt.rc_context(STYLE):
        fig, (per_class, top) = plt.subplots(1, 2, figsize=(9.6, 3.6), layout="constrained")
        for ax in (per_class, top):
            ax.plot([0, 1], [0, 1], **CHANCE_STYLE, label="perfectly calibrated")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(PROBABILITY_LABEL)
            ax.set_aspect("equal")
        for k, c in enumerate(classes):
            mean = result["class_reliability_mean"].values[k]
            observed = result["class_reliability_observed"].values[k]
            count = result["class_reliability_count"].values[k]
            keep = count > 0
            per_class.plot(mean[keep], observed[keep], "-o", color=rule_color(c), ms=3, lw=1.2, label=class_label(c))
        per_class.set_ylabel("observed frequency of the class\n(fraction of sites)")
        per_class.set_title("per class (one vs rest)")
        _legend(per_class, per_class, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
        count = result["reliability_count"].values
        keep = count > 0
        top.plot(result["reliability_confidence"].values[keep], result["reliability_accuracy"].values[keep],
                 "-", color="#333333", lw=1.0)
        top.scatter(result["reliability_confidence"].values[keep], result["reliability_accuracy"].values[keep],
                    s=10 + 90 * count[keep] / max(count.max(), 1), color="#333333", zorder=3, label="bin (area: sites)")
        top.set_ylabel("accuracy (fraction of sites correct)")
        top.set_title(f"top class: ECE {float(a.get('ece', np.nan)):.3f}, Brier {float(a.get('brier', np.nan)):.3f}")
        _legend(top, top, loc="lower right", fontsize=7)
        fig.suptitle(title or f"reliability of predicted {class_label(a.get('target', 'class'))} on "
                     f"{int(a.get('n_scored', 0))} sites (accuracy {float(a.get('accuracy', np.nan)):.2f})")
    return fig


def plot_reliability(result: xr.Dataset, stem, title: str = "") -> Figure:
    """Save :func:`reliability_figure` under ``stem``."""
    return save_figure(reliability_figure(result, title), stem, title or "Reliability of predicted probabilities")


# --------------------------------------------------------------------------- robustness


def _robustness_line(grid: xr.Dataset, cell: xr.Dataset, panel: str):
    """x, the accuracy prefix and the slice of one rig's cell that a panel plots."""
    if panel == "units":
        order = np.argsort(cell["units_recorded"].values)
        sub = cell.isel(units=order).sel(noise=float(grid["noise"].min()))
        return sub["units_recorded"].values, "accuracy", sub
    if panel == "noise":
        most = str(cell["units"].values[int(np.argmax(cell["units_recorded"].values))])
        sub = cell.sel(units=most)
        return sub["noise"].values, "accuracy", sub
    return cell["sessions"].values, "session_accuracy", cell


def robustness_figure(grid: xr.Dataset, classifier: str | None = None):
    """Accuracy vs units (at the lowest noise), vs noise (at the most units) and, if swept, vs
    sessions, one line per rig with s.e.m. bars and the Wilson band."""
    clf = classifier or str(grid["classifier"].values[0])
    panels = ["units", "noise"] + (["sessions"] if "session_accuracy_mean" in grid else [])
    chance = float(grid.attrs.get("chance", np.nan))
    lowest_noise = float(grid["noise"].min())
    titles = {"units": f"fewer units (noise sd {lowest_noise:g})", "noise": "more noise (all units)",
              "sessions": "fewer sessions (all units, no noise)"}
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(panels), len(panels), size=(3.4, 3.0))
        for ax, panel in zip(axes, panels):
            for rig in grid["rig"].values:
                cell = grid.sel(rig=rig, classifier=clf)
                measure = str(cell["measure"].values)
                style = _measure_style(measure)
                line = "#000000" if style["color"] == "#ffffff" else style["color"]
                x, prefix, sub = _robustness_line(grid, cell, panel)
                ax.fill_between(x, sub[f"{prefix}_low"].values, sub[f"{prefix}_high"].values, color=line,
                                alpha=0.12, lw=0)
                ax.errorbar(x, sub[f"{prefix}_mean"].values, yerr=sub[f"{prefix}_sem"].values, color=line,
                            marker=style["marker"], ls=style["ls"], ms=4, lw=1.5, capsize=2,
                            label=f"{rig} ({class_label(measure)})")
            _accuracy_axis(ax, chance)
            ax.set_title(titles[panel])
            if panel == "units":
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.set_xlabel(UNITS_LABEL)
            elif panel == "noise":
                ax.set_xlabel(NOISE_LABEL)
            else:
                ax.set_xticks(grid["sessions"].values)
                ax.set_xlabel(SESSIONS_LABEL)
        _legend(fig, axes[0], loc="outside lower center", ncol=len(grid["rig"]) + 1)
        fig.suptitle(f"robustness of {class_label(grid.attrs.get('target', 'class'))} identification ({clf})\n"
                     "rig: mean ± s.e.m. over splits; band: 95% Wilson interval")
    return fig


def plot_robustness(grid: xr.Dataset, stem, classifier: str | None = None) -> Figure:
    """Save :func:`robustness_figure` under ``stem``."""
    return save_figure(robustness_figure(grid, classifier), stem, "Accuracy vs units, noise and sessions")


# --------------------------------------------------------------------------- importance


def importance_figure(result: xr.Dataset, top: int = 12):
    """Mean importance over splits (± s.e.m.) by measure, statistic, function and the top
    observables, one row per method."""
    kind = "importance_type" if "importance_type" in result.dims else "method"
    methods = [str(m) for m in result[kind].values]
    groups = [g for g in ("measure", "statistic", "function", "observable") if f"importance_by_{g}" in result]
    names_width = _text_width(result["observable"].values) if "observable" in result.coords else 1.0
    with plt.rc_context(STYLE):
        size = (3.4 * len(groups) + names_width, 3.0 * len(methods))
        fig, axes = plt.subplots(len(methods), len(groups), figsize=size, squeeze=False, layout="constrained")
        for r, method in enumerate(methods):
            for c, group in enumerate(groups):
                ax = axes[r][c]
                values = result[f"importance_by_{group}"].sel({kind: method})
                mean = values.mean("split").values
                sem = values.std("split", ddof=1).values / np.sqrt(values.sizes["split"]) if values.sizes["split"] > 1 else None
                names = values[group].values.astype(str)
                if np.all(~np.isfinite(mean)):
                    ax.text(0.5, 0.5, f"{method}: not available", ha="center", va="center", transform=ax.transAxes)
                    ax.set_axis_off()
                    continue
                order = np.argsort(-np.nan_to_num(mean, nan=-np.inf))[: top if group == "observable" else None][::-1]
                ax.barh(range(len(order)), mean[order], xerr=None if sem is None else sem[order], color="#808080",
                        **BAR_EDGE, error_kw={"lw": 0.8})
                ticks = [names[i] if group == "observable" else class_label(names[i]) for i in order]
                ax.set_yticks(range(len(order)), ticks, fontsize=7)
                ax.set_ylabel(group if group != "observable" else f"observable (top {len(order)})")
                ax.set_xlabel(IMPORTANCE_LABELS.get(method, f"{method} importance"))
                ax.set_title(f"{method}: by {group}")
        fig.suptitle(f"feature importance for identifying {class_label(result.attrs.get('target', 'the class'))} "
                     f"({result.attrs.get('classifier', '')}, {class_label(result.attrs.get('feature_set', ''))} "
                     "features; mean ± s.e.m. over splits)")
    return fig


def plot_importance(result: xr.Dataset, stem, top: int = 12) -> Figure:
    """Save :func:`importance_figure` under ``stem``."""
    return save_figure(importance_figure(result, top), stem, "Feature importance")


# --------------------------------------------------------------------------- generalization


def generalization_figure(result: xr.Dataset, classifier: str | None = None, feature_set: str | None = None):
    """Held-out accuracy per level (with Wilson CIs) per feature set, and the train x test matrix."""
    clf = classifier or str(result["classifier"].values[0])
    sets = [str(f) for f in result["feature_set"].values]
    fs = feature_set or ("all" if "all" in sets else sets[0])
    factor = class_label(result.attrs.get("factor", "level"))
    has_matrix = "matrix_accuracy" in result
    levels = [str(level) for level in result["level"].values]
    with plt.rc_context(STYLE):
        bars_width = 2.4 + 0.25 * len(levels) * len(sets)
        matrix_width = max(1.5, 0.55 * len(levels)) + _text_width(levels) + 1.6
        fig, axes = plt.subplots(1, 1 + has_matrix, figsize=(bars_width + has_matrix * matrix_width, 3.6),
                                 squeeze=False, layout="constrained",
                                 gridspec_kw={"width_ratios": [bars_width] + [matrix_width] * has_matrix})
        ax = axes[0][0]
        values, errors = {}, {}
        for f in sets:
            cell = result.sel(classifier=clf, feature_set=f)
            values[f], ci = cell["accuracy"].values, cell["accuracy_ci"].values
            errors[f] = np.abs(np.stack([values[f] - ci[:, 0], ci[:, 1] - values[f]]))
        _grouped_bars(ax, levels, values, errors)
        _category_ticks(ax, levels)
        _accuracy_axis(ax, float(result.attrs.get("chance", np.nan)))
        ax.set_xlabel(f"held-out {factor}")
        _legend(ax, ax, fontsize=7, ncol=3, loc="upper left", title="features")
        _room_above(ax)
        ax.set_title(f"trained on every other {factor}\n(95% Wilson interval)")
        if has_matrix:
            m = result["matrix_accuracy"].sel(classifier=clf, feature_set=fs)
            im = _heatmap(axes[0][1], m.values, m["train_level"].values, m["test_level"].values)
            axes[0][1].set_xlabel(f"tested on {factor}")
            axes[0][1].set_ylabel(f"trained on {factor}")
            axes[0][1].set_title(f"trained on one {factor}, tested on each\n({class_label(fs)} features)")
            fig.colorbar(im, ax=axes[0][1], label=ACCURACY_LABEL, shrink=0.9)
        fig.suptitle(f"generalization of {class_label(result.attrs.get('target', ''))} identification "
                     f"over {factor} ({clf})")
    return fig


def plot_generalization(result: xr.Dataset, stem, classifier: str | None = None, feature_set: str | None = None) -> Figure:
    """Save :func:`generalization_figure` under ``stem``."""
    factor = result.attrs.get("factor", "level")
    return save_figure(generalization_figure(result, classifier, feature_set), stem, f"Generalization over {factor}")


# --------------------------------------------------------------------------- trajectory access


def trajectory_access_figure(result: xr.Dataset, classifier: str | None = None):
    """Accuracy (mean ± s.e.m.) for each access pattern, grouped by feature set."""
    clf = classifier or str(result["classifier"].values[0])
    access = [str(a) for a in result["access"].values]
    sets = [str(f) for f in result["feature_set"].values]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(min(11.0, 2.4 + 0.3 * len(access) * max(1, len(sets))), 3.6),
                               layout="constrained")
        values = {f: result["accuracy_mean"].sel(classifier=clf, feature_set=f).values for f in sets}
        errors = {f: result["accuracy_sem"].sel(classifier=clf, feature_set=f).values for f in sets}
        _grouped_bars(ax, access, values, errors)
        labels = [f"{class_label(a)}\n({int(n)} sessions)" for a, n in zip(access, result["n_sessions"].values)]
        ax.set_xticks(range(len(access)), labels)
        _accuracy_axis(ax, float(result.attrs.get("chance", np.nan)))
        _room_above(ax)
        ax.set_xlabel("sessions the classifier sees (access pattern)")
        _legend(ax, ax, fontsize=7, ncol=len(sets) + 1, loc="upper left", title="features")
        ax.set_title(f"identification of {class_label(result.attrs.get('target', 'the class'))} from part of "
                     f"the trajectory\n({clf}; mean ± s.e.m. over splits)")
    return fig


def plot_trajectory_access(result: xr.Dataset, stem, classifier: str | None = None) -> Figure:
    """Save :func:`trajectory_access_figure` under ``stem``."""
    return save_figure(trajectory_access_figure(result, classifier), stem, "Trajectory access")


# --------------------------------------------------------------------------- performance confound

_COHORT_STYLES = {"all": {"color": "#555555", "hatch": ""}, "matched": {"color": "#bdbdbd", "hatch": "//"}}
_BASELINE_STYLE = {"color": "#ffffff", "hatch": "xx"}


def _identification_bars(result: xr.Dataset, clf: str) -> list[tuple[str, float, float, dict]]:
    """(label, mean, s.e.m., style) of each identification bar: every feature set on all and on
    matched subjects, then the classifiers that see task performance only."""
    bars = []
    for f in result["feature_set"].values:
        for cohort in result["cohort"].values:
            cell = result.sel(cohort=cohort, classifier=clf, feature_set=f)
            bars.append((f"{class_label(f)}, {cohort} subjects", float(cell["accuracy_mean"]),
                         float(cell["accuracy_sem"]), _COHORT_STYLES.get(str(cohort), _COHORT_STYLES["all"])))
    for f in result["baseline_features"].values:
        cell = result.sel(classifier=clf, baseline_features=f)
        bars.append((f"performance only: {class_label(f)}", float(cell["baseline_accuracy_mean"]),
                     float(cell["baseline_accuracy_sem"]), _BASELINE_STYLE))
    return bars


def confound_figure(result: xr.Dataset, classifier: str | None = None):
    """Final task accuracy per class (all vs matched subjects), and identification accuracy of
    all, matched and performance-only classifiers."""
    clf = classifier or str(result["classifier"].values[0])
    classes = [str(c) for c in result["class"].values]
    target = class_label(result.attrs.get("target", "class"))
    bars = _identification_bars(result, clf)
    with plt.rc_context(STYLE):
        height = max(3.4, 0.22 * len(bars) + 1.4)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, height), layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 1.4]})
        x = np.arange(len(result["cohort"]))
        width = 0.8 / len(classes)
        for k, c in enumerate(classes):
            a1.bar(x + (k - (len(classes) - 1) / 2) * width, result["final_accuracy_mean"].sel({"class": c}).values,
                   width, color=rule_color(c), **BAR_EDGE, label=class_label(c))
        a1.set_xticks(x, [f"{c} subjects" for c in result["cohort"].values])
        a1.set_xlabel("subjects")
        a1.set_ylabel(TASK_ACCURACY_LABEL)
        a1.set_ylim(0, 1.05)
        a1.set_title(f"task performance by {target}")
        _legend(a1, a1, fontsize=7, loc="upper left", title=target)
        y = np.arange(len(bars))[::-1]
        for yi, (_, value, error, style) in zip(y, bars):
            a2.barh(yi, value, xerr=error, color=style["color"], hatch=style["hatch"], **BAR_EDGE,
                    error_kw={"lw": 0.7, "capsize": 1.5})
        a2.set_yticks(y, [label for label, *_ in bars], fontsize=7)
        a2.set_ylabel("what the classifier sees")
        _accuracy_axis(a2, float(result.attrs.get("chance", np.nan)), vertical=True, annotate=True)
        a2.set_xlabel(f"{ACCURACY_LABEL}, mean ± s.e.m.")
        a2.set_title(f"naming the {target} ({clf})")
    return fig


def plot_confound(result: xr.Dataset, stem, classifier: str | None = None) -> Figure:
    """Save :func:`confound_figure` under ``stem``."""
    return save_figure(confound_figure(result, classifier), stem, "Performance confound")


def draw_run_figures(run, observables: Sequence[str] | None = None) -> list[Figure]:
    """Every figure the run's recordings and analyses allow, into ``RUN/figures/``."""
    from simlab.analysis.analyses import load_result
    from simlab.analysis.common import open_run_recordings

    out = run.figures_dir
    figures = [plot_trajectories(open_run_recordings(run), out / "trajectories", observables)]
    for path in run.analysis_files().values():
        result = load_result(path)
        schema = str(result.attrs.get("schema", ""))
        stem = out / path.stem.replace(".", "-")
        if schema.startswith("simlab.identify"):
            figures.append(plot_confusion(result, stem))
        elif schema.startswith("simlab.importance"):
            figures.append(plot_importance(result, stem))
        elif schema.startswith("simlab.generalization"):
            figures.append(plot_generalization(result, stem))
        elif schema.startswith("simlab.robustness"):
            figures.append(plot_robustness(result, stem))
        elif schema.startswith("simlab.trajectory"):
            figures.append(plot_trajectory_access(result, stem))
        elif schema.startswith("simlab.confound"):
            figures.append(plot_confound(result, stem))
    return figures
