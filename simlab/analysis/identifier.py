"""A fitted identifier: one classifier trained on a whole cohort, saved, and applied to new recordings.

``simlab fit`` trains one classifier on every usable site of a cohort (the features of
:func:`simlab.analysis.identify.build_features`: transformed session trajectories plus the
depth one-hot) and calibrates its probabilities with sklearn's ``CalibratedClassifierCV``
on grouped, class-stratified folds (a subject's sites, or a population's, never on both
sides). It saves two files: the model as skops (``model.skops``, no pickle) and a JSON
manifest beside it (``manifest.json``) with everything needed to apply it and the model
file's sha256. Loading checks the hash and refuses types that simlab's own identifiers do
not contain unless the user trusts the file.

``simlab predict`` refuses a recording whose observables, sessions or rig differ from the
identifier's (a one-line error that says what differs and how to re-record), predicts each
site's class with calibrated probabilities, pools the sites of each subject (the product
of their probabilities, renormalized), and scores each site's distance from the training
distribution: the fraction of its features outside the training sites' [q, 1 - q]
quantiles (:func:`ood_scores`). Where the recording knows the true classes it also reports
accuracy, the confusion matrix, per-class shares and the reliability of the probabilities.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from simlab._version import __version__
from simlab.analysis.classifiers import (
    Layout,
    classifier_label,
    inner_folds_for,
    make_estimator,
    parse_classifier,
    random_state,
)
from simlab.analysis.identify import (
    ALL,
    DEPTH_GROUP,
    _columns,
    _wilson,
    build_features,
    depth_groups,
    feature_matrix,
    select_sites,
    site_groups,
    subject_bootstrap,
)
from simlab.analysis.transforms import channel_name, transform_names
from simlab.errors import SimlabError
from simlab.fileio import refuse_overwrite, write_text_atomic
from simlab.recording.contract import rig_attribute
from simlab.specs.analyses import FitSpec, HealthSpec

__all__ = [
    "Identifier",
    "describe_identifier",
    "fit_identifier",
    "format_predictions",
    "incompatibilities",
    "load_identifier",
    "ood_scores",
    "pool_subjects",
    "predict_recording",
    "reliability",
    "save_identifier",
]

SCHEMA = "simlab.identifier/1"
PREDICT_SCHEMA = "simlab.predict/1"
MODEL_FILE = "model.skops"
MANIFEST_FILE = "manifest.json"
OOD_HELDOUT_QUANTILE = 0.99  # the default threshold: this quantile of held-out sites' scores
CALIBRATION_STREAM = 7  # seeds the calibration folds apart from identify's streams
RELIABILITY_BINS = 10

# The types that skops does not trust by default and simlab's built-in classifiers and
# calibration contain; any other type in a model file needs the user's --trust.
TRUSTED_TYPES = frozenset({
    "simlab.analysis.classifiers.Conv1DClassifier",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._classification.accuracy_score",
    "sklearn.metrics._scorer._Scorer",
    "sklearn.model_selection._split.StratifiedGroupKFold",
    "sklearn.tree._tree.Tree",
})

# Rig settings that change what a rig measures (a new seed only redraws units and noise),
# and the ``simlab record`` flag that sets each.
RIG_FLAGS = {
    "units": "--units",
    "sampling": "--sampling",
    "noise_model": "--noise-model",
    "noise": "--noise",
    "rate_gain": "--rate-gain",
    "count_window": "--count-window",
    "noise_placement": "--noise-placement",
    "percentiles": "--percentiles",
    "stimuli": "--stimuli",
}
FACTORS = ("architecture", "task", "learning_rule", "batch_size", "task_family")
RANGES = ("learning_rate",)


# --------------------------------------------------------------------------- the identifier


@dataclass
class Identifier:
    """A fitted, calibrated classifier with what it needs to be applied: ``manifest`` (the
    JSON-ready description) and the training sites' per-feature statistics (``low`` and
    ``high``: the [q, 1 - q] quantiles the out-of-distribution score uses; ``mean``, ``std``)."""

    model: Any
    manifest: dict
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    source: Path | None = field(default=None, compare=False)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (site, class) in the order of :attr:`classes`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # feature-name warnings of some estimators
            proba = self.model.predict_proba(np.asarray(X, dtype=np.float64))
        order = [list(map(str, self.model.classes_)).index(c) for c in self.classes]
        return proba[:, order]

    def ood(self, X: np.ndarray) -> np.ndarray:
        return ood_scores(X, self.low, self.high)


def ood_scores(X: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per site, the fraction of its features outside the training range [low, high] (a
    non-finite feature counts as outside).

    Chosen over a Mahalanobis distance because a cohort has far fewer sites (tens to
    hundreds) than features (sessions x observables, often over a thousand), so a covariance
    cannot be estimated without a shrinkage choice; a per-feature range needs no
    distributional assumption, and the score reads directly: 0.4 means 40% of the values
    lie outside what training ever showed.
    """
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        outside = ~((X >= low) & (X <= high))
    return outside.mean(axis=1) if X.shape[1] else np.zeros(len(X))


