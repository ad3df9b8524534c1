"""Generalization to held-out levels of a subject factor (architecture, task, batch size, a
rule hyperparameter): does a classifier trained on some networks name the rule of networks
unlike any it has seen?

Leave-one-level-out: for each level of the factor, train on the sites of every other level and
test on the sites of that level. The optional matrix trains on one level and tests on each
other level; its diagonal is identification within the level (balanced splits, as
``identify``), the reference point the off-diagonal cells fall from.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from simlab.analysis.analyses import register_analysis
from simlab.analysis.health import format_health
from simlab.analysis.identify import format_shares, identify, select_sites
from simlab.errors import SimlabError
from simlab.specs.analyses import GeneralizationSpec, IdentifySpec

__all__ = ["binned_levels", "format_generalization", "generalization", "leave_one_level_out"]

SCHEMA = "simlab.generalization/1"


def binned_levels(values: np.ndarray, usable: np.ndarray, bins: int,
                  classes: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Quantile bins of a real-valued factor: the level name of every subject and the levels
    in increasing order.

    The edges are the ``1/bins, 2/bins, ...`` quantiles over the usable subjects, of the
    logarithm when every usable value is positive (rates spread log-uniformly); a subject
    falls in the first bin whose upper edge it does not exceed, so equal values share a bin
    and a bin can be empty (it is then no level). A level is named by the smallest and largest
    value among its usable subjects (``0.001-0.005``; one value: that value). Unusable subjects
    keep the level of their value's bin.

    With ``classes`` (each subject's target), the edges are each class's own quantiles, so
    every band holds subjects of every class, at that class's low, middle or high rates; the
    levels are named ``band 1 of 3`` (lowest) and so on.
    """
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values[usable]).any():
        raise SimlabError(f"{int(np.isnan(values[usable]).sum())} usable subjects have no value (NaN) of the factor")
    scale = np.log if (values[usable] > 0).all() else (lambda v: v)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = scale(values)

    def bin_of(among: np.ndarray) -> np.ndarray:
        edges = np.quantile(scaled[usable & among], np.arange(1, bins) / bins)
        return np.searchsorted(edges, scaled, side="left")

    if classes is not None:
        classes = np.asarray(classes)
        band = np.zeros(len(values), dtype=int)
        for c in np.unique(classes[usable]):
            band[classes == c] = bin_of(classes == c)[classes == c]
        names = {b: f"band {b + 1} of {bins}" for b in range(bins)}
        level_of = np.array([names[b] for b in band], dtype=str)
        return level_of, [names[b] for b in sorted(set(band[usable]))]
    band = bin_of(np.ones(len(values), bool))
    names = {}
    for b in np.unique(band[usable]):
        members = values[usable & (band == b)]
        low, high = members.min(), members.max()
        names[b] = f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}-{high:.3g}"
    level_of = np.array([names.get(b, f"bin{b}") for b in band], dtype=str)
    return level_of, [names[b] for b in sorted(names)]


