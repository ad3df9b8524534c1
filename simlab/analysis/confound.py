"""The performance confound a reviewer raised: is identification a side effect of the rules
reaching different task performance?

Two answers. Matching: identify again among subjects matched on final test accuracy (groups
of one subject per class within a caliper of each other, or quantile bins keeping the same
number of subjects of every class), so within the matched cohort every class has the same
performance distribution up to the caliper or bin width.
Baseline: name the class from performance alone, the loss curve and the test-accuracy curve
(and, separately, the final accuracy), with the same classifiers and splits as identification.
If the baseline is near chance while matched identification stays high, the recordings carry
information about the rule beyond how well it trained.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.analysis.analyses import register_analysis
from simlab.analysis.classifiers import Layout, classifier_label, fit_predict
from simlab.analysis.health import assess, copy_health, format_health
from simlab.analysis.identify import balanced_splits, identify, per_class_metrics
from simlab.errors import SimlabError
from simlab.specs.analyses import ConfoundSpec, HealthSpec, IdentifySpec

__all__ = ["confound", "curve_features", "format_confound", "match_nearest", "match_on_performance",
           "performance_baseline"]

SCHEMA = "simlab.confound/1"


def _usable(subjects: xr.Dataset, health: HealthSpec) -> np.ndarray:
    """Subjects that did not diverge (and, with ``health.min_gain``, learned) with a finite final accuracy."""
    kept, _ = assess(subjects, health)
    return kept & np.isfinite(subjects["final_accuracy"].values)


def match_on_performance(
    subjects: xr.Dataset, target: str, bins: int, seed: int, health: HealthSpec = HealthSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of matched subjects, and each subject's bin (-1: unusable or unmatched).

    Bins are quantiles of final accuracy over usable subjects. A bin that lacks a class is
    dropped; the others keep, per class, a seeded random draw of as many subjects as the
    bin's rarest class has.
    """
    usable = _usable(subjects, health)
    accuracy = subjects["final_accuracy"].values.astype(np.float64)
    labels = subjects[target].values.astype(str)
    classes = np.unique(labels[usable])
    edges = np.quantile(accuracy[usable], np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, accuracy, side="right") - 1, 0, bins - 1)
    which = np.where(usable, which, -1)
    rng = np.random.default_rng([seed, 7])
    keep = []
    for b in range(bins):
        members = {c: np.flatnonzero((which == b) & (labels == c)) for c in classes}
        n = min(len(m) for m in members.values())
        if n == 0:
            continue
        for c in classes:
            keep.extend(rng.choice(members[c], n, replace=False).tolist())
    keep = np.array(sorted(keep), dtype=np.int64)
    assigned = np.full(len(labels), -1)
    assigned[keep] = which[keep]
    return keep, assigned


