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
from simlab.analysis.identify import identify, select_sites
from simlab.errors import SimlabError
from simlab.specs.analyses import GeneralizationSpec, IdentifySpec

__all__ = ["format_generalization", "generalization", "leave_one_level_out"]

SCHEMA = "simlab.generalization/1"


def _subject_levels(ds: xr.Dataset, factor: str, spec: IdentifySpec) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Level of every subject, the levels among usable subjects, and which subjects are usable."""
    sites = select_sites(ds, spec.target, spec.health)
    if len(sites.labels) == 0:
        raise SimlabError("no sites: every subject diverged" + (" or did not learn" if spec.health.excludes else "")
                          + " or every layer is padding")
    if factor not in ds.coords or ds.coords[factor].dims != ("subject",):
        known = sorted(str(k) for k, c in ds.coords.items() if c.dims == ("subject",))
        raise SimlabError(f"factor {factor!r} is not a subject coordinate of the recording; known: {', '.join(known)}")
    uniq, inv = np.unique(ds.coords[factor].values, return_inverse=True)  # numbers sort as numbers
    text = np.array([str(u) for u in uniq], dtype=str)
    level_of = text[inv.reshape(-1)]
    usable = np.zeros(ds.sizes["subject"], bool)
    usable[sites.subject_index] = True
    levels = [str(t) for t in text if t in set(level_of[usable])]
    return level_of, levels, usable


def leave_one_level_out(ds: xr.Dataset, factor: str, spec: IdentifySpec) -> tuple[list, list[str], list[str]]:
    """Subject splits (train: every other level, test: the level), their level names, and the
    levels left out because the other levels hold fewer than 2 classes to train on."""
    level_of, levels, usable = _subject_levels(ds, factor, spec)
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
    progress: bool = False, n_jobs: int | None = None,
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
    splits, names, skipped = leave_one_level_out(ds, factor, spec)
    results = identify(ds, spec, progress=progress, n_jobs=n_jobs, subject_splits=splits, split_names=names)
    results = results.drop_vars("split_name").rename({"split": "level"}).assign_coords(level=np.array(names, dtype=str))
    results.attrs.update({
        "schema": SCHEMA,
        "title": f"generalization of {spec.target} identification over held-out {factor}",
        "factor": factor,
        "skipped_levels": ",".join(skipped),
    })
    if matrix:
        results["matrix_accuracy"] = _matrix(ds, factor, spec, results, progress, n_jobs)
    return results


def _matrix(ds, factor, spec, results, progress, n_jobs) -> xr.DataArray:
    level_of, levels, usable = _subject_levels(ds, factor, spec)
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
    """Held-out accuracy [95% Wilson CI] per level, one block per classifier, a column per feature set."""
    a = results.attrs
    sets = [str(f) for f in results["feature_set"].values]
    lines = [
        f"generalization of {a['target']} over held-out {a['factor']} "
        f"(chance {float(a['chance']):.3f}; each level tested after training on all the others)",
    ]
    lines += format_health(results)
    if a.get("skipped_levels"):
        lines.append(f"not held out (the others hold fewer than 2 classes): {a['skipped_levels']}")
    for clf in results["classifier"].values:
        lines += ["", f"{clf}:", "  " + f"{'held out':<16}{'sites':>6}  " + "  ".join(f"{f:>22}" for f in sets)]
        for level in results["level"].values:
            cell = results.sel(level=level, classifier=clf)
            values = []
            for f in sets:
                low, high = cell["accuracy_ci"].sel(feature_set=f).values
                values.append(f"{float(cell['accuracy'].sel(feature_set=f)):.3f} [{low:.2f}, {high:.2f}]")
            n = int(cell["n_test"].isel(feature_set=0))
            lines.append("  " + f"{str(level):<16}{n:>6}  " + "  ".join(f"{v:>22}" for v in values))
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
        _stem(factor): generalization(recording, factor, spec.identify, spec.matrix, progress, n_jobs)
        for factor in spec.factors
    }


register_analysis(
    "generalization", spec=GeneralizationSpec, compute=_of_each_factor, table=format_generalization,
    outputs=lambda spec: [_stem(factor) for factor in spec.factors],
)