def _subject_levels(ds: xr.Dataset, factor: str, spec: IdentifySpec, bins: int = 3,
                    per_class: bool = False) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Level of every subject, the levels among usable subjects, and which subjects are usable.

    A real-valued factor with more than ``bins`` distinct values among usable subjects is
    binned (:func:`binned_levels`; ``per_class``: within each class of the target)."""
    sites = select_sites(ds, spec.target, spec.health)
    if len(sites.labels) == 0:
        raise SimlabError("no sites: every subject diverged" + (" or did not learn" if spec.health.excludes else "")
                          + " or every layer is padding")
    if factor not in ds.coords or ds.coords[factor].dims != ("subject",):
        known = sorted(str(k) for k, c in ds.coords.items() if c.dims == ("subject",))
        raise SimlabError(f"factor {factor!r} is not a subject coordinate of the recording; known: {', '.join(known)}")
    usable = np.zeros(ds.sizes["subject"], bool)
    usable[sites.subject_index] = True
    values = ds.coords[factor].values
    if np.issubdtype(values.dtype, np.floating) and len(np.unique(values[usable])) > bins:
        try:
            classes = ds.coords[spec.target].values if per_class else None
            return (*binned_levels(values, usable, bins, classes), usable)
        except SimlabError as exc:
            raise SimlabError(f"factor {factor!r}: {exc}") from None
    uniq, inv = np.unique(values, return_inverse=True)  # numbers sort as numbers
    text = np.array([str(u) for u in uniq], dtype=str)
    level_of = text[inv.reshape(-1)]
    levels = [str(t) for t in text if t in set(level_of[usable])]
    return level_of, levels, usable


def leave_one_level_out(ds: xr.Dataset, factor: str, spec: IdentifySpec, bins: int = 3,
                        per_class: bool = False) -> tuple[list, list[str], list[str]]:
    """Subject splits (train: every other level, test: the level), their level names, and the
    levels left out because the other levels hold fewer than 2 classes to train on."""
    level_of, levels, usable = _subject_levels(ds, factor, spec, bins, per_class)
    if len(levels) < 2:
        raise SimlabError(f"factor {factor!r} has {len(levels)} level(s) among usable subjects; need at least 2")
    labels = ds.coords[spec.target].values
    splits, names, skipped = [], [], []
    for level in levels:
        test = np.flatnonzero(usable & (level_of == level))
        train = np.flatnonzero(usable & (level_of != level))
        if len(np.unique(labels[train])) < 2:
            skipped.append(level)
            continue
        splits.append((train, test))
        names.append(level)
    if not splits:
        raise SimlabError(f"no level of {factor!r} leaves at least 2 classes of {spec.target!r} to train on")
    return splits, names, skipped


def generalization(
    ds: xr.Dataset, factor: str, spec: IdentifySpec = IdentifySpec(), matrix: bool = True,
    progress: bool = False, n_jobs: int | None = None, bins: int = 3, bin_per_class: bool = False,
) -> xr.Dataset:
    """Identification of ``spec.target`` on each held-out level of ``factor``, trained on the
    other levels (all leave-one-level-out folds).

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (one rig's, or several combined along ``observable``).
    factor : str
        A subject coordinate of the recording other than the target: ``architecture``,
        ``task``, ``batch_size``, a rule hyperparameter.
    spec : IdentifySpec
        The identification settings (target, classifiers, features, preset, seed); its
        ``splits`` serve only the matrix's within-level diagonal.
    matrix : bool
        Also train on each single level and test on each other one.
    progress : bool
        Show progress bars.
    n_jobs : int, optional
        Worker processes, as for :func:`~simlab.analysis.identify.identify`.
    bins : int
        A real-valued factor (``learning_rate``) with more distinct values than ``bins`` is
        held out by quantile bins of its (log) value (:func:`binned_levels`).
    bin_per_class : bool
        Bin within each class of the target (each rule's own low, middle and high rates), so
        every held-out band holds every class.

    Returns
    -------
    xarray.Dataset
        ``identify``'s results with one split per held-out level (dimension ``level``), so
        ``accuracy_ci`` is the Wilson interval over that level's sites. With ``matrix``,
        ``matrix_accuracy`` (train_level, test_level, classifier, feature_set): trained on one
        level, tested on another; the diagonal is the mean accuracy of balanced splits within
        the level (NaN where a level cannot be split or trained on).

    Examples
    --------
    >>> from simlab.analysis.common import open_run_recordings
    >>> from simlab.rundir import RunDirectory
    >>> recording = open_run_recordings(RunDirectory("runs/quickstart"), ["synapse"])
    >>> held_out = generalization(recording, "architecture", IdentifySpec(classifiers=["linear_svm"]))
    >>> held_out["accuracy"].sel(classifier="linear_svm", feature_set="weight")
    """
    if factor == spec.target:
        raise SimlabError(f"factor {factor!r} is the identification target; generalize over another factor")
    splits, names, skipped = leave_one_level_out(ds, factor, spec, bins, bin_per_class)
    labels = ds.coords[spec.target].values.astype(str)
    unseen = {name: sorted(set(labels[test]) - set(labels[train])) for (train, test), name in zip(splits, names)}
    results = identify(ds, spec, progress=progress, n_jobs=n_jobs, subject_splits=splits, split_names=names)
    results = results.drop_vars("split_name").rename({"split": "level"}).assign_coords(level=np.array(names, dtype=str))
    results.attrs.update({
        "schema": SCHEMA,
        "title": f"generalization of {spec.target} identification over held-out {factor}",
        "factor": factor,
        "skipped_levels": ",".join(skipped),
        "binned_levels": int(_binned(ds, factor, spec, bins, bin_per_class)),
        "bin_per_class": int(bin_per_class),
        "classes_not_trained": "; ".join(f"{name}: {', '.join(c)}" for name, c in unseen.items() if c),
        "bins": int(bins),
    })
    if matrix:
        results["matrix_accuracy"] = _matrix(ds, factor, spec, results, progress, n_jobs, bins, bin_per_class)
    return results


def _binned(ds: xr.Dataset, factor: str, spec: IdentifySpec, bins: int, per_class: bool) -> bool:
    """Whether the factor's levels are quantile bins rather than its values."""
    level_of, _, _ = _subject_levels(ds, factor, spec, bins, per_class)
    return len(np.unique(level_of)) < len(np.unique(ds.coords[factor].values))


def _matrix(ds, factor, spec, results, progress, n_jobs, bins, per_class) -> xr.DataArray:
    level_of, levels, usable = _subject_levels(ds, factor, spec, bins, per_class)
    labels = ds.coords[spec.target].values
    clfs, sets = results["classifier"].values, results["feature_set"].values
    grid = xr.DataArray(
        np.full((len(levels), len(levels), len(clfs), len(sets)), np.nan),
        dims=("train_level", "test_level", "classifier", "feature_set"),
        coords={"train_level": levels, "test_level": levels, "classifier": clfs, "feature_set": sets},
        attrs={"long_name": "accuracy training on one level (row), testing on another; diagonal: "
               "mean over balanced splits within the level", "units": "1"},
    )
    pairs, names = [], []
    for a in levels:
        own = np.flatnonzero(usable & (level_of == a))
        if len(np.unique(labels[own])) < 2:
            continue
        for b in levels:
            if b != a and len(levels) == 2 and b in results["level"].values:
                # with two levels, training on a and testing on b is the leave-one-out fold of b
                acc = results["accuracy"].sel(level=b).reindex_like(grid.isel(train_level=0, test_level=0))
                grid.loc[{"train_level": a, "test_level": b}] = acc
            elif b != a:
                pairs.append((own, np.flatnonzero(usable & (level_of == b))))
                names.append((a, b))
            else:
                within = _within(ds.isel(subject=own), spec, n_jobs)
                if within is not None:
                    grid.loc[{"train_level": a, "test_level": a}] = within.reindex_like(grid.isel(train_level=0, test_level=0))
    if pairs:
        cross = identify(ds, spec, progress=progress, n_jobs=n_jobs, subject_splits=pairs)
        for s, (a, b) in enumerate(names):
            acc = cross["accuracy"].isel(split=s).reindex_like(grid.isel(train_level=0, test_level=0))
            grid.loc[{"train_level": a, "test_level": b}] = acc
    return grid


def _within(level_ds: xr.Dataset, spec: IdentifySpec, n_jobs) -> xr.DataArray | None:
    """Mean accuracy of balanced splits inside one level, or None where it cannot be split."""
    try:
        return identify(level_ds, spec, n_jobs=n_jobs)["accuracy_mean"]
    except SimlabError:  # too few subjects per class (or finite observables) in this level
        return None


def format_generalization(results: xr.Dataset) -> str:
    """Held-out accuracy [95% Wilson CI] (subject bootstrap 95% CI) per level and pooled over
    levels, one block per classifier, a column per feature set; then the shares of predictions
    of each class per held-out level."""
    a = results.attrs
    sets = [str(f) for f in results["feature_set"].values]
    boot = "accuracy_boot_ci" in results and not bool(results["accuracy_boot_ci"].isnull().all())
    lines = [
        f"generalization of {a['target']} over held-out {a['factor']} "
        f"(chance {float(a['chance']):.3f}; each level tested after training on all the others)",
    ]
    lines += format_health(results)
    if a.get("classes_not_trained"):
        lines.append("held-out levels with classes no training subject has (those sites cannot be named "
                     f"right): {a['classes_not_trained']}")
    if a.get("binned_levels"):
        among = f"each {a['target']}'s subjects" if a.get("bin_per_class") else "subjects"
        lines.append(f"levels: {a['factor']} in {a['bins']} quantile bins across {among} (of its log when positive)")
    if a.get("transform") or a.get("group_by"):
        lines.append(f"features transformed: {str(a.get('transform', 'raw')).replace(',', ' + ')}; "
                     f"inner cross-validation grouped by {a.get('group_by')}")
    lines.append("accuracy [Wilson 95% over the level's sites]"
                 + (" (subject bootstrap 95%: the level's subjects resampled)" if boot else ""))
    width = 36 if boot else 22

    def text(acc, wilson, subjects) -> str:
        out = f"{float(acc):.3f} [{wilson[0]:.2f}, {wilson[1]:.2f}]"
        return out + (f" ({subjects[0]:.2f}, {subjects[1]:.2f})" if boot else "")

    for clf in results["classifier"].values:
        lines += ["", f"{clf}:", "  " + f"{'held out':<16}{'sites':>6}  " + "  ".join(f"{f:>{width}}" for f in sets)]
        for level in results["level"].values:
            cell = results.sel(level=level, classifier=clf)
            values = [text(cell["accuracy"].sel(feature_set=f), cell["accuracy_ci"].sel(feature_set=f).values,
                           cell["accuracy_boot_ci"].sel(feature_set=f).values if boot else None) for f in sets]
            n = int(cell["n_test"].isel(feature_set=0))
            lines.append("  " + f"{str(level):<16}{n:>6}  " + "  ".join(f"{v:>{width}}" for v in values))
        if "accuracy_mean_ci" in results and results.sizes["level"] > 1:
            cell = results.sel(classifier=clf)
            pooled = cell["correct"].sum("level") / cell["n_test"].sum("level")
            values = [text(pooled.sel(feature_set=f), cell["accuracy_mean_ci"].sel(feature_set=f).values,
                           cell["accuracy_mean_boot_ci"].sel(feature_set=f).values if boot else None) for f in sets]
            n = int(cell["n_test"].isel(feature_set=0).sum())
            lines.append("  " + f"{'pooled':<16}{n:>6}  " + "  ".join(f"{v:>{width}}" for v in values))
    if "prediction_share" in results:
        lines += ["", "predicted shares per held-out level (fraction of its sites named as each class):"]
        for level in results["level"].values:
            share = results["prediction_share"].sel(level=level)
            lines += [f"  {level}:", *format_shares(share, sets if len(sets) <= 4 else sets[-1:], indent="    ")]
    if "matrix_accuracy" in results:
        best = sets[-1]
        clf = str(results["classifier"].values[0])
        m = results["matrix_accuracy"].sel(classifier=clf, feature_set=best)
        tests = [str(t) for t in m["test_level"].values]
        lines += ["", f"train on one level (rows), test on another (columns): {clf}, {best}; diagonal: within-level splits"]
        lines.append("  " + f"{'':<16}" + "".join(f"{t:>12}" for t in tests))
        for tr in m["train_level"].values:
            lines.append("  " + f"{str(tr):<16}" + "".join(f"{float(m.sel(train_level=tr, test_level=t)):>12.3f}" for t in tests))
    return "\n".join(lines)


def _stem(factor: str) -> str:
    return f"generalization-{factor}"


def _of_each_factor(
    recording: xr.Dataset, spec: GeneralizationSpec, progress: bool = False, n_jobs: int | None = None
) -> dict[str, xr.Dataset]:
    """:func:`generalization` over each of ``spec.factors``, by output stem."""
    return {
        _stem(factor): generalization(recording, factor, spec.identify, spec.matrix, progress, n_jobs, spec.bins,
                                       spec.bin_per_class)
        for factor in spec.factors
    }


register_analysis(
    "generalization", spec=GeneralizationSpec, compute=_of_each_factor, table=format_generalization,
    outputs=lambda spec: [_stem(factor) for factor in spec.factors],
)
