"""Figures of a run's recordings and analyses, each saved as PNG and SVG.

Every function takes a recording or a result Dataset and a path stem, draws with
matplotlib's Agg backend (no display needed), and returns the two files written. Colours are
fixed per class (learning rule) across figures, so a rule looks the same everywhere.
"""

from __future__ import annotations

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
    "DEFAULT_OBSERVABLES",
    "Figure",
    "draw_run_figures",
    "plot_confound",
    "plot_confusion",
    "plot_generalization",
    "plot_importance",
    "plot_robustness",
    "plot_trajectories",
    "plot_trajectory_access",
]

# the reference's Figure 1 shows a few statistics of each measure over training
DEFAULT_OBSERVABLES = (
    "weight_raw_median", "weight_raw_norm", "activation_raw_median", "activation_raw_norm",
    "activity_change_raw", "activity_change_abs",
)
RIG_COLORS = {"weight": "#d95f02", "activation": "#1b9e77", "activity_change": "#7570b3"}
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none",
}


@dataclass(frozen=True)
class Figure:
    png: Path
    svg: Path
    title: str


def _save(fig, stem: Path, title: str) -> Figure:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, dpi=130, bbox_inches="tight", metadata={"Software": "simlab"})
    fig.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return Figure(png, svg, title)


def _class_colors(classes: Sequence[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10")
    return {c: matplotlib.colors.to_hex(cmap(i % 10)) for i, c in enumerate(classes)}


def _grid(n: int, ncols: int, size=(3.2, 2.5)):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


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


def plot_trajectories(ds: xr.Dataset, stem, observables: Sequence[str] | None = None,
                      target: str = "learning_rule") -> Figure:
    """Observables over training by class: mean ± s.e.m. over sites (the reference's Figure 1)."""
    available = [str(o) for o in ds["observable"].values]
    if observables:
        missing = [o for o in observables if o not in available]
        if missing:
            raise SimlabError(f"observable(s) {', '.join(missing)} not in the recordings; "
                              f"they have e.g. {', '.join(available[:6])}")
        chosen = list(observables)
    else:
        chosen = [o for o in DEFAULT_OBSERVABLES if o in available] or available[:4]
    classes = sorted(np.unique(ds[target].values.astype(str)))
    colors = _class_colors(classes)
    x = ds["fraction"].values if "fraction" in ds.coords else np.arange(ds.sizes["session"])
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(chosen), 3)
        for ax, name in zip(axes, chosen):
            t = site_trajectories(ds, name, target)
            for c in classes:
                if c not in t["label"].values:
                    continue
                m, s = t["mean"].sel(label=c).values, t["sem"].sel(label=c).values
                ax.plot(x, m, color=colors[c], lw=1.6, label=c)
                ax.fill_between(x, m - s, m + s, color=colors[c], alpha=0.25, lw=0)
            ax.set_title(name.replace("_", " "))
            ax.set_xlabel("fraction of training")
        handles, labels = next(iter(fig.axes)).get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(classes), 4), frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(classes) > 4)))
        fig.suptitle(f"observables over training by {target.replace('_', ' ')} (mean ± s.e.m. over sites)", y=1.0)
        fig.tight_layout(rect=(0, 0.06, 1, 0.98))
    return _save(fig, stem, "Observables over training")


def _heatmap(ax, values: np.ndarray, rows, cols, fmt="{:.2f}", vmax=1.0, cmap="Blues", width: int = 16):
    im = ax.imshow(values, vmin=0, vmax=vmax, cmap=cmap, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "–" if not np.isfinite(v) else fmt.format(v)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(v) and v > 0.6 * vmax else "black")
    ax.set_xticks(range(len(cols)), [_short(c, width) for c in cols], rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [_short(r, width) for r in rows])
    ax.spines[:].set_visible(False)
    return im


