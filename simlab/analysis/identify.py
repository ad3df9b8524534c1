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

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from joblib import Parallel, cpu_count, delayed
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from simlab.analysis.specs import IdentifySpec
from simlab.errors import SimlabError
from simlab.fileio import atomic_path

__all__ = [
    "Sites",
    "balanced_splits",
    "build_features",
    "feature_sets",
    "format_table",
    "identify",
    "make_classifier",
    "select_sites",
    "write_results",
]

SCHEMA = "simlab.identify/1"
N_TREES = 200
# A fast preset for small machines. With features z-scored and about a thousand of them
# (sessions x observables) for a couple of hundred sites, the sites are close to linearly
# separable and larger C barely changes the fit but costs 10-100x in solver time (liblinear
# on the quickstart: C=0.01 in 0.07 s, C=1 in 2 s, C=10 in 13 s, not converged). The
# reference's full grid is future work of the identification issue.
SVM_C_GRID = (0.001, 0.01, 0.1)
SVM_MAX_ITER = 20_000
INNER_FOLDS = 3
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


def select_sites(ds: xr.Dataset, target: str) -> Sites:
    """Real layers of subjects whose training did not diverge, labelled by ``target``.

    Padded layers (``layer_name == ""``, all NaN) are not sites; diverged subjects are left
    out because their recordings describe a failed run, not the rule.
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

    if "status" in ds.coords:
        ok = ds["status"].values.astype(str) == "ok"
    else:
        ok = np.ones(n_subject, bool)
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
        excluded_diverged=int((~ok).sum()),
    )


def feature_sets(sites: Sites) -> dict[str, np.ndarray]:
    """Observable indices of each feature set: one per measure, and ``all`` when several."""
    measures = list(dict.fromkeys(sites.measures))  # in recording order
    sets = {m: np.flatnonzero(sites.measures == m) for m in measures}
    if len(measures) > 1:
        sets[ALL] = np.arange(len(sites.observables))
    return sets


def build_features(sites: Sites, observable_idx) -> tuple[np.ndarray, list[str], list[str]]:
    """Feature matrix of one feature set, and the observables kept and dropped.

    An observable is kept only if it is finite for every site at every session: imputing a
    statistic that could not be computed would invent data. Each kept observable contributes
    its whole session trajectory; the depth group is appended one-hot, since the same
    statistic differs between early and deep layers.
    """
    observable_idx = np.asarray(observable_idx, dtype=int)
    block = sites.observation[:, :, observable_idx]  # (site, session, obs)
    finite = np.isfinite(block).all(axis=(0, 1))
    kept = [str(n) for n in sites.observables[observable_idx[finite]]]
    dropped = [str(n) for n in sites.observables[observable_idx[~finite]]]
    trajectories = block[:, :, finite].transpose(0, 2, 1).reshape(len(block), -1)
    present = set(sites.depth) - {""}
    groups = [d for d in DEPTH_ORDER if d in present] + sorted(present - set(DEPTH_ORDER))
    one_hot = (sites.depth[:, None] == np.array(groups, dtype=str)[None, :]).astype(np.float64)
    if trajectories.shape[1] == 0:
        return np.empty((len(block), 0)), kept, dropped
    return np.hstack([trajectories, one_hot]), kept, dropped


# --------------------------------------------------------------------------- classifiers


def _random_state(seed: int, split: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, split, stream]).generate_state(1)[0])


def make_classifier(name: str, seed: int, split: int, inner_folds: int):
    """A fresh, seeded estimator; both z-score features with training-split statistics.

    The linear SVM picks C from a small grid by class-stratified, grouped cross-validation
    inside the training split (groups as in the outer split), so no test data and no
    training subject on both sides of an inner fold informs the choice. ``inner_folds`` is at
    most the number of training groups of the rarest class, so every inner training fold
    sees every class; below 2 there is nothing to cross-validate and C is the grid's middle.
    """
    if name == "random_forest":
        return Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "forest",
                    RandomForestClassifier(
                        n_estimators=N_TREES, random_state=_random_state(seed, split, 1), n_jobs=1
                    ),
                ),
            ]
        )
    if name == "linear_svm":
        default_c = SVM_C_GRID[len(SVM_C_GRID) // 2]
        pipe = Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "svm",
                    LinearSVC(
                        C=default_c,
                        dual=False,  # primal: fast when C is small (see SVM_C_GRID)
                        max_iter=SVM_MAX_ITER,
                        random_state=_random_state(seed, split, 2),
                    ),
                ),
            ]
        )
        if inner_folds < 2:
            return pipe
        return GridSearchCV(
            pipe,
            param_grid={"svm__C": list(SVM_C_GRID)},
            cv=StratifiedGroupKFold(n_splits=inner_folds, shuffle=True, random_state=_random_state(seed, split, 3)),
            scoring="accuracy",
            refit=True,
            n_jobs=1,
        )
    raise SimlabError(f"unknown classifier {name!r}; expected one of random_forest, linear_svm")


# --------------------------------------------------------------------------- identify


def _evaluate(X, labels, groups, train, test, classifiers, seed, split):
    """Fit every classifier on one split; return (test predictions, chosen C or None) each.

    A unit of work that depends only on its arguments, so units can run in any order or
    process and the result is the same.
    """
    out = []
    groups_per_class = [len(np.unique(groups[train][labels[train] == c])) for c in np.unique(labels[train])]
    inner_folds = min(INNER_FOLDS, *groups_per_class)
    for name in classifiers:
        clf = make_classifier(name, seed, split, inner_folds)
        with warnings.catch_warnings():
            # a C at the top of the grid may stop short of convergence on separable data; the
            # inner cross-validation scores it honestly either way
            warnings.simplefilter("ignore", ConvergenceWarning)
            if name == "linear_svm":
                searched = isinstance(clf, GridSearchCV)
                clf.fit(X[train], labels[train], **({"groups": groups[train]} if searched else {}))
                chosen = clf.best_params_["svm__C"] if searched else clf.named_steps["svm"].C
                out.append((clf.predict(X[test]), float(chosen)))
            else:
                clf.fit(X[train], labels[train])
                out.append((clf.predict(X[test]), None))
    return out


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


def identify(
    ds: xr.Dataset,
    spec: IdentifySpec = IdentifySpec(),
    progress: bool = False,
    n_jobs: int | None = None,
) -> xr.Dataset:
    """Test accuracy of each classifier on each feature set over ``spec.splits`` splits.

    Units of work (feature set x split) run in ``n_jobs`` worker processes (default: one per
    CPU; 1 runs in this process). Every unit is seeded from ``spec.seed`` and its split
    index, so the result does not depend on ``n_jobs``.

    Returns a NetCDF-ready Dataset: ``accuracy`` (classifier, feature_set, split),
    ``accuracy_mean``/``accuracy_sem``, ``n_features``, ``confusion`` summed over splits,
    and attrs naming the target, chance level, sample counts and dropped observables.
    """
    sites = select_sites(ds, spec.target)
    if len(sites.labels) == 0:
        raise SimlabError(
            "identify found no sites: every subject diverged or every layer is padding"
        )
    classes = list(sites.classes)
    if len(classes) < 2:
        raise SimlabError(
            f"identify needs at least 2 classes of {spec.target!r} among usable subjects; "
            f"got {len(classes)} ({', '.join(classes)})"
        )
    groups = sites.subject_index if spec.group_by == "subject" else np.arange(len(sites.labels))
    splits = balanced_splits(sites.labels, groups, spec.splits, spec.test_fraction, spec.seed)

    sets, kept_by_set, dropped_by_set, empty_sets = {}, {}, {}, []
    for name, idx in feature_sets(sites).items():
        X, kept, dropped = build_features(sites, idx)
        dropped_by_set[name] = dropped
        if not kept:
            empty_sets.append(name)
            continue
        sets[name], kept_by_set[name] = X, kept
    if not sets:
        raise SimlabError(
            "identify found no observable that is finite for every site and session; "
            f"dropped: {', '.join(sorted({d for v in dropped_by_set.values() for d in v}))}"
        )

    fs_names, clf_names = list(sets), list(spec.classifiers)
    class_pos = {c: i for i, c in enumerate(classes)}
    y_pos = np.array([class_pos[c] for c in sites.labels])
    accuracy = np.full((len(clf_names), len(fs_names), spec.splits), np.nan)
    confusion = np.zeros((len(clf_names), len(fs_names), len(classes), len(classes)), np.int64)
    chosen_c = np.full((len(fs_names), spec.splits), np.nan)

    units = [(f, s) for f in range(len(fs_names)) for s in range(spec.splits)]
    jobs = (
        delayed(_evaluate)(
            sets[fs_names[f]], sites.labels, groups, *splits[s], clf_names, spec.seed, s
        )
        for f, s in units
    )
    n_workers = min(_n_workers(n_jobs), len(units))
    if n_workers > 1:
        outcomes = Parallel(n_jobs=n_workers, return_as="generator")(jobs)
    else:
        outcomes = map(_run, jobs)
    with tqdm(total=len(units), desc="identify", unit="split", disable=not progress) as bar:
        for (f, s), outcome in zip(units, outcomes):
            test = splits[s][1]
            for c, (pred, best_c) in enumerate(outcome):
                accuracy[c, f, s] = np.mean(pred == sites.labels[test])
                np.add.at(confusion[c, f], (y_pos[test], [class_pos[p] for p in pred]), 1)
                if best_c is not None:
                    chosen_c[f, s] = best_c
            bar.update(1)

    n_splits = spec.splits
    if n_splits > 1:
        sem = accuracy.std(axis=2, ddof=1) / np.sqrt(n_splits)
    else:  # one split has no spread to estimate
        sem = np.full(accuracy.shape[:2], np.nan)
    test_names = [",".join(sites.names[test]) for _, test in splits]
    n_test_per_class = len(np.unique(groups[splits[0][1]])) // len(classes)
    attrs = {
        "schema": SCHEMA,
        "title": f"identification of {spec.target}",
        "target": spec.target,
        "classes": ",".join(classes),
        "chance": 1.0 / len(classes),
        "n_samples": int(len(sites.labels)),
        "n_subjects": int(len(np.unique(sites.subject_index))),
        "excluded_diverged": sites.excluded_diverged,
        "group_by": spec.group_by,
        "splits": int(n_splits),
        "test_fraction": float(spec.test_fraction),
        "n_test_groups_per_class": n_test_per_class,
        "seed": int(spec.seed),
        "classifiers": ",".join(clf_names),
        "features": "session trajectory of every observable finite for all sites and sessions, "
        "plus depth group one-hot; z-scored with training-split statistics",
        "linear_svm_C_grid": ",".join(str(c) for c in SVM_C_GRID),
        "random_forest_n_estimators": N_TREES,
        "empty_feature_sets": ",".join(empty_sets),
    }
    for name, dropped in dropped_by_set.items():
        attrs[f"dropped_{name}"] = ",".join(dropped)
    per_set = ("feature_set",)
    per_result = ("classifier", "feature_set")
    data_vars = {
        "accuracy": (
            ("classifier", "feature_set", "split"),
            accuracy,
            {"long_name": "test accuracy", "units": "1"},
        ),
        "accuracy_mean": (
            per_result,
            accuracy.mean(axis=2),
            {"long_name": "mean test accuracy over splits", "units": "1"},
        ),
        "accuracy_sem": (
            per_result,
            sem,
            {"long_name": "s.e.m. of test accuracy: std(ddof=1) / sqrt(splits)", "units": "1"},
        ),
        "n_features": (per_set, np.array([sets[f].shape[1] for f in fs_names], np.int64)),
        "n_observables": (per_set, np.array([len(kept_by_set[f]) for f in fs_names], np.int64)),
        "confusion": (
            ("classifier", "feature_set", "true_class", "predicted_class"),
            confusion,
            {"long_name": "test predictions summed over splits", "units": "1"},
        ),
        "test_sites": (
            ("split",),
            np.array(test_names, dtype=str),
            {"long_name": "test sites (subject:layer), comma-separated"},
        ),
    }
    if "linear_svm" in clf_names:
        data_vars["linear_svm_C"] = (
            ("feature_set", "split"),
            chosen_c,
            {"long_name": "C chosen by grouped inner cross-validation"},
        )
    dropped_text = np.array([",".join(dropped_by_set[f]) for f in fs_names], dtype=str)
    coords = {
        "classifier": np.array(clf_names, dtype=str),
        "feature_set": np.array(fs_names, dtype=str),
        "split": np.arange(n_splits, dtype=np.int64),
        "true_class": np.array(classes, dtype=str),
        "predicted_class": np.array(classes, dtype=str),
        "dropped_observables": (per_set, dropped_text),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------- reporting


def format_table(results: xr.Dataset) -> str:
    """Mean ± s.e.m. test accuracy, one row per feature set, one column per classifier."""
    a = results.attrs
    classifiers = [str(c) for c in results["classifier"].values]
    sets = [str(f) for f in results["feature_set"].values]
    mean, sem = results["accuracy_mean"], results["accuracy_sem"]
    cells = {
        (f, c): f"{float(mean.sel(classifier=c, feature_set=f)):.3f} ± "
        f"{float(sem.sel(classifier=c, feature_set=f)):.3f}"
        for f in sets
        for c in classifiers
    }
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
        f"{a.get('splits')} splits grouped by {a.get('group_by')}, "
        f"test fraction {a.get('test_fraction')}",
        "",
        row("feature_set", classifiers, "features"),
    ]
    for f in sets:
        n_features = int(results["n_features"].sel(feature_set=f))
        lines.append(row(f, [cells[f, c] for c in classifiers], str(n_features)))
    lines.append(row("chance", [f"{float(a.get('chance', np.nan)):.3f}"] * len(classifiers)))
    lines += ["", "dropped observables (not finite for every site and session):"]
    for f in sets:
        dropped = str(a.get(f"dropped_{f}", ""))
        lines.append(f"  {f}: {dropped.replace(',', ', ') if dropped else 'none'}")
    if a.get("empty_feature_sets"):
        lines.append(f"  left out, no finite observable: {a['empty_feature_sets']}")
    return "\n".join(lines)


def write_results(results: xr.Dataset, path, force: bool = False) -> Path:
    """Write results as NetCDF atomically; an existing file is kept unless ``force``."""
    path = Path(path)
    with atomic_path(path, force) as tmp:
        results.to_netcdf(tmp, format="NETCDF4")
    return path