def match_nearest(
    subjects: xr.Dataset, target: str, caliper: float, health: HealthSpec = HealthSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of matched subjects, and each subject's match group (-1: not matched).

    Greedy nearest-neighbour matching without replacement: the subjects of the rarest class
    (ties: the first in order), from the lowest final accuracy up, each take the nearest unused
    subject of every other class; the group is kept only if every one lies within ``caliper``
    of it. Deterministic: ties in distance go to the earlier subject.
    """
    usable = _usable(subjects, health)
    accuracy = subjects["final_accuracy"].values.astype(np.float64)
    labels = subjects[target].values.astype(str)
    classes, counts = np.unique(labels[usable], return_counts=True)
    rarest = classes[int(np.argmin(counts))]
    free = usable.copy()
    group = np.full(len(labels), -1)
    anchors = np.flatnonzero(usable & (labels == rarest))
    for anchor in anchors[np.argsort(accuracy[anchors], kind="stable")]:
        members = [anchor]
        for c in classes:
            if c == rarest:
                continue
            candidates = np.flatnonzero(free & (labels == c))
            if len(candidates) == 0:
                break
            nearest = candidates[int(np.argmin(np.abs(accuracy[candidates] - accuracy[anchor])))]
            if abs(accuracy[nearest] - accuracy[anchor]) > caliper:
                break
            members.append(nearest)
        else:
            free[members] = False
            group[members] = group.max() + 1
    return np.flatnonzero(group >= 0), group


def curve_features(subjects: xr.Dataset, points: int) -> tuple[np.ndarray, Layout]:
    """Loss and test-accuracy curves resampled to ``points`` each, as (subject, 2*points).

    The loss is averaged over ``points`` consecutive runs of training steps (smoothing the
    minibatch noise); the test accuracy, known at the sessions, is interpolated at the centre
    step of each run. Laid out observable-major, like recording trajectories.
    """
    loss = subjects["loss"].transpose("subject", "step").values.astype(np.float64)
    steps = subjects["step"].values.astype(np.float64)
    if points > len(steps):
        raise SimlabError(f"curve_points {points} is more than the {len(steps)} training steps recorded")
    chunks = np.array_split(np.arange(len(steps)), points)
    loss_curve = np.stack([loss[:, c].mean(axis=1) for c in chunks], axis=1)
    centres = np.array([steps[c].mean() for c in chunks])
    session_steps = subjects["session_step"].values.astype(np.float64)
    test = subjects["test_accuracy"].transpose("subject", "session").values.astype(np.float64)
    acc_curve = np.stack([np.interp(centres, session_steps, row) for row in test])
    return np.hstack([loss_curve, acc_curve]), Layout(sessions=points, channels=2)


def performance_baseline(
    subjects: xr.Dataset, spec: IdentifySpec = IdentifySpec(), points: int = 20, progress: bool = False
) -> xr.Dataset:
    """Accuracy of naming ``spec.target`` per subject from performance alone.

    Feature sets: ``curves`` (loss and test-accuracy curves) and ``final_accuracy``. Balanced
    splits of subjects (``spec.splits``, ``spec.test_fraction``, ``spec.seed``); the classifiers
    of ``spec``. Subjects that diverged or have non-finite curves are left out.
    """
    curves, layout = curve_features(subjects, points)
    final = subjects["final_accuracy"].values.astype(np.float64)[:, None]
    usable = _usable(subjects, spec.health) & np.isfinite(curves).all(axis=1)
    idx = np.flatnonzero(usable)
    labels = subjects[spec.target].values.astype(str)[idx]
    classes = sorted(np.unique(labels))
    if len(classes) < 2:
        raise SimlabError(f"the performance baseline needs 2 classes of {spec.target!r}; got {len(classes)}")
    sets = {"curves": (curves[idx], layout), "final_accuracy": (final[idx], Layout(sessions=1, channels=1))}
    groups = np.arange(len(idx))
    splits = balanced_splits(labels, groups, spec.splits, spec.test_fraction, spec.seed)
    clf_names = [classifier_label(c) for c in spec.classifiers]
    accuracy = np.full((len(clf_names), len(sets), len(splits)), np.nan)
    pos = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(clf_names), len(sets), len(classes), len(classes)), np.int64)
    work = [(f, s) for f in range(len(sets)) for s in range(len(splits))]
    for f, s in tqdm(work, desc="performance baseline", unit="split", disable=not progress):
        X, lay = list(sets.values())[f]
        train, test = splits[s]
        for c, entry in enumerate(spec.classifiers):
            pred = fit_predict(X, labels, train, test, entry, groups=groups, preset=spec.preset, seed=spec.seed,
                               split=s, layout=lay).predictions
            accuracy[c, f, s] = np.mean(pred == labels[test])
            np.add.at(confusion[c, f], ([pos[x] for x in labels[test]], [pos[p] for p in pred]), 1)
    n = len(splits)
    dims = ("classifier", "feature_set")
    sem = accuracy.std(axis=-1, ddof=1) / np.sqrt(n) if n > 1 else np.full(accuracy.shape[:2], np.nan)
    return xr.Dataset(
        {
            "baseline_accuracy": ((*dims, "split"), accuracy, {"long_name": "test accuracy from performance alone"}),
            "baseline_accuracy_mean": (dims, accuracy.mean(axis=-1)),
            "baseline_accuracy_sem": (dims, sem),
            "baseline_confusion": ((*dims, "true_class", "predicted_class"), confusion),
            "baseline_recall": ((*dims, "class"), per_class_metrics(confusion)["recall"]),
        },
        coords={
            "classifier": np.array(clf_names, dtype=str),
            "feature_set": np.array(list(sets), dtype=str),
            "split": np.arange(n),
            "true_class": np.array(classes, dtype=str),
            "predicted_class": np.array(classes, dtype=str),
            "class": np.array(classes, dtype=str),
        },
        attrs={"baseline_subjects": int(len(idx)), "curve_points": int(points)},
    )


def confound(
    ds: xr.Dataset, subjects: xr.Dataset, spec: IdentifySpec = IdentifySpec(), matching: str = "nearest",
    caliper: float = 0.05, bins: int = 3, points: int = 20, progress: bool = False, n_jobs: int | None = None,
) -> xr.Dataset:
    """Identification on all subjects and on performance-matched ones, each class's final
    accuracy in both, and the performance baseline.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording.
    subjects : xarray.Dataset
        The run's subject table (``subjects.nc``), with the recording's subjects in the same
        order: ``final_accuracy``, ``status``, the ``loss`` and ``test_accuracy`` curves.
    spec : IdentifySpec
        The identification settings, used for both cohorts and the baseline.
    matching : {"nearest", "bins"}
        ``nearest``: groups of one subject per class within ``caliper`` of each other (see
        :func:`match_nearest`); ``bins``: ``bins`` quantile bins of final accuracy holding
        equally many subjects of every class (:func:`match_on_performance`).
    caliper : float
        Largest final-accuracy difference inside a nearest group.
    bins : int
        Quantile bins of final accuracy.
    points : int
        Points each training curve is resampled to for the baseline (:func:`curve_features`).
    progress : bool
        Show progress bars.
    n_jobs : int, optional
        Worker processes, as for :func:`~simlab.analysis.identify.identify`.

    Returns
    -------
    xarray.Dataset
        ``accuracy`` and its summaries along ``cohort`` (``all``, ``matched``),
        ``final_accuracy_mean`` and ``n_subjects`` per cohort and class, ``matched_group`` per
        subject, and the baseline's ``baseline_accuracy`` (classifier, baseline_features,
        baseline_split) with its summaries (:func:`performance_baseline`).

    Examples
    --------
    >>> import xarray as xr
    >>> from simlab.analysis.common import open_run_recordings
    >>> from simlab.rundir import RunDirectory
    >>> run = RunDirectory("runs/tiny")
    >>> result = confound(open_run_recordings(run), xr.load_dataset(run.subjects_file), matching="bins")
    >>> result["accuracy_mean"].sel(cohort="matched"), result["baseline_accuracy_mean"]
    """
    if list(ds["subject"].values) != list(subjects["subject"].values):
        raise SimlabError("the recording and the subject table list different subjects")
    if matching == "nearest":
        keep, group_of = match_nearest(subjects, spec.target, caliper, spec.health)
        how = (f"nearest neighbours: groups of one subject per class, final accuracies within {caliper:g} of the "
               "group's subject of the rarest class (greedy, without replacement)")
    elif matching == "bins":
        keep, group_of = match_on_performance(subjects, spec.target, bins, spec.seed, spec.health)
        how = (f"{bins} quantile bins of final test accuracy; each kept bin holds equally many subjects of every "
               "class (seeded draw); bins missing a class are dropped")
    else:
        raise SimlabError(f"matching must be nearest or bins; got {matching!r}")
    labels = subjects[spec.target].values.astype(str)
    if len(np.unique(labels[keep])) < 2:
        raise SimlabError(
            f"matching on final accuracy ({matching}) kept fewer than 2 classes of {spec.target!r}: the classes' "
            "performances do not overlap; widen the caliper or use fewer bins"
        )
    results = []
    for name, cohort in (("all", ds), ("matched", ds.isel(subject=keep))):
        try:
            results.append(identify(cohort, spec, progress=progress, n_jobs=n_jobs))
        except SimlabError as exc:
            raise SimlabError(f"identification among {name} subjects: {exc}") from None
    slim = [r[["accuracy", "accuracy_mean", "accuracy_sem", "accuracy_mean_ci", "confusion"]] for r in results]
    both = xr.concat(slim, dim="cohort", join="outer").assign_coords(cohort=["all", "matched"])
    classes = [str(c) for c in both["true_class"].values]
    final = subjects["final_accuracy"].values.astype(np.float64)
    usable = _usable(subjects, spec.health)
    perf = np.full((2, len(classes)), np.nan)
    count = np.zeros((2, len(classes)), np.int64)
    for k, members in enumerate((np.flatnonzero(usable), keep)):
        for i, c in enumerate(classes):
            sel = members[labels[members] == c]
            perf[k, i], count[k, i] = (final[sel].mean() if len(sel) else np.nan), len(sel)
    both["final_accuracy_mean"] = (("cohort", "class"), perf, {"long_name": "mean final test accuracy of the class"})
    both["n_subjects"] = (("cohort", "class"), count)
    both = both.assign_coords({"class": np.array(classes, dtype=str)})
    both["matched_group"] = (("subject",), group_of,
                             {"long_name": "match group (nearest) or performance bin (bins); -1: not matched"})
    both = both.assign_coords(subject=subjects["subject"].values.astype(str))
    baseline = performance_baseline(subjects, spec, points, progress)
    baseline = baseline.rename({"split": "baseline_split", "feature_set": "baseline_features"})
    out = xr.merge([both, baseline], compat="override", join="outer")
    out.attrs = {
        "schema": SCHEMA,
        "title": f"performance confound of {spec.target} identification",
        "target": spec.target,
        "chance": results[0].attrs["chance"],
        "matching": how,
        "splits": int(spec.splits),
        "seed": int(spec.seed),
        **baseline.attrs,
    }
    return copy_health(results[0], out)


def format_confound(result: xr.Dataset) -> str:
    """Identification on all vs matched subjects, class performances, and the baseline."""
    a = result.attrs
    sets = [str(f) for f in result["feature_set"].values]
    lines = [f"{a['title']} (chance {float(a['chance']):.3f}); matching: {a['matching']}", *format_health(result), ""]
    lines.append("mean final test accuracy per class (subjects):")
    for cohort in result["cohort"].values:
        cells = [f"{c} {float(result['final_accuracy_mean'].sel(cohort=cohort, **{'class': c})):.3f} "
                 f"({int(result['n_subjects'].sel(cohort=cohort, **{'class': c}))})" for c in result["class"].values]
        lines.append(f"  {str(cohort):<8} " + ", ".join(cells))
    for clf in result["classifier"].values:
        lines += ["", f"{clf}: identification from recordings, mean ± s.e.m. over splits"]
        lines.append(f"  {'cohort':<10}" + "".join(f"{f:>18}" for f in sets))
        for cohort in result["cohort"].values:
            c = result.sel(cohort=cohort, classifier=clf)
            lines.append(f"  {str(cohort):<10}" + "".join(
                f"{float(c['accuracy_mean'].sel(feature_set=f)):>10.3f} ±{float(c['accuracy_sem'].sel(feature_set=f)):.3f}"
                for f in sets))
        b = result.sel(classifier=clf)
        lines.append(f"  baseline from performance alone ({a['baseline_subjects']} subjects): " + ", ".join(
            f"{str(f)} {float(b['baseline_accuracy_mean'].sel(baseline_features=f)):.3f} "
            f"± {float(b['baseline_accuracy_sem'].sel(baseline_features=f)):.3f}"
            for f in result["baseline_features"].values))
    return "\n".join(lines)


def _of_spec(
    recording: xr.Dataset, subjects: xr.Dataset, spec: ConfoundSpec, progress: bool = False,
    n_jobs: int | None = None,
) -> xr.Dataset:
    return confound(recording, subjects, spec.identify, spec.matching, spec.caliper, spec.bins, spec.curve_points,
                    progress, n_jobs)


register_analysis(
    "confound", spec=ConfoundSpec, compute=_of_spec, table=format_confound, reads=("recording", "subjects")
)
