"""Classifiers for identification, as sklearn estimators with their hyperparameter grids.

A classifier is named by a built-in name (``linear_svm``, ``random_forest``, ``conv1d``), an
sklearn alias (``logistic_regression``, ``knn``, ...) or an import path
(``sklearn.ensemble.ExtraTreesClassifier``), with optional constructor ``params`` and an
optional ``grid`` of values to search. Every estimator z-scores its features with
training-split statistics; grid values are chosen by class-stratified, grouped
cross-validation inside the training split, so neither test sites nor a training subject on
both sides of an inner fold informs the choice.

Two presets: ``reference`` searches the grids of the reference (Nayebi et al. 2020);
``fast`` keeps a small grid for the linear SVM, one random forest and one small Conv1D net,
so the quickstart identifies in seconds on two cores.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from simlab.errors import SimlabError
from simlab.registry import CLASSIFIERS
from simlab.specs.classifiers import ClassifierChoice, classifier_label, estimator_class, parse_classifier

__all__ = [
    "PRESETS",
    "ClassifierEntry",
    "ClassifierChoice",
    "Conv1DClassifier",
    "Fitted",
    "Layout",
    "classifier_label",
    "fit_predict",
    "inner_folds_for",
    "make_estimator",
    "parse_classifier",
    "random_state",
]

PRESETS = ("fast", "reference")
INNER_FOLDS = {"fast": 3, "reference": 5}  # the reference chose by 5-fold CV
SVM_MAX_ITER = 20_000
N_TREES = 200  # the fast preset's single forest

# With features z-scored and about a thousand of them (sessions x observables) for a couple
# of hundred sites, the sites are close to linearly separable; larger C barely changes the fit
# but costs 10-100x in solver time (liblinear on the quickstart: C=0.01 in 0.07 s, C=1 in 2 s,
# C=10 in 13 s, not converged). So the fast grid stays small.
FAST_GRIDS: dict[str, dict[str, list]] = {
    "linear_svm": {"C": [0.001, 0.01, 0.1]},
    "random_forest": {},
    "conv1d": {},
}
# The reference's grids (nayebi2020.md): SVM C in {1, 5e1, ..., 5e6} with PCA components
# {10..600} or none; RF max_features x n_estimators; Conv1D over kernel, stride, filters,
# pooling, learning rate and L2.
REFERENCE_GRIDS: dict[str, dict[str, list]] = {
    "linear_svm": {
        "C": [1.0, 5e1, 5e2, 5e3, 5e4, 5e5, 5e6],
        "pca": [None, 10, 50, 100, 200, 400, 600],
    },
    "random_forest": {
        "max_features": ["sqrt", "log2", None],
        "n_estimators": [20, 50, 100, 500, 1000],
    },
    "conv1d": {
        "kernel_size": [1, 2, 6, 11, 21],
        "stride": [1, 2, 4],
        "filters": [20, 40],
        "pooling": ["none", "max", "avg"],
        "learning_rate": [1e-3, 1e-4],
        "l2": [1e-4, 0.0],
    },
}


@dataclass(frozen=True)
class Layout:
    """How a feature matrix is laid out: ``channels`` observables x ``sessions`` columns,
    observable-major, followed by ``extra`` columns (the depth group one-hot).

    The Conv1D net needs it to put sessions on its time axis; other classifiers ignore it.
    """

    sessions: int
    channels: int
    extra: int = 0

    @property
    def n_features(self) -> int:
        return self.sessions * self.channels + self.extra


def random_state(seed: int, split: int, stream: int) -> int:
    """A 32-bit seed for one estimator of one split, independent across streams."""
    return int(np.random.SeedSequence([seed, split, stream]).generate_state(1)[0])


# --------------------------------------------------------------------------- estimators


def _grid(choice: ClassifierChoice, preset: str) -> dict[str, list]:
    """Values to search: the entry's own grid, else the preset's for a built-in; fixed
    ``params`` leave the grid."""
    if preset not in PRESETS:
        raise SimlabError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if choice.grid is not None:
        grid = dict(choice.grid)
    else:
        grid = dict((FAST_GRIDS if preset == "fast" else REFERENCE_GRIDS).get(choice.name, {}))
    return {k: v for k, v in grid.items() if k not in choice.params}


def _base(choice: ClassifierChoice, preset: str, seed: int, split: int, layout: Layout | None):
    """An unsearched pipeline and the step name its grid parameters belong to."""
    params = dict(choice.params)
    if choice.name == "linear_svm":
        pca = params.pop("pca", None)
        svm = LinearSVC(C=0.01, dual=False, max_iter=SVM_MAX_ITER,
                        random_state=random_state(seed, split, 2))
        svm.set_params(**params)
        steps = [("scale", StandardScaler()), ("pca", _pca(pca, seed, split)), ("clf", svm)]
        return Pipeline(steps), "clf"
    if choice.name == "random_forest":
        forest = RandomForestClassifier(n_estimators=N_TREES, n_jobs=1,
                                        random_state=random_state(seed, split, 1))
        forest.set_params(**params)
        return Pipeline([("scale", StandardScaler()), ("clf", forest)]), "clf"
    if choice.name == "conv1d":
        if layout is None:
            raise SimlabError("the conv1d classifier needs the feature layout (sessions x observables)")
        net = Conv1DClassifier(sessions=layout.sessions, channels=layout.channels,
                               random_state=random_state(seed, split, 4))
        net.set_params(**params)
        return net, ""  # z-scores its inputs itself
    cls = estimator_class(choice.name)
    est = cls(**params)
    if "random_state" in est.get_params(deep=False) and "random_state" not in params:
        est.set_params(random_state=random_state(seed, split, 5))
    return Pipeline([("scale", StandardScaler()), ("clf", est)]), "clf"


def _pca(n_components, seed, split):
    if n_components is None:
        return "passthrough"
    return PCA(n_components=n_components, random_state=random_state(seed, split, 6))


def _search_space(choice: ClassifierChoice, grid: dict[str, list], step: str, n_train: int,
                  n_features: int, seed: int, split: int) -> dict[str, list]:
    space = {}
    for name, values in grid.items():
        if choice.name == "linear_svm" and name == "pca":
            # PCA cannot keep more components than the training fold has samples or features
            limit = min(n_train, n_features)
            kept = [v for v in values if v is None or v < limit]
            space["pca"] = [_pca(v, seed, split) for v in (kept or [None])]
        else:
            space[f"{step}__{name}" if step else name] = list(values)
    return space


def inner_folds_for(labels, groups, preset: str = "fast") -> int:
    """Inner folds: the preset's, at most the training groups of the rarest class, so every
    inner training fold sees every class; below 2 there is nothing to cross-validate."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    return min(INNER_FOLDS.get(preset, 3), *per_class)