def _short(label, width: int = 16) -> str:
    text = str(label).replace("_", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_confusion(results: xr.Dataset, stem, classifier: str | None = None, title: str = "") -> Figure:
    """Row-normalized confusion matrices (recall per true class), one panel per feature set."""
    clf = classifier or str(results["classifier"].values[0])
    sets = [str(f) for f in results["feature_set"].values if results["feature_kind"].sel(feature_set=f) != "observable"] \
        if "feature_kind" in results.coords else [str(f) for f in results["feature_set"].values]
    classes = [str(c) for c in results["true_class"].values]
    with plt.rc_context(STYLE):
        side = 0.55 * len(classes) + 1.6
        fig, axes = _grid(len(sets), 2 if len(classes) > 3 else 4, size=(side + 1.2, side + 0.4))
        for ax, f in zip(axes, sets):
            cm = results["confusion"].sel(classifier=clf, feature_set=f).values.astype(float)
            norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            _heatmap(ax, norm, classes, classes, width=22)
            acc = float(results["accuracy_mean"].sel(classifier=clf, feature_set=f))
            ax.set_title(f"{f.replace('_', ' ')}: {acc:.2f}")
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
        fig.suptitle(title or f"confusion ({clf}), fraction of each true class; title: mean accuracy", y=1.0)
        fig.tight_layout()
    return _save(fig, stem, title or "Confusion matrices")


def plot_robustness(grid: xr.Dataset, stem, classifier: str | None = None) -> Figure:
    """Accuracy vs units (at the lowest noise), vs noise (at the most units) and, if swept, vs
    sessions, one line per rig with s.e.m. bars and the Wilson band."""
    clf = classifier or str(grid["classifier"].values[0])
    panels = ["units", "noise"] + (["sessions"] if "session_accuracy_mean" in grid else [])
    chance = float(grid.attrs.get("chance", np.nan))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            for rig in grid["rig"].values:
                cell = grid.sel(rig=rig, classifier=clf)
                color = RIG_COLORS.get(str(cell["measure"].values), None)
                if panel == "units":
                    order = np.argsort(cell["units_recorded"].values)
                    sub = cell.isel(units=order).sel(noise=float(grid["noise"].min()))
                    x = sub["units_recorded"].values
                    prefix = "accuracy"
                elif panel == "noise":
                    most = str(cell["units"].values[int(np.argmax(cell["units_recorded"].values))])
                    sub = cell.sel(units=most)
                    x = sub["noise"].values
                    prefix = "accuracy"
                else:
                    sub, x, prefix = cell, cell["sessions"].values, "session_accuracy"
                m, s = sub[f"{prefix}_mean"].values, sub[f"{prefix}_sem"].values
                ax.fill_between(x, sub[f"{prefix}_low"].values, sub[f"{prefix}_high"].values, color=color, alpha=0.12, lw=0)
                ax.errorbar(x, m, yerr=s, color=color, marker="o", ms=4, lw=1.5, capsize=2,
                            label=f"{rig} ({str(cell['measure'].values).replace('_', ' ')})")
            ax.axhline(chance, color="0.5", ls="--", lw=0.8)
            ax.set_ylim(min(0.0, chance - 0.05), 1.03)
            ax.set_ylabel("test accuracy")
            if panel == "units":
                ax.set_xscale("log")
                ax.set_xlabel(f"units recorded per site (noise {float(grid['noise'].min()):g})")
            elif panel == "noise":
                ax.set_xlabel("noise sd (all units)")
            else:
                ax.set_xlabel("sessions (all units, no noise)")
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axes[0][0].legend(frameon=False, loc="lower right")
        fig.suptitle(f"robustness ({clf}): mean ± s.e.m. over splits, band: 95% Wilson; dashed: chance", y=1.02)
        fig.tight_layout()
    return _save(fig, stem, "Accuracy vs units, noise and sessions")


def plot_importance(result: xr.Dataset, stem, top: int = 12) -> Figure:
    """Mean importance over splits (± s.e.m.) by measure, statistic, function and the top
    observables, one row per method."""
    kind = "importance_type" if "importance_type" in result.dims else "method"
    methods = [str(m) for m in result[kind].values]
    groups = [g for g in ("measure", "statistic", "function", "observable") if f"importance_by_{g}" in result]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(methods), len(groups), figsize=(3.3 * len(groups), 2.9 * len(methods)),
                                 squeeze=False)
        for r, method in enumerate(methods):
            for c, group in enumerate(groups):
                ax = axes[r][c]
                values = result[f"importance_by_{group}"].sel({kind: method})
                mean = values.mean("split").values
                sem = values.std("split", ddof=1).values / np.sqrt(values.sizes["split"]) if values.sizes["split"] > 1 else None
                names = values[group].values.astype(str)
                if np.all(~np.isfinite(mean)):
                    ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
                    ax.set_axis_off()
                    continue
                order = np.argsort(-np.nan_to_num(mean, nan=-np.inf))[: top if group == "observable" else None][::-1]
                ax.barh(range(len(order)), mean[order], xerr=None if sem is None else sem[order], color="#4c72b0",
                        error_kw={"lw": 0.8})
                ax.set_yticks(range(len(order)), [_short(names[i], 26) for i in order], fontsize=7)
                ax.set_title(f"{method}: by {group}")
        fig.suptitle(f"feature importance ({result.attrs.get('classifier', '')}, feature set "
                     f"{result.attrs.get('feature_set', '')}; mean ± s.e.m. over splits)", y=1.0)
        fig.tight_layout()
    return _save(fig, stem, "Feature importance")


