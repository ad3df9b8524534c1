"""Which observables identify the rule: impurity and permutation feature importance.

Both are measured per split on the same splits as :func:`simlab.analysis.identify.identify`,
then aggregated by observable, measure, function, statistic and session.

- ``impurity``: mean decrease in impurity of a fitted forest (or any estimator with
  ``feature_importances_``), one value per feature column; it sums to 1 over columns.
- ``permutation``: drop in test accuracy when a feature is shuffled among the test sites
  (``sklearn.inspection.permutation_importance`` on the test split). By default the
  whole session trajectory of one observable is shuffled together (``level="observable"``):
  the sessions of one observable are strongly correlated, so shuffling them one column at a
  time would mostly measure that the others stand in for it. ``level="column"`` shuffles
  single columns as sklearn does by default.

An aggregate (by measure, function, statistic) is the *sum* of its members' importances.
For impurity that is exact; for permutation it is an approximation: correlated observables
stand in for each other, so it understates a group that carries redundant information.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.inspection import permutation_importance

from simlab.analysis.classifiers import classifier_label, fit_predict, random_state
from simlab.analysis.health import copy_health, format_health
from simlab.analysis.identify import (
    DEPTH_GROUP,
    _explicit_splits,
    _feature_sets,
    balanced_splits,
    map_units,
    select_sites,
    site_groups,
)
from simlab.specs.analyses import IdentifySpec
from simlab.errors import SimlabError

__all__ = [
    "METHODS",
    "aggregate",
    "feature_importance",
    "format_importance",
    "importance_for",
    "importance_on_split",
]

METHODS = ("impurity", "permutation")
GROUPS = ("observable", "measure", "function", "statistic", "session", "transform", "channel")
"""What column importances are summed by (``importance_by_<group>``)."""
DEPTH = DEPTH_GROUP  # the name of the depth one-hot columns' group


class _RowMixer(ClassifierMixin, BaseEstimator):
    """Scores rows assembled from blocks of other rows, so sklearn's permutation importance
    can shuffle a block of columns (an observable's trajectory) as one feature.

    Its input has one column per block; entry (r, b) is the index of the row of ``X`` whose
    block ``b`` row ``r`` takes. Unshuffled, column b is ``0..n-1`` and rows are ``X``'s own;
    sklearn permuting column b gives each row another row's block b.
    """

    def __init__(self, fitted=None, X=None, blocks=None, classes=None):
        self.fitted = fitted
        self.X = X
        self.blocks = blocks
        self.classes = classes

    def fit(self, X, y):  # already fitted: sklearn's checks only need classes_
        return self

    @property
    def classes_(self):
        return self.classes

    def predict(self, index):
        index = np.asarray(index).astype(int)
        rows = np.empty_like(self.X)
        for b, cols in enumerate(self.blocks):
            rows[:, cols] = self.X[index[:, b]][:, cols]
        return self.fitted.predict(rows)


def _final_importances(estimator) -> np.ndarray | None:
    """``feature_importances_`` of the fitted model behind a search or pipeline, if any."""
    est = getattr(estimator, "best_estimator_", estimator)
    if hasattr(est, "steps"):
        if any(name == "pca" and step != "passthrough" for name, step in est.steps):
            return None  # importances of components, not of features
        est = est.steps[-1][1]
    values = getattr(est, "feature_importances_", None)
    return None if values is None else np.asarray(values, dtype=np.float64)


def importance_on_split(fs, labels, groups, train, test, classifier, preset, seed, split,
                        methods=METHODS, level="observable", n_repeats=5):
    """Column importances of one fitted split: {method: (n_columns,) or None}."""
    fit = fit_predict(fs.X, labels, train, test, classifier, groups=groups, preset=preset,
                      seed=seed, split=split, layout=fs.layout)
    out = {}
    if "impurity" in methods:
        out["impurity"] = _final_importances(fit.estimator)
    if "permutation" in methods:
        rs = random_state(seed, split, 7)
        X_test, y_test = fs.X[test], labels[test]
        n_cols = fs.X.shape[1]
        if level == "column":
            result = permutation_importance(fit.estimator, X_test, y_test, scoring="accuracy",
                                            n_repeats=n_repeats, random_state=rs, n_jobs=1)
            out["permutation"] = result.importances_mean
        else:
            blocks = _blocks(fs)
            mixer = _RowMixer(fit.estimator, X_test, blocks, np.unique(labels[train]))
            index = np.tile(np.arange(len(test))[:, None], (1, len(blocks)))
            result = permutation_importance(mixer, index, y_test, scoring="accuracy",
                                            n_repeats=n_repeats, random_state=rs, n_jobs=1)
            # spread a block's importance over its columns equally, so sums by observable
            # (and coarser groups) give back the block's value
            per_col = np.zeros(n_cols)
            for value, cols in zip(result.importances_mean, blocks):
                per_col[cols] = value / len(cols)
            out["permutation"] = per_col
    return out


def _blocks(fs) -> list[np.ndarray]:
    """Column indices of each channel's trajectory (an observable after one transform), then
    of the depth one-hot."""
    n = fs.layout.sessions
    blocks = [np.arange(i * n, (i + 1) * n) for i in range(fs.layout.channels)]
    if fs.layout.extra:
        blocks.append(np.arange(fs.layout.channels * n, fs.X.shape[1]))
    return blocks


def aggregate(column_importance: xr.DataArray, by: xr.DataArray) -> xr.DataArray:
    """Sum column importances over the columns that share a label of ``by`` (on ``feature``)."""
    return column_importance.groupby(by).sum(dim="feature")


def feature_importance(
    ds: xr.Dataset,
    spec: IdentifySpec = IdentifySpec(),
    classifier="random_forest",
    feature_set: str = "all",
    methods=METHODS,
    level: str = "observable",
    n_repeats: int = 5,
    progress: bool = False,
    n_jobs: int | None = None,
    subject_splits=None,
) -> xr.Dataset:
    """Impurity and permutation importance of one classifier on one feature set, per split.

    Uses ``spec``'s target, splits, grouping, seed and preset, so the splits are those of
    :func:`identify`. Returns ``importance`` (importance_type, split, feature) over feature columns,
    and sums by ``observable``, ``measure``, ``function``, ``statistic`` and ``session``
    (``importance_by_<group>``, dims importance_type x split x group; not ``method``, which
    would clash with ``.sel``'s own argument). A method that does not apply
    (impurity of a model without ``feature_importances_``) is NaN.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise SimlabError(f"importance methods must be among {', '.join(METHODS)}; got {list(methods)}")
    if level not in ("observable", "column"):
        raise SimlabError(f"permutation level must be observable or column; got {level!r}")
    sites = select_sites(ds, spec.target, spec.health)
    if len(np.unique(sites.labels)) < 2:
        raise SimlabError(f"importance needs at least 2 classes of {spec.target!r}")
    groups = site_groups(sites, spec.group_by)
    if subject_splits is None:
        splits = balanced_splits(sites.labels, groups, spec.splits, spec.test_fraction, spec.seed)
    else:
        splits = _explicit_splits(sites, list(subject_splits), ds.sizes["subject"])
    sets, _, _ = _feature_sets(sites, "both", spec.transform)
    if feature_set not in sets:
        raise SimlabError(
            f"feature set {feature_set!r} is not available; choose one of {', '.join(sets)}"
        )
    fs = sets[feature_set]
    outcomes = map_units(
        importance_on_split,
        [(fs, sites.labels, groups, *splits[s], classifier, spec.preset, spec.seed, s,
          tuple(methods), level, n_repeats) for s in range(len(splits))],
        n_jobs, progress, desc="importance",
    )
    n_cols = fs.X.shape[1]
    values = np.full((len(methods), len(splits), n_cols), np.nan)
    for s, outcome in enumerate(outcomes):
        for m, method in enumerate(methods):
            if outcome.get(method) is not None:
                values[m, s] = outcome[method]
    observable, session = fs.column_observable, fs.column_session
    transform = np.where(fs.column_transform == "", DEPTH, fs.column_transform)
    coords = {
        "importance_type": np.array(list(methods), dtype=str),
        "split": np.arange(len(splits), dtype=np.int64),
        "observable": ("feature", observable),
        "session": ("feature", session),
        "transform": ("feature", transform),
        "channel": ("feature", fs.column_channel),
    }
    for name in ("measure", "function", "statistic"):
        coords[name] = ("feature", _observable_attribute(ds, sites, name, observable))
    importance = xr.DataArray(values, dims=("importance_type", "split", "feature"), coords=coords,
                              name="importance")
    out = {"importance": importance.drop_vars(list(GROUPS))}
    for name in GROUPS:
        out[f"importance_by_{name}"] = aggregate(importance, importance[name])
    result = xr.Dataset(out).assign_coords(
        feature_observable=("feature", observable), feature_session=("feature", session),
        feature_transform=("feature", transform),
        feature_name=("feature", np.array([f"{c}@{s}" if s >= 0 else c
                                           for c, s in zip(fs.column_channel, session)], dtype=str)),
    )
    result.attrs = {
        "schema": "simlab.importance/1",
        "title": f"feature importance for identifying {spec.target}",
        "target": spec.target,
        "classifier": classifier_label(classifier),
        "feature_set": feature_set,
        "methods": ",".join(methods),
        "permutation_level": level,
        "n_repeats": int(n_repeats),
        "splits": len(splits),
        "group_by": spec.group_by,
        "transform": ",".join(spec.transforms),
        "seed": int(spec.seed),
        "preset": spec.preset,
        "aggregation": "sum over feature columns of the group; permutation importance of a "
        "channel block (an observable after one transform) is spread equally over its columns, so "
        "its sum is the block's value. A channel is named as its observable for the raw "
        "transform, else transform(observable); feature_name is channel@session (a difference "
        "at the session it arrives at). Session -1 and observable/measure/transform "
        "'depth_group' are the depth one-hot columns",
    }
    return copy_health(sites.health, result)


def _observable_attribute(ds, sites, name, observable) -> np.ndarray:
    """``measure``/``function``/``statistic`` of each column's observable, from the recording's
    coordinates when present, else parsed from the observable's name."""
    lookup = {}
    if name in ds.coords and ds[name].dims == ("observable",):
        lookup = dict(zip(ds["observable"].values.astype(str), ds[name].values.astype(str)))
    out = []
    for obs in observable:
        if obs == DEPTH:
            out.append(DEPTH)
        elif obs in lookup:
            out.append(lookup[obs])
        else:
            out.append(_parse_observable(obs).get(name, ""))
    return np.array(out, dtype=str)


def _parse_observable(name: str) -> dict:
    """``{measure}_{function}_{statistic}`` or ``activity_change_{function}`` (DESIGN.md)."""
    if name.startswith("activity_change_"):
        return {"measure": "activity_change", "function": name[len("activity_change_"):],
                "statistic": "id"}
    parts = name.rsplit("_", 2)
    if len(parts) == 3:
        return dict(zip(("measure", "function", "statistic"), parts))
    return {}


def importance_for(ds: xr.Dataset, spec: IdentifySpec, progress: bool = False,
                   n_jobs: int | None = None) -> xr.Dataset:
    """Importance as ``spec.importance`` asks: the random forest if listed (it also has
    impurity importance), else the first classifier, on feature set ``all`` (or the only
    measure's set)."""
    labels = [classifier_label(c) for c in spec.classifiers]
    classifier = spec.classifiers[labels.index("random_forest")] if "random_forest" in labels \
        else spec.classifiers[0]
    measures = set(ds["measure"].values.astype(str)) if "measure" in ds.coords else set()
    feature_set = "all" if len(measures) > 1 else (measures.pop() if measures else "all")
    return feature_importance(ds, spec, classifier, feature_set, progress=progress, n_jobs=n_jobs)


def format_importance(result: xr.Dataset, top: int = 10) -> str:
    """Mean importance over splits by measure, function and statistic, and the top
    observables, per method."""
    a = result.attrs
    lines = [f"feature importance ({a.get('classifier')}, feature set {a.get('feature_set')}, "
             f"{a.get('splits')} splits; mean over splits, summed over each group's columns)", *format_health(result)]
    for method in result["importance_type"].values.astype(str):
        lines.append(f"{method}:")
        # with several transforms, the top list names channels (transform(observable))
        several = "importance_by_transform" in result and len(set(result["transform"].values) - {DEPTH}) > 1
        shown = ("measure", "function", "statistic", *(("transform",) if several else ()),
                 "channel" if several and "importance_by_channel" in result else "observable")
        for group in shown:
            values = result[f"importance_by_{group}"].sel(importance_type=method).mean("split")
            label = "observable" if group == "channel" else group
            if bool(values.isnull().all()):
                lines.append(f"  by {label}: not available for this classifier")
                continue
            order = np.argsort(-values.values)[: top if group in ("observable", "channel") else None]
            text = ", ".join(f"{values[group].values[i]} {values.values[i]:.3f}" for i in order)
            lines.append(f"  by {label}{' (top %d)' % top if group in ('observable', 'channel') else ''}: {text}")
    return "\n".join(lines)