def _inner_cv(folds: int, seed: int, split: int) -> StratifiedGroupKFold:
    return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=random_state(seed, split, 3))


def make_estimator(entry, *, preset: str = "fast", seed: int = 0, split: int = 0,
                   inner_folds: int = 3, layout: Layout | None = None, n_train: int | None = None,
                   n_features: int | None = None):
    """A fresh, seeded estimator for one split: a pipeline, searched by grouped inner CV when
    its grid has more than one point and ``inner_folds >= 2``.

    Without a search, each grid parameter is fixed at its grid's middle value. ``n_train``
    and ``n_features`` (of an inner training fold) bound the PCA components searched.
    """
    choice = parse_classifier(entry)
    base, step = _base(choice, preset, seed, split, layout)
    grid = _grid(choice, preset)
    if n_features is None:
        n_features = layout.n_features if layout is not None else 10**9
    space = _search_space(choice, grid, step, n_train or 10**9, n_features, seed, split)
    if inner_folds < 2 or all(len(v) == 1 for v in space.values()):
        # nothing to choose between: fix each parameter at one value of its grid
        fixed = {k: v[len(v) // 2] for k, v in space.items()}
        return base.set_params(**fixed) if fixed else base
    return GridSearchCV(
        base,
        param_grid=space,
        cv=_inner_cv(inner_folds, seed, split),
        scoring="accuracy",
        refit=True,
        n_jobs=1,
        error_score="raise",
    )


@dataclass
class Fitted:
    """One fit: test predictions, the chosen grid values (empty without a search), the model."""

    predictions: np.ndarray
    best_params: dict
    estimator: Any


def _plain(params: Mapping[str, Any]) -> dict:
    """Chosen parameters as plain values (a PCA step as its component count)."""
    out = {}
    for k, v in params.items():
        if k == "pca":
            out[k] = None if v == "passthrough" else v.n_components
        else:
            out[k.split("__", 1)[-1]] = v
    return out


def fit_predict(X, labels, train, test, classifier="linear_svm", *, groups=None,
                preset: str = "fast", seed: int = 0, split: int = 0,
                layout: Layout | None = None) -> Fitted:
    """Fit one classifier on ``X[train]`` and predict ``X[test]``.

    The reusable unit of identification: any feature matrix (observable trajectories, loss
    curves, a re-recorded rig) with any classifier. ``groups`` (default: one per sample) keep
    samples of one group on one side of every inner fold. Seeded by ``seed`` and ``split``.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    train, test = np.asarray(train, dtype=int), np.asarray(test, dtype=int)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if len(np.unique(labels[train])) < 2:
        raise SimlabError("a training split needs at least 2 classes")
    folds = inner_folds_for(labels[train], groups[train], preset)
    n_inner = len(train)  # the smallest inner training fold bounds PCA's components
    if folds >= 2:
        n_inner = min(len(a) for a, _ in _inner_cv(folds, seed, split).split(
            X[train], labels[train], groups[train]))
    est = make_estimator(classifier, preset=preset, seed=seed, split=split, inner_folds=folds,
                         layout=layout, n_train=n_inner, n_features=X.shape[1])
    with warnings.catch_warnings():
        # a large C may stop short of convergence on separable data; inner CV scores it anyway
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(est, GridSearchCV):
            est.fit(X[train], labels[train], groups=groups[train])
            best = _plain(est.best_params_)
        else:
            est.fit(X[train], labels[train])
            best = {}
        pred = est.predict(X[test]) if len(test) else np.array([], dtype=labels.dtype)
    return Fitted(predictions=np.asarray(pred), best_params=best, estimator=est)


# --------------------------------------------------------------------------- Conv1D


class Conv1DClassifier(ClassifierMixin, BaseEstimator):
    """The reference's Conv1D net over the session axis, in Haiku/optax.

    Input rows are laid out as :class:`Layout` says: ``channels`` observables x ``sessions``
    (observable-major), then any extra columns (the depth group one-hot), which join the conv
    features before the linear softmax readout. One conv layer (``filters`` x
    ``kernel_size``, ``stride``, ReLU), optional max/avg pooling (window 2), a linear readout;
    full-batch Adam for ``epochs`` steps with ``l2`` weight decay on the loss. Inputs are
    z-scored with training statistics inside ``fit``.
    """

    def __init__(self, sessions: int = 21, channels: int = 1, kernel_size: int = 6,
                 stride: int = 2, filters: int = 20, pooling: str = "none",
                 learning_rate: float = 1e-3, l2: float = 1e-4, epochs: int = 400,
                 random_state: int = 0):
        self.sessions = sessions
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.filters = filters
        self.pooling = pooling
        self.learning_rate = learning_rate
        self.l2 = l2
        self.epochs = epochs
        self.random_state = random_state

    def _split(self, X):
        X = np.asarray(X, dtype=np.float32)
        n_traj = self.sessions * self.channels
        if X.ndim != 2 or X.shape[1] < n_traj:
            raise ValueError(
                f"Conv1DClassifier expects rows of {self.channels} x {self.sessions} trajectory "
                f"values (+ extra columns); got shape {X.shape}"
            )
        seq = X[:, :n_traj].reshape(len(X), self.channels, self.sessions).transpose(0, 2, 1)
        return seq, X[:, n_traj:]

    def _config(self, n_extra: int) -> tuple:
        if self.pooling not in ("none", "max", "avg"):
            raise ValueError(f"pooling must be none, max or avg; got {self.pooling!r}")
        return (int(self.sessions), int(self.channels), int(n_extra), len(self.classes_),
                int(min(self.kernel_size, self.sessions)), int(self.stride), int(self.filters),
                str(self.pooling), float(self.learning_rate), float(self.l2), int(self.epochs))

    def fit(self, X, y):
        import jax

        y = np.asarray(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        seq, extra = self._split((X - self.mean_) / self.scale_)
        net, train = _conv_program(self._config(extra.shape[1]))
        # rows padded to a multiple of 64 with zero weight: splits of slightly different sizes
        # reuse one compiled program instead of compiling their own
        n = len(seq)
        pad = -n % 64
        mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        seq = np.concatenate([seq, np.zeros((pad, *seq.shape[1:]), np.float32)])
        extra = np.concatenate([extra, np.zeros((pad, extra.shape[1]), np.float32)])
        labels = np.concatenate([y_idx, np.zeros(pad, y_idx.dtype)]).astype(np.int32)
        params = net.init(jax.random.PRNGKey(self.random_state % (2**31)), seq[:1], extra[:1])
        self.params_ = jax.device_get(train(params, seq, extra, labels, mask))
        return self

    def decision_function(self, X):
        X = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        seq, extra = self._split(X)
        net, _ = _conv_program(self._config(extra.shape[1]))
        return np.asarray(net.apply(self.params_, seq, extra))

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


@functools.lru_cache(maxsize=64)
def _conv_program(config: tuple):
    """The Haiku net and a jitted full-batch Adam trainer for one configuration, built once
    per process so that fits of one configuration share their compilation."""
    import haiku as hk
    import jax
    import jax.numpy as jnp
    import optax

    (_, _, _, n_classes, kernel, stride, filters, pooling, lr, l2, epochs) = config

    def forward(seq, extra):
        h = jax.nn.relu(hk.Conv1D(filters, kernel, stride=stride, padding="VALID")(seq))
        if pooling != "none" and h.shape[1] >= 2:
            pool = hk.max_pool if pooling == "max" else hk.avg_pool
            h = pool(h, window_shape=(1, 2, 1), strides=(1, 2, 1), padding="VALID")
        h = jnp.concatenate([h.reshape(h.shape[0], -1), extra], axis=1)
        return hk.Linear(n_classes)(h)

    net = hk.without_apply_rng(hk.transform(forward))
    opt = optax.adam(lr)

    @jax.jit
    def train(params, seq, extra, labels, mask):
        def loss(p):
            ce = optax.softmax_cross_entropy_with_integer_labels(net.apply(p, seq, extra), labels)
            ce = jnp.sum(ce * mask) / jnp.sum(mask)
            return ce + l2 * sum(jnp.sum(w**2) for w in jax.tree_util.tree_leaves(p))

        def step(carry, _):
            p, s = carry
            updates, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=epochs)
        return params

    return net, train


@dataclass(frozen=True)
class ClassifierEntry:
    """A registered classifier: ``estimator``, the class whose parameters a protocol entry may
    set, and ``extra_params``, settings of its pipeline that are not the estimator's."""

    estimator: type
    extra_params: tuple[str, ...] = ()


CLASSIFIERS.register("linear_svm", ClassifierEntry(LinearSVC, extra_params=("pca",)))
CLASSIFIERS.register("random_forest", ClassifierEntry(RandomForestClassifier))
CLASSIFIERS.register("conv1d", ClassifierEntry(Conv1DClassifier))