def plot_generalization(result: xr.Dataset, stem, classifier: str | None = None, feature_set: str | None = None) -> Figure:
    """Held-out accuracy per level (with Wilson CIs) per feature set, and the train x test matrix."""
    clf = classifier or str(result["classifier"].values[0])
    sets = [str(f) for f in result["feature_set"].values]
    fs = feature_set or ("all" if "all" in sets else sets[0])
    factor = result.attrs.get("factor", "level")
    has_matrix = "matrix_accuracy" in result
    with plt.rc_context(STYLE):
        levels = [str(level) for level in result["level"].values]
        fig, axes = plt.subplots(1, 2 if has_matrix else 1, figsize=(4.2 + 3.4 * has_matrix + 0.15 * len(levels), 3.2),
                                 squeeze=False)
        ax = axes[0][0]
        width = 0.8 / len(sets)
        for k, f in enumerate(sets):
            cell = result.sel(classifier=clf, feature_set=f)
            acc = cell["accuracy"].values
            ci = cell["accuracy_ci"].values
            x = np.arange(len(levels)) + (k - (len(sets) - 1) / 2) * width
            color = RIG_COLORS.get(f, "0.3")
            ax.bar(x, acc, width, color=color, label=f.replace("_", " "),
                   yerr=np.abs(np.stack([acc - ci[:, 0], ci[:, 1] - acc])), error_kw={"lw": 0.7, "capsize": 1.5})
        ax.axhline(float(result.attrs.get("chance", np.nan)), color="0.5", ls="--", lw=0.8)
        ax.set_xticks(range(len(levels)), [_short(level) for level in levels])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"held-out {factor}")
        ax.set_ylabel("test accuracy")
        ax.legend(frameon=False, fontsize=7, ncol=len(sets), loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax.set_title("trained on every other level (95% Wilson)")
        if has_matrix:
            m = result["matrix_accuracy"].sel(classifier=clf, feature_set=fs)
            im = _heatmap(axes[0][1], m.values, m["train_level"].values, m["test_level"].values)
            axes[0][1].set_xlabel(f"test {factor}")
            axes[0][1].set_ylabel(f"train {factor}")
            axes[0][1].set_title(f"train on one level ({fs.replace('_', ' ')})")
            fig.colorbar(im, ax=axes[0][1], fraction=0.046, pad=0.04)
        fig.suptitle(f"generalization of {result.attrs.get('target', '')} over {factor} ({clf})", y=1.02)
        fig.tight_layout()
    return _save(fig, stem, f"Generalization over {factor}")


def plot_trajectory_access(result: xr.Dataset, stem, classifier: str | None = None) -> Figure:
    """Accuracy (mean ± s.e.m.) for each access pattern, grouped by feature set."""
    clf = classifier or str(result["classifier"].values[0])
    access = [str(a) for a in result["access"].values]
    sets = [str(f) for f in result["feature_set"].values]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(min(11.0, 1.2 + 0.45 * len(access) * max(1, len(sets))), 3.2))
        width = 0.8 / len(sets)
        for k, f in enumerate(sets):
            cell = result.sel(classifier=clf, feature_set=f)
            x = np.arange(len(access)) + (k - (len(sets) - 1) / 2) * width
            ax.bar(x, cell["accuracy_mean"].values, width, yerr=cell["accuracy_sem"].values,
                   color=RIG_COLORS.get(f, "0.3"), label=f.replace("_", " "), error_kw={"lw": 0.7, "capsize": 1.5})
        labels = [f"{a}\n({int(n)} sessions)" for a, n in zip(access, result["n_sessions"].values)]
        ax.set_xticks(range(len(access)), labels, fontsize=7)
        ax.axhline(float(result.attrs.get("chance", np.nan)), color="0.5", ls="--", lw=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy")
        ax.legend(frameon=False, fontsize=7, ncol=len(sets), loc="upper center", bbox_to_anchor=(0.5, -0.22))
        ax.set_title(f"identification from part of the trajectory ({clf}; mean ± s.e.m.)")
        fig.tight_layout()
    return _save(fig, stem, "Trajectory access")


def plot_confound(result: xr.Dataset, stem, classifier: str | None = None) -> Figure:
    """Final accuracy per class (all vs matched subjects), and identification accuracy of all,
    matched and performance-only classifiers."""
    clf = classifier or str(result["classifier"].values[0])
    classes = [str(c) for c in result["class"].values]
    colors = _class_colors(classes)
    with plt.rc_context(STYLE):
        n_bars = result.sizes["feature_set"] * result.sizes["cohort"] + result.sizes["baseline_features"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.0, max(3.2, 0.22 * n_bars + 1.0)),
                                     gridspec_kw={"width_ratios": [1, 1.3]})
        x = np.arange(len(result["cohort"]))
        width = 0.8 / len(classes)
        for k, c in enumerate(classes):
            a1.bar(x + (k - (len(classes) - 1) / 2) * width, result["final_accuracy_mean"].sel({"class": c}).values,
                   width, color=colors[c], label=c)
        a1.set_xticks(x, [str(c) for c in result["cohort"].values])
        a1.set_ylabel("mean final test accuracy")
        a1.set_title("task performance by class")
        a1.set_ylim(0, 1.2)
        a1.legend(frameon=False, fontsize=7, loc="upper center", ncol=2)
        bars, values, errors, colors_ = [], [], [], []
        cohort_color = {"all": "#4c72b0", "matched": "#8da0cb"}
        for f in result["feature_set"].values:
            for cohort in result["cohort"].values:
                cell = result.sel(cohort=cohort, classifier=clf, feature_set=f)
                bars.append(f"{str(f).replace('_', ' ')}, {cohort} subjects")
                values.append(float(cell["accuracy_mean"]))
                errors.append(float(cell["accuracy_sem"]))
                colors_.append(cohort_color.get(str(cohort), "#4c72b0"))
        for f in result["baseline_features"].values:
            cell = result.sel(classifier=clf, baseline_features=f)
            bars.append(f"performance only: {str(f).replace('_', ' ')}")
            values.append(float(cell["baseline_accuracy_mean"]))
            errors.append(float(cell["baseline_accuracy_sem"]))
            colors_.append("#c44e52")
        y = np.arange(len(bars))[::-1]
        a2.barh(y, values, xerr=errors, color=colors_, error_kw={"lw": 0.7, "capsize": 1.5})
        a2.axvline(float(result.attrs.get("chance", np.nan)), color="0.5", ls="--", lw=0.8)
        a2.set_yticks(y, bars, fontsize=7)
        a2.set_xlim(0, 1.05)
        a2.set_xlabel("test accuracy (mean ± s.e.m.)")
        a2.set_title(f"naming the {result.attrs.get('target', 'class').replace('_', ' ')} ({clf})")
        fig.tight_layout()
    return _save(fig, stem, "Performance confound")


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
            figures.append(plot_confusion(result, stem, title=f"{path.stem}: confusion matrices"))
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