def _ranges(X: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    return np.quantile(X, q, axis=0), np.quantile(X, 1.0 - q, axis=0)


def _chosen_observables(sites, names: list[str]) -> np.ndarray:
    """Positions of the observables that ``names`` select: ``all``, measures or observables."""
    observables = [str(o) for o in sites.observables]
    measures = [str(m) for m in sites.measures]
    chosen = []
    for name in names:
        if name == ALL:
            chosen += range(len(observables))
        elif name in measures:
            chosen += [i for i, m in enumerate(measures) if m == name]
        elif name in observables:
            chosen.append(observables.index(name))
        else:
            raise SimlabError(
                f"observables: {name!r} is neither 'all', a measure ({', '.join(dict.fromkeys(measures))}) "
                "nor an observable of the recording")
    return np.array(sorted(set(chosen)), dtype=int)


def _rig_settings(ds: xr.Dataset) -> list[dict]:
    """The rig settings a recording carries (one per rig it combines), [] when it says none."""
    text = ds.attrs.get("rig")
    if not text:
        return []
    rigs = rig_attribute(ds)
    rigs = rigs if isinstance(rigs, list) else [rigs]
    return [{k: v for k, v in r.items() if k != "stimulus_sets"} for r in rigs if isinstance(r, dict)]


def _rig_value(rig: dict, key: str):
    value = rig.get(key)
    if key == "stimuli":  # no stimuli of its own: the run's held-out set
        return (value or {}).get("source", "heldout")
    return value


def _cohort_levels(ds: xr.Dataset, subjects: np.ndarray) -> dict:
    """The factor levels (and real-valued ranges) of the subjects that were fitted on."""
    levels = {}
    for name in FACTORS:
        if name in ds.coords and ds[name].dims == ("subject",):
            values = np.unique(ds[name].values[subjects])
            levels[name] = [v.item() if hasattr(v, "item") else str(v) for v in values]
    for name in RANGES:
        if name in ds.coords and ds[name].dims == ("subject",):
            values = ds[name].values[subjects].astype(np.float64)
            levels[name] = [float(np.nanmin(values)), float(np.nanmax(values))]
    return levels


def fit_identifier(ds: xr.Dataset, spec: FitSpec = FitSpec(), source: str = "") -> Identifier:
    """Train and calibrate one classifier on every usable site of ``ds``.

    The calibration folds are class-stratified and grouped (``spec.group_by``), passed to
    ``CalibratedClassifierCV`` as a list of splits with ``ensemble=False``: the classifier
    is fitted once on all sites, and the calibration map on its out-of-fold scores. The
    same folds give the out-of-distribution threshold (``spec.ood_threshold`` None: the 99th
    percentile of the held-out sites' scores against their training folds' ranges).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

    sites = select_sites(ds, spec.target, spec.health)
    classes = list(sites.classes)
    if len(classes) < 2:
        raise SimlabError(f"fit needs at least 2 classes of {spec.target!r} among usable subjects; "
                          f"got {len(classes)} ({', '.join(classes)})")
    idx = _chosen_observables(sites, spec.observables)
    X, kept, dropped = build_features(sites, idx, spec.transform)
    if not kept:
        raise SimlabError(f"fit found no observable finite at every site and session among {', '.join(spec.observables)}")
    groups_depth = depth_groups(sites)
    n_transforms = len(transform_names(spec.transform))
    length = (X.shape[1] - len(groups_depth)) // (len(kept) * n_transforms)
    layout = Layout(length, len(kept) * n_transforms, len(groups_depth))
    labels = sites.labels
    groups = site_groups(sites, spec.group_by)
    per_class = min(len(np.unique(groups[labels == c])) for c in classes)
    folds = min(spec.folds, per_class)
    if folds < 2:
        raise SimlabError(f"fit: a class has {per_class} {spec.group_by}(s); calibration needs at least 2 per class")
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=random_state(spec.seed, 0, CALIBRATION_STREAM))
    cv = list(splitter.split(X, labels, groups))
    inner = inner_folds_for(labels[cv[0][0]], groups[cv[0][0]], spec.preset)
    estimator = make_estimator(spec.classifier, preset=spec.preset, seed=spec.seed, split=0, inner_folds=inner,
                               layout=layout, n_train=min(len(a) for a, _ in cv), n_features=X.shape[1])
    model = CalibratedClassifierCV(estimator, method=spec.calibration, cv=cv, ensemble=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(estimator, GridSearchCV):
            model.fit(X, labels, groups=groups)
        else:
            model.fit(X, labels)

    low, high = _ranges(X, spec.ood_quantile)
    heldout = np.concatenate([ood_scores(X[test], *_ranges(X[train], spec.ood_quantile)) for train, test in cv])
    threshold = (float(np.quantile(heldout, OOD_HELDOUT_QUANTILE)) if spec.ood_threshold is None
                 else float(spec.ood_threshold))
    column_observable, column_transform, column_session = _columns(kept, spec.transform, sites.observation.shape[1],
                                                                   length, len(groups_depth))
    columns = [f"{DEPTH_GROUP}={groups_depth[i - (len(column_observable) - len(groups_depth))]}"
               if o == DEPTH_GROUP else f"{channel_name(o, t)}@{s}"
               for i, (o, t, s) in enumerate(zip(column_observable, column_transform, column_session))]
    measure_of = dict(zip(map(str, sites.observables), map(str, sites.measures)))
    used_measures = sorted({measure_of[o] for o in kept})
    rigs = [r for r in _rig_settings(ds) if r.get("measure") in used_measures or "measure" not in r]
    subjects = np.unique(sites.subject_index)
    manifest = {
        "schema": SCHEMA,
        "simlab_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": str(source),
        "target": spec.target,
        "classes": classes,
        "classifier": classifier_label(spec.classifier),
        "classifier_entry": parse_classifier(spec.classifier).__dict__,
        "settings": spec.model_dump(mode="json"),
        "calibration": {"method": spec.calibration, "folds": folds, "group_by": spec.group_by, "ensemble": False,
                        "class": "sklearn.calibration.CalibratedClassifierCV"},
        "transform": list(transform_names(spec.transform)),
        "observables": kept,
        "measures": used_measures,
        "observable_measures": [measure_of[o] for o in kept],
        "dropped_observables": dropped,
        "depth_groups": groups_depth,
        "n_features": int(X.shape[1]),
        "feature_columns": columns,
        "sessions": {
            "count": int(sites.observation.shape[1]),
            "fraction": [float(f) for f in ds["fraction"].values] if "fraction" in ds.coords else None,
            "step": [int(s) for s in ds["step"].values] if "step" in ds.coords else None,
        },
        "rigs": rigs,
        "cohort": {
            "subjects": int(len(subjects)),
            "sites": int(len(labels)),
            "sites_per_class": {c: int((labels == c).sum()) for c in classes},
            "excluded_diverged": int(sites.excluded_diverged),
            "levels": _cohort_levels(ds, subjects),
        },
        "ood": {
            "score": "fraction of a site's features outside the training sites' "
                     f"[{spec.ood_quantile:g}, {1 - spec.ood_quantile:g}] quantiles (non-finite counts as outside)",
            "quantile": float(spec.ood_quantile),
            "threshold": threshold,
            "threshold_from": ("given" if spec.ood_threshold is not None else
                               f"{OOD_HELDOUT_QUANTILE:g} quantile of {len(heldout)} held-out sites' scores "
                               "against their calibration fold's training ranges"),
            "heldout_score_median": float(np.median(heldout)),
            "heldout_score_max": float(heldout.max()),
        },
    }
    return Identifier(model, manifest, low, high, X.mean(axis=0), X.std(axis=0))


# --------------------------------------------------------------------------- files


def _paths(path) -> tuple[Path, Path]:
    """(model file, manifest) of an identifier given as a directory, its manifest or its model."""
    path = Path(path)
    if path.suffix == ".json":
        return path.with_suffix(".skops"), path
    if path.suffix == ".skops":
        return path, path.with_suffix(".json")
    return path / MODEL_FILE, path / MANIFEST_FILE


def save_identifier(identifier: Identifier, out, force: bool = False) -> Path:
    """Write the model (skops) and its manifest (JSON, with the model's sha256): ``out`` is a
    directory (``model.skops`` and ``manifest.json`` in it) or a ``.skops`` file (the manifest
    beside it as ``.json``). Returns the manifest's path."""
    import skops.io as sio

    model_path, manifest_path = _paths(out)
    refuse_overwrite(model_path, force)
    refuse_overwrite(manifest_path, force)
    payload = {"model": identifier.model, "low": identifier.low, "high": identifier.high,
               "mean": identifier.mean, "std": identifier.std}
    data = sio.dumps(payload)
    manifest = {**identifier.manifest, "model_file": model_path.name,
                "model_sha256": hashlib.sha256(data).hexdigest(), "model_bytes": len(data),
                "format": f"skops {_skops_version()}"}
    model_path.parent.mkdir(parents=True, exist_ok=True)
    from simlab.fileio import atomic_path

    with atomic_path(model_path, force) as tmp:
        Path(tmp).write_bytes(data)
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n", force=force)
    identifier.manifest = manifest
    identifier.source = manifest_path
    return manifest_path


def _skops_version() -> str:
    import skops

    return str(skops.__version__)


def load_identifier(path, trust: bool = False) -> Identifier:
    """Read an identifier, checking the model file's sha256 against the manifest and refusing
    types simlab's identifiers do not contain (loading runs their code) unless ``trust``."""
    import skops.io as sio

    model_path, manifest_path = _paths(path)
    if not manifest_path.is_file():
        raise SimlabError(f"{manifest_path}: no identifier manifest (make one with simlab fit)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise SimlabError(f"{manifest_path}: not a JSON manifest ({exc})") from None
    if manifest.get("schema") != SCHEMA:
        raise SimlabError(f"{manifest_path}: schema {manifest.get('schema')!r}, expected {SCHEMA}")
    model_path = manifest_path.parent / manifest.get("model_file", model_path.name)
    if not model_path.is_file():
        raise SimlabError(f"{model_path}: the identifier's model file is missing")
    data = model_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.get("model_sha256"):
        raise SimlabError(f"{model_path}: sha256 {digest[:12]}... differs from the manifest's "
                          f"{str(manifest.get('model_sha256'))[:12]}...: the model is not the one simlab fit wrote; "
                          "refit it or restore the file")
    untrusted = list(sio.get_untrusted_types(data=data))
    unknown = sorted(set(untrusted) - TRUSTED_TYPES)
    if unknown and not trust:
        raise SimlabError(f"{model_path}: holds types that simlab's identifiers do not ({', '.join(unknown)}); "
                          "loading them runs their code, so pass --trust (trust=True) only if you trust the file's source")
    payload = sio.loads(data, trusted=untrusted)
    return Identifier(payload["model"], manifest, payload["low"], payload["high"], payload["mean"], payload["std"],
                      source=manifest_path)


# --------------------------------------------------------------------------- compatibility


def _record_command(rig: dict, keys) -> str:
    words = ["simlab record RUN --rig", str(rig.get("type", rig.get("name", "RIG")))]
    for key in keys:
        value = _rig_value(rig, key)
        if value is not None:
            words.append(f"{RIG_FLAGS[key]} {value}")
    return " ".join(words)


def _fractions(values) -> str:
    values = list(values)
    shown = values if len(values) <= 4 else values[:2] + ["..."] + values[-1:]
    return ", ".join(v if isinstance(v, str) else f"{v:g}" for v in shown)


def incompatibilities(manifest: dict, ds: xr.Dataset) -> list[str]:
    """What keeps the identifier from applying to ``ds``: missing observables, other sessions,
    another rig; each problem as a sentence that says how to re-record. Empty: it applies."""
    problems = []
    observables = [str(o) for o in ds["observable"].values] if "observable" in ds.coords else []
    rigs = {r.get("measure", r.get("type")): r for r in manifest.get("rigs", [])}
    missing = [o for o in manifest["observables"] if o not in observables]
    if missing:
        measure_of = dict(zip(manifest["observables"], manifest.get("observable_measures", [])))
        measures = sorted({measure_of[o] for o in missing if o in measure_of} or set(manifest["measures"]))
        how = "; ".join(_record_command(rigs[m], ("units", "noise")) for m in measures if m in rigs)
        problems.append(f"observables differ: the recording lacks {len(missing)} of the identifier's "
                        f"{len(manifest['observables'])} ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
                        f"record them ({how or ', '.join(measures)}) and pass every rig's recording (or the run)")
    sessions = manifest["sessions"]
    n = int(ds.sizes.get("session", 0))
    fraction = ds["fraction"].values.astype(float) if "fraction" in ds.coords else None
    if n != sessions["count"] or (sessions["fraction"] is not None and fraction is not None
                                  and not np.allclose(fraction, sessions["fraction"], atol=1e-6)):
        got = _fractions(list(fraction)) if fraction is not None else "unknown"
        want = _fractions(sessions["fraction"] or [])
        problems.append(f"sessions differ: the recording has {n} at training fractions {got}, the identifier "
                        f"{sessions['count']} at {want}; re-record with --sessions {sessions['count']} (simlab record "
                        f"RUN --rig RIG --sessions {sessions['count']}) from a run whose protocol records at least "
                        "those sessions")
    recorded = {r.get("measure", r.get("type")): r for r in _rig_settings(ds)}
    for measure, rig in rigs.items():
        other = recorded.get(measure)
        if other is None:
            if not missing:
                problems.append(f"rig differs: the recording does not say which rig recorded its {measure} observables "
                                f"(no 'rig' attribute); record it with {_record_command(rig, ('units', 'noise'))}")
            continue
        keys = ["type", *RIG_FLAGS]
        differ = [k for k in keys if _rig_value(rig, k) != _rig_value(other, k)]
        if differ:
            what = ", ".join(f"{k} {_rig_value(other, k)} (identifier: {_rig_value(rig, k)})" for k in differ)
            shown = ["units", "noise", *[k for k in differ if k not in ("type", "units", "noise")]]
            problems.append(f"rig of the {measure} observables differs: {what}; re-record with "
                            f"{_record_command(rig, shown)}")
    return problems


# --------------------------------------------------------------------------- predict


def pool_subjects(probability: np.ndarray, subject_of_site: np.ndarray, n_subjects: int):
    """Per subject: the product of its sites' probabilities, renormalized over classes, and
    the number of sites pooled (sites with a non-finite probability are left out).

    Summed log-probabilities, so many confident sites do not underflow. This is the
    posterior of a subject's class if its sites were independent given the class and the
    classes equally likely a priori (the calibration cohort's classes are balanced or close);
    sites of one network are correlated, so the pooled probability is overconfident.
    """
    probability = np.asarray(probability, dtype=np.float64)
    finite = np.isfinite(probability).all(axis=1)
    logp = np.log(np.maximum(probability[finite], np.finfo(np.float64).tiny))
    total = np.zeros((n_subjects, probability.shape[1]))
    np.add.at(total, subject_of_site[finite], logp)
    count = np.bincount(subject_of_site[finite], minlength=n_subjects)
    total -= total.max(axis=1, keepdims=True)
    pooled = np.exp(total)
    pooled /= pooled.sum(axis=1, keepdims=True)
    pooled[count == 0] = np.nan
    return pooled, count


def reliability(probability: np.ndarray, truth: np.ndarray, classes, bins: int = RELIABILITY_BINS) -> dict:
    """Reliability of calibrated probabilities: per equal-width bin of predicted probability,
    the mean prediction, the observed frequency and the count; for the top class (confidence
    vs accuracy) and for each class one-vs-rest. With the expected calibration error (top
    class, bins weighted by count) and the Brier score."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    truth = np.asarray(truth)

    def curve(p, hit):
        which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
        count = np.bincount(which, minlength=bins).astype(np.int64)
        with np.errstate(invalid="ignore"):
            mean = np.bincount(which, weights=p, minlength=bins) / count
            observed = np.bincount(which, weights=hit.astype(float), minlength=bins) / count
        return mean, observed, count

    top = probability.argmax(axis=1)
    onehot = (truth[:, None] == np.array(classes)[None, :]).astype(float)
    conf, acc, count = curve(probability.max(axis=1), onehot[np.arange(len(top)), top])
    per_class = [curve(probability[:, k], onehot[:, k]) for k in range(len(classes))]
    ece = float(np.nansum(count / max(count.sum(), 1) * np.abs(acc - conf)))
    return {"edges": edges, "confidence": conf, "accuracy": acc, "count": count,
            "class_mean": np.array([c[0] for c in per_class]), "class_observed": np.array([c[1] for c in per_class]),
            "class_count": np.array([c[2] for c in per_class]), "ece": ece,
            "brier": float(np.mean(np.sum((probability - onehot) ** 2, axis=1)))}


def predict_recording(identifier: Identifier, ds: xr.Dataset, source: str = "") -> xr.Dataset:
    """Per-site and per-subject predictions of ``identifier`` on ``ds``, as a Dataset.

    Raises SimlabError naming every difference when the identifier does not apply (see
    :func:`incompatibilities`). When ``ds`` has the identifier's target as a subject
    coordinate, the result also holds accuracy, confusion matrices and reliability.
    """
    manifest = identifier.manifest
    problems = incompatibilities(manifest, ds)
    if problems:
        raise SimlabError("the identifier does not apply to this recording: " + "; ".join(problems))
    target, classes = manifest["target"], identifier.classes
    known = target in ds.coords and ds[target].dims == ("subject",)
    # without the target, the subject itself labels the sites (select_sites needs a label)
    sites = select_sites(ds, target if known else "subject", HealthSpec())
    if len(sites.labels) == 0:
        raise SimlabError("predict found no sites: every subject diverged or every layer is padding")
    position = {str(o): i for i, o in enumerate(sites.observables)}
    idx = [position[o] for o in manifest["observables"]]
    X = feature_matrix(sites, idx, manifest["transform"], groups=manifest["depth_groups"])
    finite = np.isfinite(X).all(axis=1)
    probability = np.full((len(X), len(classes)), np.nan)
    if finite.any():
        probability[finite] = identifier.probabilities(X[finite])
    predicted = np.array([classes[k] if ok else "" for k, ok in zip(np.nan_to_num(probability).argmax(axis=1), finite)],
                         dtype=str)
    ood = identifier.ood(X)
    threshold = float(manifest["ood"]["threshold"])
    flagged = (ood > threshold) | ~finite
    subject_ids = ds["subject"].values.astype(str) if "subject" in ds.coords else np.arange(ds.sizes["subject"]).astype(str)
    used_subjects, subject_of_site = np.unique(sites.subject_index, return_inverse=True)
    pooled, n_pooled = pool_subjects(probability, subject_of_site, len(used_subjects))
    subject_pred = np.array([classes[k] if n else "" for k, n in zip(np.nan_to_num(pooled).argmax(axis=1), n_pooled)],
                            dtype=str)
    n_flagged = np.bincount(subject_of_site, weights=flagged.astype(float), minlength=len(used_subjects)).astype(np.int64)

    data_vars = {
        "probability": (("site", "class"), probability,
                        {"long_name": "calibrated probability of each class", "units": "1"}),
        "predicted": (("site",), predicted, {"long_name": "predicted class (empty: a feature not finite)"}),
        "ood_score": (("site",), ood, {"long_name": manifest["ood"]["score"], "units": "1"}),
        "out_of_distribution": (("site",), flagged.astype(np.int8), {
            "long_name": f"1 where ood_score > {threshold:.4g} or a feature is not finite"}),
        "subject_probability": (("subject", "class"), pooled, {
            "long_name": "product of the subject's site probabilities, renormalized (sum of log-probabilities)",
            "units": "1"}),
        "subject_predicted": (("subject",), subject_pred, {"long_name": "predicted class of the subject"}),
        "subject_sites": (("subject",), n_pooled.astype(np.int64), {"long_name": "sites pooled"}),
        "subject_ood_sites": (("subject",), n_flagged, {"long_name": "sites flagged out of distribution"}),
    }
    coords = {
        "site": sites.names,
        "site_subject": (("site",), subject_ids[sites.subject_index]),
        "site_depth": (("site",), sites.depth.astype(str)),
        "class": np.array(classes, dtype=str),
        "subject": subject_ids[used_subjects],
    }
    for name in ("architecture", "task"):
        if name in ds.coords and ds[name].dims == ("subject",):
            coords[name] = (("subject",), ds[name].values.astype(str)[used_subjects])
    levels = manifest["cohort"]["levels"]
    attrs = {
        "schema": PREDICT_SCHEMA,
        "title": f"predictions of {target} by an identifier fitted on {manifest['cohort']['subjects']} subjects",
        "simlab_version": __version__,
        "target": target,
        "classes": ",".join(classes),
        "identifier": str(identifier.source or ""),
        "identifier_sha256": str(manifest.get("model_sha256", "")),
        "classifier": manifest["classifier"],
        "transform": ",".join(manifest["transform"]),
        "recording": str(source),
        "pooling": "subject probability = product over the subject's sites of their probabilities, renormalized "
                   "(sum of log-probabilities); exact if sites were independent given the class with equal priors",
        "ood_score": manifest["ood"]["score"],
        "ood_threshold": threshold,
        "n_sites": int(len(X)),
        "n_subjects": int(len(used_subjects)),
        "n_ood": int(flagged.sum()),
        "n_not_finite": int((~finite).sum()),
        "labels_known": int(known),
        "training_levels": json.dumps(levels, sort_keys=True),
    }
    unseen = {}
    for name, values in levels.items():
        if name in FACTORS and name in ds.coords and ds[name].dims == ("subject",):
            here = sorted({str(v) for v in ds[name].values[used_subjects]} - {str(v) for v in values})
            if here and name != target:
                unseen[name] = here
    attrs["unseen_levels"] = json.dumps(unseen, sort_keys=True)
    result = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if known:
        result = _with_evaluation(result, sites.labels, subject_of_site, flagged, manifest)
    return result


def _with_evaluation(result: xr.Dataset, truth: np.ndarray, subject_of_site, flagged, manifest) -> xr.Dataset:
    """Accuracy, confusion and reliability where the recording knows the true classes."""
    classes = [str(c) for c in result["class"].values]
    predicted = result["predicted"].values.astype(str)
    scored = predicted != ""
    hit = (predicted == truth) & scored
    n_sub = result.sizes["subject"]
    subject_truth = np.array([truth[subject_of_site == s][0] for s in range(n_sub)], dtype=str)
    true_classes = classes + sorted(set(truth) - set(classes))
    pos = {c: i for i, c in enumerate(true_classes)}
    confusion = np.zeros((len(true_classes), len(classes)), np.int64)
    np.add.at(confusion, ([pos[t] for t in truth[scored]], [classes.index(p) for p in predicted[scored]]), 1)
    subject_pred = result["subject_predicted"].values.astype(str)
    pooled_ok = subject_pred != ""
    subject_conf = np.zeros_like(confusion)
    np.add.at(subject_conf, ([pos[t] for t in subject_truth[pooled_ok]],
                             [classes.index(p) for p in subject_pred[pooled_ok]]), 1)
    correct = np.bincount(subject_of_site, weights=hit.astype(float), minlength=n_sub)
    total = np.bincount(subject_of_site, weights=scored.astype(float), minlength=n_sub)
    seed = int(manifest["settings"].get("seed", 0))
    boot = subject_bootstrap(correct, total, 1000, np.random.default_rng([seed, 8191]))
    in_dist = scored & ~flagged
    rel = reliability(result["probability"].values[scored], truth[scored], classes)
    n_scored = int(scored.sum())
    result = result.assign_coords(site_label=(("site",), truth.astype(str)),
                                  subject_label=(("subject",), subject_truth),
                                  true_class=np.array(true_classes, dtype=str),
                                  predicted_class=np.array(classes, dtype=str),
                                  bound=np.array(["lower", "upper"]),
                                  bin=np.arange(RELIABILITY_BINS))
    result["confusion"] = (("true_class", "predicted_class"), confusion, {"long_name": "sites"})
    result["subject_confusion"] = (("true_class", "predicted_class"), subject_conf, {"long_name": "subjects"})
    result["accuracy_ci"] = (("bound",), _wilson(int(hit.sum()), n_scored), {"long_name": "Wilson 95% over sites"})
    result["accuracy_boot_ci"] = (("bound",), boot, {"long_name": "subject bootstrap 95% interval (1000 resamples)"})
    result["prediction_share"] = (("class",), confusion.sum(axis=0) / max(n_scored, 1),
                                  {"long_name": "fraction of sites predicted as each class", "units": "1"})
    result["true_share"] = (("class",), np.array([(truth[scored] == c).mean() if n_scored else np.nan for c in classes]),
                            {"long_name": "fraction of sites of each class", "units": "1"})
    result["reliability_confidence"] = (("bin",), rel["confidence"], {"long_name": "mean top-class probability"})
    result["reliability_accuracy"] = (("bin",), rel["accuracy"], {"long_name": "fraction of the bin's sites correct"})
    result["reliability_count"] = (("bin",), rel["count"], {"long_name": "sites in the bin"})
    result["class_reliability_mean"] = (("class", "bin"), rel["class_mean"],
                                        {"long_name": "mean predicted probability of the class"})
    result["class_reliability_observed"] = (("class", "bin"), rel["class_observed"],
                                            {"long_name": "fraction of the bin's sites of the class"})
    result["class_reliability_count"] = (("class", "bin"), rel["class_count"], {"long_name": "sites in the bin"})
    result.attrs.update({
        "accuracy": float(hit.sum() / max(n_scored, 1)),
        "n_scored": n_scored,
        "subject_accuracy": float((subject_pred == subject_truth)[pooled_ok].mean()) if pooled_ok.any() else np.nan,
        "accuracy_in_distribution": float(hit[in_dist].mean()) if in_dist.any() else np.nan,
        "n_in_distribution": int(in_dist.sum()),
        "ece": rel["ece"],
        "brier": rel["brier"],
        "chance": 1.0 / len(classes),
        "unknown_true_classes": ",".join(sorted(set(truth) - set(classes))),
    })
    return result


# --------------------------------------------------------------------------- reporting


def _matrix(rows, cols, values, fmt) -> list[str]:
    head = "true \\ predicted"
    first = max(len(head), *(len(r) for r in rows))
    widths = [max(len(c), 6) for c in cols]
    lines = ["  " + f"{head:<{first}}" + "".join(f"  {c:>{w}}" for c, w in zip(cols, widths))]
    for r, row in zip(rows, values):
        lines.append("  " + f"{r:<{first}}" + "".join(f"  {fmt(v):>{w}}" for v, w in zip(row, widths)))
    return lines


def _by_level(result: xr.Dataset) -> list[str]:
    lines = []
    truth = result["site_label"].values.astype(str)
    predicted = result["predicted"].values.astype(str)
    for name in ("architecture", "task"):
        if name not in result.coords:
            continue
        of_subject = dict(zip(result["subject"].values.astype(str), result[name].values.astype(str)))
        level = np.array([of_subject[s] for s in result["site_subject"].values.astype(str)])
        if len(np.unique(level)) < 2:
            continue
        parts = []
        for value in np.unique(level):
            mask = (level == value) & (predicted != "")
            parts.append(f"{value} {np.mean(predicted[mask] == truth[mask]):.3f} ({mask.sum()} sites)")
        lines.append(f"  by {name}: " + ", ".join(parts))
    return lines


def format_predictions(result: xr.Dataset) -> str:
    """The printed summary of :func:`predict_recording`."""
    a = result.attrs
    classes = [str(c) for c in result["class"].values]
    lines = [
        f"predict {a['target']} ({', '.join(classes)}) with {a['classifier']} on {a['transform'].replace(',', ' + ')} features"
        + (f": {a['identifier']}" if a.get("identifier") else ""),
        f"{a['n_subjects']} subjects, {a['n_sites']} sites; {a['n_ood']} sites flagged out of distribution "
        f"(ood score > {float(a['ood_threshold']):.3g}: {a['ood_score']})"
        + (f", {a['n_not_finite']} with a feature not finite (not predicted)" if a["n_not_finite"] else ""),
    ]
    unseen = json.loads(a.get("unseen_levels", "{}"))
    if unseen:
        lines.append("not in the training cohort: " + "; ".join(f"{k} {', '.join(v)}" for k, v in unseen.items()))
    if int(a.get("labels_known", 0)):
        low, high = result["accuracy_ci"].values
        blow, bhigh = result["accuracy_boot_ci"].values
        lines += [
            "",
            f"cross-run accuracy (sites): {a['accuracy']:.3f} [{low:.2f}, {high:.2f}] ({blow:.2f}, {bhigh:.2f}) "
            f"over {a['n_scored']} sites; chance {a['chance']:.3f}",
            "  [Wilson 95% over sites] (subject bootstrap 95%: subjects resampled)",
            f"  sites in distribution: {a['accuracy_in_distribution']:.3f} over {a['n_in_distribution']} sites",
            f"subject accuracy (sites pooled): {a['subject_accuracy']:.3f} over {a['n_subjects']} subjects",
            *_by_level(result),
            f"calibration: expected calibration error {a['ece']:.3f} (top class, {RELIABILITY_BINS} bins), "
            f"Brier score {a['brier']:.3f}",
        ]
        if a.get("unknown_true_classes"):
            lines.append(f"true classes the identifier does not know (always wrong): {a['unknown_true_classes']}")
        true_classes = [str(c) for c in result["true_class"].values]
        lines += ["", "confusion (sites):",
                  *_matrix(true_classes, classes, result["confusion"].values, str),
                  "", "confusion (subjects, sites pooled):",
                  *_matrix(true_classes, classes, result["subject_confusion"].values, str),
                  "", "shares of sites: " + ", ".join(
                      f"{c} predicted {p:.2f} / true {t:.2f}" for c, p, t in
                      zip(classes, result["prediction_share"].values, result["true_share"].values))]
    else:
        share = {c: int((result["predicted"].values == c).sum()) for c in classes}
        lines += ["", "predicted sites per class: " + ", ".join(f"{c} {n}" for c, n in share.items())]
    lines += ["", "subjects (pooled over their sites):"]
    width = max(len(str(s)) for s in result["subject"].values)
    for i, subject in enumerate(result["subject"].values):
        p = result["subject_probability"].values[i]
        text = f"  {str(subject):<{width}}  {result['subject_predicted'].values[i] or '-':<{max(map(len, classes))}}"
        text += f"  p={np.nanmax(p) if np.isfinite(p).any() else float('nan'):.2f}  {int(result['subject_sites'].values[i])} sites"
        if int(result["subject_ood_sites"].values[i]):
            text += f", {int(result['subject_ood_sites'].values[i])} out of distribution"
        if "subject_label" in result.coords:
            text += f"  (true {result['subject_label'].values[i]})"
        lines.append(text)
    return "\n".join(lines)


def describe_identifier(manifest: dict) -> str:
    """A few lines on what an identifier was fitted on."""
    cohort = manifest["cohort"]
    levels = "; ".join(f"{k} {', '.join(map(str, v))}" if k not in RANGES else f"{k} {v[0]:.3g} to {v[1]:.3g}"
                       for k, v in cohort["levels"].items())
    rigs = ", ".join(f"{r.get('type')} (units {r.get('units')}, noise {r.get('noise')})" for r in manifest["rigs"])
    return "\n".join([
        f"identifier of {manifest['target']} ({', '.join(manifest['classes'])}): {manifest['classifier']}, "
        f"{manifest['calibration']['method']} calibration on {manifest['calibration']['folds']} folds grouped by "
        f"{manifest['calibration']['group_by']}",
        f"fitted on {cohort['subjects']} subjects, {cohort['sites']} sites; {levels}",
        f"features: {len(manifest['observables'])} observables x {manifest['sessions']['count']} sessions, transform "
        f"{' + '.join(manifest['transform'])}: {manifest['n_features']} columns"
        + (f"; dropped (not finite): {', '.join(manifest['dropped_observables'])}" if manifest["dropped_observables"] else ""),
        f"rigs: {rigs or 'not recorded'}",
        f"out of distribution: {manifest['ood']['score']} > {manifest['ood']['threshold']:.3g} "
        f"({manifest['ood']['threshold_from']})",
    ])
