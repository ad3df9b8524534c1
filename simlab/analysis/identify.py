"""Identify the learning rule (or another subject factor) from recordings.

One sample is one site: a real layer of a subject that trained without diverging. Its
features are the session trajectories of the observables of one measure (or of every
measure together), plus its depth group, so a classifier can use how a statistic *changes*
over training and where in the network it was recorded. Accuracy is measured on repeated,
category-balanced splits that by default keep all layers of a subject on one side, so a
classifier cannot score by recognising a network it has already seen (the reference's
splits over layers can be reproduced with ``group_by="layer"``).

Every feature set and classifier is evaluated on the same splits, so their accuracies can
be compared split by split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr
from joblib import Parallel, cpu_count, delayed
from statsmodels.stats.proportion import proportion_confint
from tqdm.auto import tqdm

from simlab.analysis.analyses import register_analysis, write_results
from simlab.analysis.classifiers import Layout, classifier_label, fit_predict, parse_classifier
from simlab.errors import SimlabError
from simlab.analysis.health import assess, copy_health, format_health
from simlab.analysis.transforms import channel_name, transform_names, transformed
from simlab.protocol.cohort import FACTORS as POPULATION_FACTORS
from simlab.specs.analyses import HealthSpec, IdentifySpec

__all__ = [
    "FeatureSet",
    "Sites",
    "balanced_splits",
    "build_features",
    "depth_groups",
    "evaluate_feature_sets",
    "feature_matrix",
    "feature_sets",
    "format_shares",
    "format_table",
    "identify",
    "map_units",
    "per_class_metrics",
    "prepare_splits",
    "results_dataset",
    "select_sites",
    "site_groups",
    "subject_bootstrap",
    "write_results",  # kept importable from here; it lives in simlab.analysis.analyses
]

SCHEMA = "simlab.identify/2"
DEPTH_ORDER = ("early", "middle", "deep")
ALL = "all"


# --------------------------------------------------------------------------- splits


def balanced_splits(
    labels, groups, n_splits: int, test_fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Repeated category-balanced train/test splits that never cut a group in two.

    Each class puts the same number of groups on the test side,
    ``max(1, round(test_fraction * groups in the smallest class))``, so test accuracy is not
    skewed by class sizes and chance stays ``1 / n_classes``. A group (a subject) is wholly
    on one side, so no network is seen in training and scored in testing. For splits over
    samples, pass one group per sample. Split ``i`` draws from
    ``np.random.default_rng([seed, i])``: each split is reproducible on its own.

    Returns a list of ``(train_idx, test_idx)`` sorted index arrays into ``labels``.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(
            "labels and groups must be 1-d and of equal length; "
            f"got {labels.shape} and {groups.shape}"
        )
    if seed < 0:
        raise SimlabError(f"identify seed must be >= 0; got {seed}")
    uniq_groups, group_of_sample = np.unique(groups, return_inverse=True)
    group_label = {}
    for g, lab in zip(group_of_sample, labels):
        if group_label.setdefault(g, lab) != lab:
            raise ValueError(f"group {uniq_groups[g]!r} holds samples of more than one class")
    classes = np.unique(labels)
    by_class = {c: np.array(sorted(g for g, lab in group_label.items() if lab == c))
                for c in classes}
    smallest = min(len(v) for v in by_class.values())
    n_test = max(1, int(np.floor(test_fraction * smallest + 0.5)))  # round half up
    if n_test >= smallest:
        small = [str(c) for c, v in by_class.items() if len(v) == smallest]
        raise SimlabError(
            f"class {', '.join(small)} has {smallest} group(s); a balanced split needs at least "
            f"{n_test + 1} per class ({n_test} to test, at least one to train)"
        )
    splits = []
    for i in range(n_splits):
        rng = np.random.default_rng([seed, i])
        test_groups = np.concatenate(
            [rng.choice(by_class[c], n_test, replace=False) for c in classes]
        )
        is_test = np.isin(group_of_sample, test_groups)
        splits.append((np.flatnonzero(~is_test), np.flatnonzero(is_test)))
    return splits


# --------------------------------------------------------------------------- samples & features


@dataclass(frozen=True)
class Sites:
    """The sites that enter identification, as plain arrays (one row per site)."""

    observation: np.ndarray  # (site, session, observable) float64
    labels: np.ndarray  # (site,) str
    classes: tuple[str, ...]  # labels present, in the target's natural order
    subject_index: np.ndarray  # (site,) int, position on the subject dimension
    names: np.ndarray  # (site,) "subject:layer"
    depth: np.ndarray  # (site,) str, "" when unknown
    observables: np.ndarray  # (observable,) str
    measures: np.ndarray  # (observable,) str
    excluded_diverged: int
    health: xr.Dataset  # the health report (simlab.analysis.health.assess)
    population: np.ndarray  # (site,) str, the subject's population; "" when unknown


def _populations(ds: xr.Dataset, n_subject: int) -> np.ndarray:
    """Each subject's population: the levels of the population factors (architecture, task,
    learning rule, batch size) the recording has as subject coordinates, joined by '-' (the
    run's population id when it has all four); "" when it has none."""
    present = [f for f in POPULATION_FACTORS if f in ds.coords and ds.coords[f].dims == ("subject",)]
    if not present:
        return np.full(n_subject, "", dtype=str)
    values = [ds.coords[f].values for f in present]
    prefix = {"batch_size": "b"}
    return np.array(["-".join(f"{prefix.get(f, '')}{v[i]}" for f, v in zip(present, values))
                     for i in range(n_subject)], dtype=str)


def site_groups(sites: Sites, group_by: str) -> np.ndarray:
    """The group of each site that a split keeps on one side: its subject, its population
    (replicates that differ only by seed), or itself (``layer``: splits over sites)."""
    if group_by == "subject":
        return sites.subject_index
    if group_by == "layer":
        return np.arange(len(sites.labels))
    if group_by != "population":
        raise SimlabError(f"group_by must be subject, population or layer; got {group_by!r}")
    if (sites.population == "").any():
        raise SimlabError("group_by population needs the subject coordinates of a population "
                          f"({', '.join(POPULATION_FACTORS)}); the recording has none of them")
    names, index = np.unique(sites.population, return_inverse=True)
    for g, name in enumerate(names):
        held = np.unique(sites.labels[index == g])
        if len(held) > 1:
            raise SimlabError(f"group_by population: population {name} holds subjects of several target "
                              f"levels ({', '.join(held)}); group by subject for this target")
    return index


def _subject_coord(ds: xr.Dataset, name: str) -> np.ndarray:
    if name not in ds.coords:
        subject_coords = sorted(str(k) for k, c in ds.coords.items() if c.dims == ("subject",))
        raise SimlabError(
            f"identify target {name!r} is not a coordinate of the recording; "
            f"subject coordinates are: {', '.join(subject_coords) or 'none'}"
        )
    coord = ds.coords[name]
    if coord.dims != ("subject",):
        raise SimlabError(
            f"identify target {name!r} must be a coordinate on 'subject'; it has dims {coord.dims}"
        )
    return coord.values


def select_sites(ds: xr.Dataset, target: str, health: HealthSpec = HealthSpec()) -> Sites:
    """Real layers of subjects whose training did not diverge, labelled by ``target``.

    Padded layers (``layer_name == ""``, all NaN) are not sites; diverged subjects are left
    out because their recordings describe a failed run, not the rule, and with
    ``health.min_gain`` so are subjects that did not learn (:func:`simlab.analysis.health.assess`).
    """
    if "observation" not in ds.data_vars:
        raise SimlabError("the recording has no data variable 'observation'")
    obs = ds["observation"]
    if set(obs.dims) != {"subject", "layer", "session", "observable"}:
        raise SimlabError(
            f"'observation' must have dims (subject, layer, session, observable); got {obs.dims}"
        )
    values = obs.transpose("subject", "layer", "session", "observable").values.astype(np.float64)
    target_values = _subject_coord(ds, target)
    n_subject, n_layer = values.shape[:2]

    ok, report = assess(ds, health, by="learning_rule" if "learning_rule" in ds.coords else target)
    if "layer_name" in ds.coords:
        real = ds["layer_name"].transpose("subject", "layer").values.astype(str) != ""
    else:  # no names: a padded layer is one with nothing finite in it
        real = np.isfinite(values).any(axis=(2, 3))
    if "depth" in ds.coords and set(ds["depth"].dims) == {"subject", "layer"}:
        depth = ds["depth"].transpose("subject", "layer").values.astype(str)
    else:  # no depth groups: the features are the trajectories alone
        depth = np.full((n_subject, n_layer), "")

    keep = real & ok[:, None]
    s_idx, l_idx = np.nonzero(keep)
    subjects = ds["subject"].values if "subject" in ds.coords else np.arange(n_subject)
    layers = ds["layer"].values if "layer" in ds.coords else np.arange(n_layer)
    names = np.array([f"{subjects[s]}:{layers[l]}" for s, l in zip(s_idx, l_idx)], dtype=str)
    # np.unique gives natural order for numeric targets (batch_size) before turning to text
    uniq, inv = np.unique(target_values, return_inverse=True)
    text = np.array([str(u) for u in uniq], dtype=str)
    label_text = text[inv.reshape(-1)]
    present = set(label_text[s_idx])

    obs_names = (
        ds["observable"].values.astype(str)
        if "observable" in ds.coords
        else np.array([f"observable_{i}" for i in range(values.shape[3])])
    )
    if "measure" in ds.coords:
        measures = ds["measure"].values.astype(str)
    else:  # no measures named: one feature set of everything
        measures = np.full(len(obs_names), ALL)
    return Sites(
        observation=values[s_idx, l_idx],
        labels=label_text[s_idx],
        classes=tuple(str(t) for t in text if t in present),
        subject_index=s_idx,
        names=names,
        depth=depth[s_idx, l_idx],
        observables=obs_names,
        measures=measures,
        excluded_diverged=int(report["subjects_diverged"].sum()),
        health=report,
        population=_populations(ds, n_subject)[s_idx],
    )


def feature_sets(sites: Sites) -> dict[str, np.ndarray]:
    """Observable indices of each feature set: one per measure, and ``all`` when several."""
    measures = list(dict.fromkeys(sites.measures))  # in recording order
    sets = {m: np.flatnonzero(sites.measures == m) for m in measures}
    if len(measures) > 1:
        sets[ALL] = np.arange(len(sites.observables))
    return sets


def build_features(sites: Sites, observable_idx, transform="raw") -> tuple[np.ndarray, list[str], list[str]]:
    """Feature matrix of one feature set, and the observables kept and dropped.

    An observable is kept only if it is finite for every site at every session: imputing a
    statistic that could not be computed would invent data. Each kept observable contributes
    its whole session trajectory, after ``transform`` (per site; one name or a list, see
    :mod:`simlab.analysis.transforms`): one channel per transform and observable,
    transform-major. The depth group is appended one-hot, since the same statistic differs
    between early and deep layers.
    """
    observable_idx = np.asarray(observable_idx, dtype=int)
    block = sites.observation[:, :, observable_idx]  # (site, session, obs)
    finite = np.isfinite(block).all(axis=(0, 1))
    kept = [str(n) for n in sites.observables[observable_idx[finite]]]
    dropped = [str(n) for n in sites.observables[observable_idx[~finite]]]
    if not kept:
        return np.empty((len(block), 0)), kept, dropped
    return feature_matrix(sites, observable_idx[finite], transform), kept, dropped


def depth_groups(sites: Sites) -> list[str]:
    """The depth groups present among the sites, early to deep (unknown names after, sorted)."""
    present = set(sites.depth) - {""}
    return [d for d in DEPTH_ORDER if d in present] + sorted(present - set(DEPTH_ORDER))


def feature_matrix(sites: Sites, observable_idx, transform="raw", groups=None) -> np.ndarray:
    """The features of exactly these observables, finite or not: their transformed
    trajectories, then the depth one-hot over ``groups`` (default: the groups present).

    A fitted identifier applies its own observables and depth groups to a new recording,
    where a site of a depth group it never saw gets zeros and a non-finite value stays NaN.
    """
    block = sites.observation[:, :, np.asarray(observable_idx, dtype=int)]
    channels, _, _ = transformed(block, transform)
    trajectories = channels.reshape(len(block), -1)
    groups = depth_groups(sites) if groups is None else list(groups)
    one_hot = (sites.depth[:, None] == np.array(groups, dtype=str)[None, :]).astype(np.float64)
    return np.hstack([trajectories, one_hot])


# --------------------------------------------------------------------------- identify


DEPTH_GROUP = "depth_group"  # the observable (and channel) name of the depth one-hot columns


@dataclass(frozen=True)
class FeatureSet:
    """One feature matrix, its layout, and the observables kept and dropped.

    ``column_observable``, ``column_transform`` and ``column_session`` say what each column
    is: an observable's value at a session after a transform (the session a difference
    arrives at), or the depth one-hot (``depth_group``, transform "", session -1).
    """

    X: np.ndarray
    layout: Layout
    kept: list[str]
    dropped: list[str]
    kind: str  # "measure", "observable" or "all"
    column_observable: np.ndarray = None
    column_transform: np.ndarray = None
    column_session: np.ndarray = None

    @property
    def column_channel(self) -> np.ndarray:
        """Each column's channel name: the observable for ``raw``, else ``transform(observable)``."""
        return np.array([o if t == "" else channel_name(o, t)
                         for o, t in zip(self.column_observable, self.column_transform)], dtype=str)


def _columns(kept: list[str], transform, n_sessions: int, length: int, extra: int):
    """Observable, transform and session of each column of :func:`build_features`."""
    names = transform_names(transform)
    observable = np.concatenate([np.repeat(np.array(kept, dtype=object), length)] * len(names)
                                + [np.full(extra, DEPTH_GROUP, dtype=object)])
    of_column = np.concatenate([np.full(len(kept) * length, n, dtype=object) for n in names]
                               + [np.full(extra, "", dtype=object)])
    session = np.concatenate([np.tile(np.arange(n_sessions - length, n_sessions), len(kept) * len(names)),
                              np.full(extra, -1)])
    return observable.astype(str), of_column.astype(str), session.astype(np.int64)


def _feature_sets(sites: Sites, mode: str, transform="raw") -> tuple[dict[str, FeatureSet], dict[str, list[str]], list[str]]:
    """Feature sets to evaluate (each observable's trajectory after ``transform``), the
    observables each dropped, and the sets left empty."""
    if mode not in ("measures", "observables", "both"):
        raise SimlabError(f"features must be measures, observables or both; got {mode!r}")
    chosen: dict[str, tuple[np.ndarray, str]] = {}
    if mode in ("measures", "both"):
        for name, idx in feature_sets(sites).items():
            chosen[name] = (idx, "all" if name == ALL else "measure")
    if mode in ("observables", "both"):
        for i, name in enumerate(sites.observables):
            if str(name) in chosen:
                raise SimlabError(f"observable {name!r} has the name of a measure; cannot tell them apart")
            chosen[str(name)] = (np.array([i]), "observable")
    sets, dropped_by_set, empty = {}, {}, []
    n_sessions = sites.observation.shape[1]
    n_transforms = len(transform_names(transform))
    for name, (idx, kind) in chosen.items():
        X, kept, dropped = build_features(sites, idx, transform)
        dropped_by_set[name] = dropped
        if not kept:
            empty.append(name)
            continue
        n_depth = len(set(sites.depth) - {""})
        channels = len(kept) * n_transforms
        length = (X.shape[1] - n_depth) // channels
        layout = Layout(length, channels, n_depth)
        sets[name] = FeatureSet(X, layout, kept, dropped, kind,
                                *_columns(kept, transform, n_sessions, length, n_depth))
    return sets, dropped_by_set, empty


def _evaluate(fs: FeatureSet, labels, groups, train, test, classifiers, preset, seed, split):
    """Fit every classifier on one split: (test predictions, chosen grid values) each.

    A unit of work that depends only on its arguments, so units can run in any order or
    process and the result is the same.
    """
    return [
        (fit.predictions, fit.best_params)
        for fit in (
            fit_predict(fs.X, labels, train, test, c, groups=groups, preset=preset,
                        seed=seed, split=split, layout=fs.layout)
            for c in classifiers
        )
    ]


def _run(job):
    fn, args, kwargs = job
    return fn(*args, **kwargs)


def _n_workers(n_jobs: int | None) -> int:
    cpus = cpu_count(only_physical_cores=False)  # respects CPU affinity and cgroup limits
    if n_jobs is None:
        return cpus
    if n_jobs < 0:
        return max(1, cpus + 1 + n_jobs)
    return max(1, n_jobs)


def map_units(fn, arg_lists, n_jobs: int | None, progress: bool = False, desc: str = "identify"):
    """``[fn(*args) for args in arg_lists]`` in ``n_jobs`` worker processes, in order."""
    jobs = [delayed(fn)(*args) for args in arg_lists]
    n_workers = min(_n_workers(n_jobs), max(1, len(jobs)))
    if n_workers > 1:
        outcomes = Parallel(n_jobs=n_workers, return_as="generator")(jobs)
    else:
        outcomes = map(_run, jobs)
    results = []
    with tqdm(total=len(jobs), desc=desc, unit="split", disable=not progress) as bar:
        for outcome in outcomes:
            results.append(outcome)
            bar.update(1)
    return results


def _explicit_splits(sites: Sites, subject_splits, n_subjects: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Site indices of splits given as subject positions; excluded subjects simply drop out."""
    splits = []
    for i, pair in enumerate(subject_splits):
        try:
            train_s, test_s = (np.asarray(p, dtype=int).reshape(-1) for p in pair)
        except (TypeError, ValueError):
            raise SimlabError(
                f"subject split {i} must be a pair (train subject positions, test subject positions)"
            ) from None
        for side in (train_s, test_s):
            if side.size and (side.min() < 0 or side.max() >= n_subjects):
                raise SimlabError(
                    f"subject split {i} names a subject position outside 0..{n_subjects - 1}"
                )
        if np.intersect1d(train_s, test_s).size:
            raise SimlabError(f"subject split {i} puts a subject on both the train and test side")
        train = np.flatnonzero(np.isin(sites.subject_index, train_s))
        test = np.flatnonzero(np.isin(sites.subject_index, test_s))
        if len(test) == 0:
            raise SimlabError(f"subject split {i} has no usable test site")
        if len(np.unique(sites.labels[train])) < 2:
            raise SimlabError(f"subject split {i} has fewer than 2 classes to train on")
        splits.append((train, test))
    if not splits:
        raise SimlabError("subject_splits is empty")
    return splits


def identify(
    ds: xr.Dataset,
    spec: IdentifySpec = IdentifySpec(),
    progress: bool = False,
    n_jobs: int | None = None,
    subject_splits=None,
    split_names=None,
) -> xr.Dataset:
    """Test accuracy of each classifier on each feature set over train/test splits.

    Splits are ``spec.splits`` category-balanced random splits, or ``subject_splits``. Units
    of work (feature set x split) run in worker processes; every unit is seeded from
    ``spec.seed`` and its split index, so the result does not depend on ``n_jobs``.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (``observation`` over subject, layer, session, observable), e.g. one rig's
        file or several rigs combined along ``observable``.
    spec : IdentifySpec
        The settings: ``target`` (a subject coordinate), ``classifiers``, ``features``,
        ``splits``, ``test_fraction``, ``group_by``, ``preset``, ``seed``.
    progress : bool
        Show a progress bar over the units of work.
    n_jobs : int, optional
        Worker processes (default: one per CPU; 1 runs in this process; negative: CPUs + 1 +
        n_jobs).
    subject_splits : sequence of (train, test) pairs, optional
        Splits given as positions on the recording's ``subject`` dimension (e.g. leave one
        level of a factor out) instead of random balanced ones.
    split_names : sequence of str, optional
        A name per subject split, stored as the ``split_name`` coordinate.

    Returns
    -------
    xarray.Dataset
        ``accuracy`` (classifier, feature_set, split) with its mean, s.e.m. and Wilson
        intervals, confusion matrices, per-class metrics and every test prediction (see
        :func:`results_dataset`); NetCDF-ready.

    Examples
    --------
    >>> from simlab.analysis.common import open_run_recordings
    >>> from simlab.rundir import RunDirectory
    >>> recording = open_run_recordings(RunDirectory("runs/tiny"))
    >>> results = identify(recording, IdentifySpec(splits=3, classifiers=["linear_svm"]))
    >>> results["accuracy_mean"].sel(classifier="linear_svm", feature_set="all")
    """
    sites, groups, splits = prepare_splits(ds, spec, subject_splits)
    if split_names is not None and len(split_names) != len(splits):
        raise SimlabError(f"{len(split_names)} split names for {len(splits)} splits")

    sets, dropped_by_set, empty_sets = _feature_sets(sites, spec.features, spec.transform)
    if not sets:
        raise SimlabError(
            "identify found no observable that is finite for every site and session; "
            f"dropped: {', '.join(sorted({d for v in dropped_by_set.values() for d in v}))}"
        )
    return evaluate_feature_sets(sites, groups, splits, sets, dropped_by_set, empty_sets, spec, progress, n_jobs,
                                 split_names, explicit=subject_splits is not None)


def prepare_splits(ds: xr.Dataset, spec: IdentifySpec, subject_splits=None):
    """The sites ``identify`` classifies, the group of each site, and the train/test splits:
    ``spec.splits`` balanced random ones, or ``subject_splits`` (subject positions)."""
    sites = select_sites(ds, spec.target, spec.health)
    if len(sites.labels) == 0:
        raise SimlabError(
            "identify found no sites: every subject diverged"
            + (" or did not learn" if spec.health.excludes else "") + " or every layer is padding"
        )
    classes = list(sites.classes)
    if len(classes) < 2:
        raise SimlabError(
            f"identify needs at least 2 classes of {spec.target!r} among usable subjects; "
            f"got {len(classes)} ({', '.join(classes)})"
        )
    groups = site_groups(sites, spec.group_by)
    if subject_splits is None:
        try:
            splits = balanced_splits(sites.labels, groups, spec.splits, spec.test_fraction, spec.seed)
        except SimlabError as exc:
            if spec.group_by != "subject":
                exc = SimlabError(f"{exc} (splits grouped by {spec.group_by})")
            excluded = int(sites.health["subjects_excluded"].sum()) if "subjects_excluded" in sites.health else 0
            if not excluded:
                raise exc from None
            raise SimlabError(f"{exc}, after excluding {excluded} subjects that did not learn "
                              f"(health min_gain {spec.health.min_gain:g})") from None
    else:
        n_subjects = ds.sizes["subject"]
        splits = _explicit_splits(sites, list(subject_splits), n_subjects)
    return sites, groups, splits


def evaluate_feature_sets(sites: Sites, groups, splits, sets: dict, dropped_by_set, empty_sets, spec: IdentifySpec,
                          progress: bool = False, n_jobs: int | None = None, split_names=None,
                          explicit: bool = False) -> xr.Dataset:
    """Every classifier of ``spec`` on every feature set of ``sets`` over ``splits``, as
    :func:`results_dataset`: the evaluation ``identify`` does, for any feature matrices of the
    same sites (a control's, such as the learning rate alone)."""
    choices = [parse_classifier(c) for c in spec.classifiers]
    fs_names = list(sets)
    units = [(f, s) for f in range(len(fs_names)) for s in range(len(splits))]
    outcomes = map_units(
        _evaluate,
        [(sets[fs_names[f]], sites.labels, groups, *splits[s], choices, spec.preset, spec.seed, s)
         for f, s in units],
        n_jobs,
        progress,
    )
    predictions = {}
    for (f, s), outcome in zip(units, outcomes):
        for c, (pred, best) in enumerate(outcome):
            predictions[c, f, s] = (pred, best)
    return results_dataset(
        sites, splits, predictions, [classifier_label(c) for c in spec.classifiers], sets,
        dropped_by_set, empty_sets, spec, groups, split_names, explicit=explicit,
    )


def _wilson(correct, total) -> np.ndarray:
    """Wilson 95% interval of a proportion, with a trailing (lower, upper) axis."""
    correct, total = np.asarray(correct), np.asarray(total)
    low, high = proportion_confint(correct, np.maximum(total, 1), alpha=0.05, method="wilson")
    out = np.stack([low, high], axis=-1).astype(np.float64)
    out[total == 0] = np.nan
    return out


BOOTSTRAP_STREAM = 4099  # seeds the subject bootstrap apart from the splits' streams


def subject_bootstrap(correct, total, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Percentile 95% interval of accuracy when the tested subjects are resampled.

    ``correct`` (..., subject) and ``total`` (subject,) count the correct and all test
    predictions of each subject; subjects without a prediction are left out. Each of the
    ``n_resamples`` draws takes as many subjects as were tested, with replacement, and scores
    all their predictions together (a subject drawn twice counts twice), so the interval
    reflects how much the accuracy depends on which networks were tested: the sites of one
    subject are not independent. Returns (..., 2) lower and upper bounds (the 2.5th and
    97.5th percentiles); NaN without a tested subject or with ``n_resamples`` 0.
    """
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    tested = total > 0
    out = np.full(correct.shape[:-1] + (2,), np.nan)
    n = int(tested.sum())
    if n == 0 or n_resamples == 0:
        return out
    draws = rng.integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1.0)  # times each subject is drawn
    hits = correct[..., tested] @ weights.T  # (..., resample)
    counts = weights @ total[tested]  # (resample,)
    return np.moveaxis(np.quantile(hits / counts, [0.025, 0.975], axis=-1), 0, -1)


def per_class_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a (..., true, predicted) confusion.

    An undefined ratio (no prediction of a class, no example of it) is NaN, not 0: it is
    unknown, not bad.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    predicted = confusion.sum(axis=-2)
    support = confusion.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def results_dataset(sites, splits, predictions, clf_names, sets, dropped_by_set, empty_sets,
                    spec, groups, split_names=None, explicit=False) -> xr.Dataset:
    """Identification results as a Dataset.

    Variables: ``accuracy`` (classifier, feature_set, split) with ``accuracy_mean``,
    ``accuracy_sem`` and Wilson intervals ``accuracy_ci`` (per split) and ``accuracy_mean_ci``
    (pooled test predictions); ``correct``/``n_test`` counts; ``confusion`` summed over
    splits; ``precision``/``recall``/``f1``/``support`` per class; ``prediction`` (classifier,
    feature_set, site, split), empty where a site was not tested, so statistics can pair
    predictions; ``best_params`` chosen by inner cross-validation (JSON).
    """
    classes = list(sites.classes)
    fs_names = list(sets)
    n_c, n_f, n_s, n_k = len(clf_names), len(fs_names), len(splits), len(classes)
    class_pos = {c: i for i, c in enumerate(classes)}
    y_pos = np.array([class_pos[c] for c in sites.labels])
    width = max(len(c) for c in classes)
    prediction = np.full((n_c, n_f, len(sites.labels), n_s), "", dtype=f"<U{width}")
    accuracy = np.full((n_c, n_f, n_s), np.nan)
    correct = np.zeros((n_c, n_f, n_s), np.int64)
    confusion = np.zeros((n_c, n_f, n_k, n_k), np.int64)
    best_params = np.full((n_c, n_f, n_s), "", dtype=object)
    for (c, f, s), (pred, best) in predictions.items():
        test = splits[s][1]
        hit = np.asarray(pred) == sites.labels[test]
        prediction[c, f, test, s] = pred
        correct[c, f, s] = int(hit.sum())
        accuracy[c, f, s] = hit.mean()
        np.add.at(confusion[c, f], (y_pos[test], [class_pos[p] for p in pred]), 1)
        best_params[c, f, s] = json.dumps(best, sort_keys=True)
    n_test = np.broadcast_to(np.array([len(t) for _, t in splits]), accuracy.shape)
    sem = accuracy.std(axis=2, ddof=1) / np.sqrt(n_s) if n_s > 1 else np.full((n_c, n_f), np.nan)
    metrics = per_class_metrics(confusion)
    boot_split, boot_pooled = _bootstrap_intervals(sites, splits, prediction, spec)
    predicted = np.stack([(prediction == c).sum(axis=2) for c in classes], axis=-1)  # (c, f, split, class)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = predicted / n_test[..., None]
        share_pooled = predicted.sum(axis=2) / n_test.sum(axis=2)[..., None]

    attrs = {
        "schema": SCHEMA,
        "title": f"identification of {spec.target}",
        "target": spec.target,
        "classes": ",".join(classes),
        "chance": 1.0 / n_k,
        "n_samples": int(len(sites.labels)),
        "n_subjects": int(len(np.unique(sites.subject_index))),
        "excluded_diverged": sites.excluded_diverged,
        "group_by": spec.group_by,
        "transform": ",".join(spec.transforms),
        "splits": int(n_s),
        "split_kind": "explicit subject splits" if explicit else "category-balanced random",
        "test_fraction": float(spec.test_fraction),
        "seed": int(spec.seed),
        "preset": spec.preset,
        "feature_mode": spec.features,
        "classifiers": ",".join(clf_names),
        "classifier_specs": json.dumps([parse_classifier(c).__dict__ for c in spec.classifiers],
                                       default=dict, sort_keys=True),
        "features": "session trajectory of every observable finite for all sites and sessions, "
        f"transformed per site ({', '.join(spec.transforms)}), plus depth group one-hot; "
        "z-scored with training-split statistics",
        "confidence_intervals": "Wilson 95% (statsmodels proportion_confint, method=wilson). "
        "accuracy_ci: over the test sites of each split (n_test). accuracy_mean_ci: over all "
        "test predictions pooled across splits (sum of n_test); a site tested in several "
        "splits counts each time and layers of one subject are not independent, so it is "
        "narrower than the uncertainty about new subjects",
        "empty_feature_sets": ",".join(empty_sets),
        "bootstrap": f"subjects resampled with replacement, {int(spec.bootstrap)} resamples, percentile "
        f"95% interval, seeded by [seed, {BOOTSTRAP_STREAM}, s] for split s and [seed, {BOOTSTRAP_STREAM}, splits] "
        "for the pooled interval. "
        "accuracy_boot_ci: over the subjects tested in the split; accuracy_mean_boot_ci: over every "
        "test prediction pooled across splits, a subject's predictions of all splits together",
        "bootstrap_resamples": int(spec.bootstrap),
    }
    if not explicit:
        attrs["n_test_groups_per_class"] = len(np.unique(groups[splits[0][1]])) // n_k
    for name, dropped in dropped_by_set.items():
        attrs[f"dropped_{name}"] = ",".join(dropped)
    per_set = ("feature_set",)
    per_result = ("classifier", "feature_set")
    per_split = ("classifier", "feature_set", "split")
    per_class = ("classifier", "feature_set", "class")
    data_vars = {
        "accuracy": (per_split, accuracy, {"long_name": "test accuracy", "units": "1"}),
        "accuracy_mean": (per_result, accuracy.mean(axis=2),
                          {"long_name": "mean test accuracy over splits", "units": "1"}),
        "accuracy_sem": (per_result, sem, {
            "long_name": "s.e.m. of test accuracy: std(ddof=1) / sqrt(splits)", "units": "1"}),
        "accuracy_ci": (per_split + ("bound",), _wilson(correct, n_test), {
            "long_name": "Wilson 95% interval of test accuracy over the split's test sites"}),
        "accuracy_mean_ci": (per_result + ("bound",),
                             _wilson(correct.sum(axis=2), n_test.sum(axis=2)), {
            "long_name": "Wilson 95% interval over test predictions pooled across splits"}),
        "accuracy_boot_ci": (per_split + ("bound",), boot_split, {
            "long_name": "subject bootstrap 95% interval of test accuracy over the split's test subjects"}),
        "accuracy_mean_boot_ci": (per_result + ("bound",), boot_pooled, {
            "long_name": "subject bootstrap 95% interval over test predictions pooled across splits"}),
        "prediction_share": (per_split + ("class",), share, {
            "long_name": "fraction of the split's test sites predicted as each class", "units": "1"}),
        "prediction_share_pooled": (per_class, share_pooled, {
            "long_name": "fraction of test predictions pooled across splits that are each class",
            "units": "1"}),
        "correct": (per_split, correct, {"long_name": "correct test predictions"}),
        "n_test": (per_split, np.ascontiguousarray(n_test, dtype=np.int64),
                   {"long_name": "test sites"}),
        "n_features": (per_set, np.array([sets[f].X.shape[1] for f in fs_names], np.int64)),
        "n_observables": (per_set, np.array([len(sets[f].kept) for f in fs_names], np.int64)),
        "confusion": (("classifier", "feature_set", "true_class", "predicted_class"), confusion,
                      {"long_name": "test predictions summed over splits", "units": "1"}),
        "precision": (per_class, metrics["precision"],
                      {"long_name": "precision from the summed confusion matrix"}),
        "recall": (per_class, metrics["recall"],
                   {"long_name": "recall from the summed confusion matrix"}),
        "f1": (per_class, metrics["f1"], {"long_name": "F1 from the summed confusion matrix"}),
        "support": (per_class, metrics["support"], {"long_name": "test predictions of the class"}),
        "prediction": (("classifier", "feature_set", "site", "split"), prediction, {
            "long_name": "predicted class of a test site; empty where not tested"}),
        "best_params": (per_split, best_params.astype(str), {
            "long_name": "hyperparameters chosen by grouped inner cross-validation (JSON)"}),
        "test_sites": (("split",), np.array([",".join(sites.names[t]) for _, t in splits], dtype=str),
                       {"long_name": "test sites (subject:layer), comma-separated"}),
    }
    if "linear_svm" in clf_names:
        c_idx = clf_names.index("linear_svm")
        chosen = np.array([[json.loads(best_params[c_idx, f, s]).get("C", np.nan)
                            for s in range(n_s)] for f in range(n_f)], dtype=np.float64)
        data_vars["linear_svm_C"] = (("feature_set", "split"), chosen,
                                     {"long_name": "C chosen by grouped inner cross-validation"})
    dropped_text = np.array([",".join(dropped_by_set[f]) for f in fs_names], dtype=str)
    coords = {
        "classifier": np.array(clf_names, dtype=str),
        "feature_set": np.array(fs_names, dtype=str),
        "feature_kind": (per_set, np.array([sets[f].kind for f in fs_names], dtype=str)),
        "split": np.arange(n_s, dtype=np.int64),
        "true_class": np.array(classes, dtype=str),
        "predicted_class": np.array(classes, dtype=str),
        "class": np.array(classes, dtype=str),
        "bound": np.array(["lower", "upper"], dtype=str),
        "site": sites.names,
        "site_subject": (("site",), sites.subject_index.astype(np.int64)),
        "site_label": (("site",), sites.labels.astype(str)),
        "dropped_observables": (per_set, dropped_text),
    }
    if split_names is not None:
        coords["split_name"] = (("split",), np.array([str(n) for n in split_names], dtype=str))
    return copy_health(sites.health, xr.Dataset(data_vars, coords=coords, attrs=attrs))


def _bootstrap_intervals(sites, splits, prediction, spec) -> tuple[np.ndarray, np.ndarray]:
    """Subject bootstrap intervals per split (c, f, split, 2) and pooled over splits (c, f, 2)."""
    subjects, subject_of_site = np.unique(sites.subject_index, return_inverse=True)
    n_c, n_f, _, n_s = prediction.shape
    correct = np.zeros((n_c, n_f, n_s, len(subjects)))
    total = np.zeros((n_s, len(subjects)))
    for s, (_, test) in enumerate(splits):
        hit = prediction[:, :, test, s] == sites.labels[test]  # (c, f, test site)
        np.add.at(correct[:, :, s], (slice(None), slice(None), subject_of_site[test]), hit)
        np.add.at(total[s], subject_of_site[test], 1)
    per_split = np.stack([
        subject_bootstrap(correct[:, :, s], total[s], spec.bootstrap,
                          np.random.default_rng([spec.seed, BOOTSTRAP_STREAM, s]))
        for s in range(n_s)
    ], axis=2)
    pooled = subject_bootstrap(correct.sum(axis=2), total.sum(axis=0), spec.bootstrap,
                               np.random.default_rng([spec.seed, BOOTSTRAP_STREAM, n_s]))
    return per_split, pooled


# --------------------------------------------------------------------------- reporting


def format_table(results: xr.Dataset) -> str:
    """Mean ± s.e.m. test accuracy and its pooled Wilson 95% interval (when the results
    have one), one row per feature set, one column per classifier."""
    a = results.attrs
    classifiers = [str(c) for c in results["classifier"].values]
    sets = [str(f) for f in results["feature_set"].values]
    mean, sem = results["accuracy_mean"], results["accuracy_sem"]
    ci = results.get("accuracy_mean_ci")
    boot = results.get("accuracy_mean_boot_ci")
    if boot is not None and bool(boot.isnull().all()):
        boot = None  # bootstrap: 0

    def cell(f, c):
        text = (f"{float(mean.sel(classifier=c, feature_set=f)):.3f} ± "
                f"{float(sem.sel(classifier=c, feature_set=f)):.3f}")
        if ci is not None:
            low, high = ci.sel(classifier=c, feature_set=f).values
            text += f" [{low:.2f}, {high:.2f}]"
        if boot is not None:
            low, high = boot.sel(classifier=c, feature_set=f).values
            text += f" ({low:.2f}, {high:.2f})"
        return text

    cells = {(f, c): cell(f, c) for f in sets for c in classifiers}
    first = max(len("feature_set"), *(len(f) for f in sets))
    widths = [max(len(c), *(len(cells[f, c]) for f in sets)) for c in classifiers]

    def row(name, values, last=""):
        cols = [f"{name:<{first}}", *(f"{v:>{w}}" for v, w in zip(values, widths))]
        return "  ".join(cols) + (f"  {last:>8}" if last != "" else "")

    classes = str(a.get("classes", "")).split(",")
    lines = [
        f"identify {a.get('target')}: {len(classes)} classes ({', '.join(classes)})",
        f"{a.get('n_subjects')} subjects, {a.get('n_samples')} sites, "
        f"{a.get('excluded_diverged', 0)} diverged subjects excluded",
        *format_health(results),
        f"{a.get('splits')} splits grouped by {a.get('group_by')}, "
        f"test fraction {a.get('test_fraction')}"
        + (f", preset {a['preset']}" if "preset" in a else "")
        + (f", features transformed: {a['transform'].replace(',', ' + ')}" if "transform" in a else ""),
        *(["mean ± s.e.m. over splits [Wilson 95% interval over test predictions pooled "
           "across splits]" + (" (subject bootstrap 95% interval: tested subjects resampled)"
                               if boot is not None else "")] if ci is not None else []),
        "",
        row("feature_set", classifiers, "features"),
    ]
    for f in sets:
        n_features = int(results["n_features"].sel(feature_set=f))
        lines.append(row(f, [cells[f, c] for c in classifiers], str(n_features)))
    lines.append(row("chance", [f"{float(a.get('chance', np.nan)):.3f}"] * len(classifiers)))
    if "prediction_share_pooled" in results:
        lines += ["", "predicted shares (fraction of test predictions, pooled across splits, named as each class):",
                  *format_shares(results["prediction_share_pooled"], sets if len(sets) <= 8 else sets[-1:])]
    lines += ["", "dropped observables (not finite for every site and session):"]
    with_drops = [f for f in sets if a.get(f"dropped_{f}")]
    for f in with_drops if len(sets) > 8 else sets:  # per observable: only sets with drops
        dropped = str(a.get(f"dropped_{f}", ""))
        lines.append(f"  {f}: {dropped.replace(',', ', ') if dropped else 'none'}")
    if len(sets) > 8 and not with_drops:
        lines.append("  none")
    if a.get("empty_feature_sets"):
        lines.append(f"  left out, no finite observable: {a['empty_feature_sets']}")
    return "\n".join(lines)


def format_shares(share: xr.DataArray, sets, indent: str = "  ") -> list[str]:
    """One line per classifier and feature set: the share of predictions of each class."""
    classes = [str(c) for c in share["class"].values]
    first = max(len(f"{c} {f}") for c in share["classifier"].values for f in sets)
    head = indent + " " * first + "".join(f"  {c:>{max(6, len(c))}}" for c in classes)
    lines = [head]
    for clf in share["classifier"].values:
        for f in sets:
            values = share.sel(classifier=clf, feature_set=f).values
            lines.append(indent + f"{f'{clf} {f}':<{first}}" + "".join(
                f"  {v:>{max(6, len(c))}.2f}" for v, c in zip(values, classes)))
    return lines


