"""Classifier registry, presets, grouped inner CV and the Conv1D estimator."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from simlab.analysis.classifiers import (
    Conv1DClassifier,
    Layout,
    classifier_label,
    fit_predict,
    make_estimator,
    parse_classifier,
    random_state,
)
from simlab.specs.analyses import IdentifySpec
from simlab.errors import SimlabError
from simlab.protocol import ProtocolError, parse_protocol


def _blobs(n_per_class=20, n_features=6, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(n_classes, n_features))
    X = np.concatenate([c + rng.normal(size=(n_per_class, n_features)) for c in centers])
    # features on very different scales, so z-scoring matters to distance-based classifiers
    X *= np.logspace(0, 3, n_features)
    y = np.repeat(np.array(["a", "b", "c"][:n_classes]), n_per_class)
    return X, y


# ----------------------------------------------------------------------------- names


def test_names_aliases_and_import_paths():
    assert parse_classifier("linear_svm").name == "linear_svm"
    assert parse_classifier("knn").name == "knn"
    entry = {"name": "sklearn.linear_model.LogisticRegression", "params": {"C": 1.0}}
    assert parse_classifier(entry).params == {"C": 1.0}
    assert classifier_label(entry) == "sklearn.linear_model.LogisticRegression(C=1.0)"
    assert classifier_label({"name": "knn", "params": {"n_neighbors": 3}, "label": "knn3"}) == "knn3"


@pytest.mark.parametrize(
    "entry, message",
    [
        ("svm_of_my_dreams", "unknown classifier 'svm_of_my_dreams'"),
        ("sklearn.linear_model.Nope", "has no 'Nope'"),
        ("no_such_package.Thing", "cannot import module 'no_such_package'"),
        ({"name": "knn", "params": {"k": 3}}, "params k not accepted"),
        ({"name": "random_forest", "grid": {"n_estimators": 5}}, "non-empty lists"),
        ({"name": "knn", "extra": 1}, "unknown key"),
        ({"params": {}}, "needs a 'name'"),
    ],
)
def test_bad_classifiers_refused_with_a_reason(entry, message):
    with pytest.raises(SimlabError, match=message):
        parse_classifier(entry)


def test_protocol_names_the_field_of_a_bad_classifier():
    text = textwrap.dedent(
        """\
        name: tiny
        cohort: {architecture: mlp, task: mnist1d, learning_rule: sgdm, batch_size: 32}
        analyses:
          identify:
            classifiers: [linear_svm, {name: knn, params: {k: 3}}]
            preset: fastest
        """
    )
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text)
    text = str(info.value)
    assert "analyses.identify.classifiers" in text and "params k not accepted" in text
    assert "analyses.identify.preset" in text
    spec = IdentifySpec(classifiers=["conv1d", {"name": "sklearn.ensemble.ExtraTreesClassifier",
                                                "params": {"n_estimators": 10}}])
    assert spec.preset == "fast" and spec.features == "measures"


# ----------------------------------------------------------------------------- fitting


def test_fixed_params_match_a_hand_built_pipeline():
    X, y = _blobs()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(y))
    train, test = np.sort(order[:40]), np.sort(order[40:])
    fit = fit_predict(X, y, train, test, {"name": "linear_svm", "params": {"C": 0.05}}, seed=3, split=2)
    assert fit.best_params == {}  # nothing left to search
    ref = Pipeline([("s", StandardScaler()), ("svm", LinearSVC(C=0.05, dual=False, max_iter=20_000,
                                                                random_state=random_state(3, 2, 2)))])
    ref.fit(X[train], y[train])
    np.testing.assert_array_equal(fit.predictions, ref.predict(X[test]))


def test_features_z_scored_with_training_statistics():
    X, y = _blobs(seed=2)
    train, test = np.arange(0, 60, 2), np.arange(1, 60, 2)
    fit = fit_predict(X, y, train, test, {"name": "knn", "params": {"n_neighbors": 3}})
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    knn = KNeighborsClassifier(n_neighbors=3).fit((X[train] - mean) / std, y[train])
    np.testing.assert_array_equal(fit.predictions, knn.predict((X[test] - mean) / std))
    # test rows do not inform the scaling: changing them changes only their own predictions
    X2 = X.copy()
    X2[test[1:]] *= 100.0
    again = fit_predict(X2, y, train, test, {"name": "knn", "params": {"n_neighbors": 3}})
    assert again.predictions[0] == fit.predictions[0]


def test_inner_cv_is_grouped_and_chooses_from_the_grid():
    X, y = _blobs(n_per_class=24)
    groups = np.repeat(np.arange(len(y) // 3), 3)  # three samples per "subject"
    train = np.arange(len(y))
    est = make_estimator("linear_svm", inner_folds=3)
    assert isinstance(est, GridSearchCV)
    for inner_train, inner_test in est.cv.split(X, y, groups):
        assert set(groups[inner_train]).isdisjoint(groups[inner_test])
    fit = fit_predict(X, y, train[:60], train[60:], "linear_svm", groups=groups)
    assert fit.best_params["C"] in (0.001, 0.01, 0.1)


def test_reference_preset_grids():
    forest = make_estimator("random_forest", preset="reference", inner_folds=5)
    assert len(forest.param_grid["clf__n_estimators"]) * len(forest.param_grid["clf__max_features"]) == 15
    assert forest.cv.n_splits == 5
    svm = make_estimator("linear_svm", preset="reference", inner_folds=5, n_train=120,
                         layout=Layout(21, 10, 3))
    components = [p if p == "passthrough" else p.n_components for p in svm.param_grid["pca"]]
    assert components == ["passthrough", 10, 50, 100]  # PCA cannot keep >= 120 of 120 samples
    fixed = make_estimator({"name": "random_forest", "params": {"n_estimators": 7}}, preset="fast")
    assert fixed.named_steps["clf"].n_estimators == 7
    # an explicit grid for any sklearn classifier
    knn = make_estimator({"name": "knn", "grid": {"n_neighbors": [1, 5]}}, inner_folds=2)
    assert knn.param_grid == {"clf__n_neighbors": [1, 5]}


# ----------------------------------------------------------------------------- Conv1D


def _sequences(n=48, sessions=8, channels=2, seed=0):
    """Class 1 rises over sessions, class 0 falls, in channel 0; channel 1 is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.linspace(-1, 1, sessions)
    seq = rng.normal(scale=0.3, size=(n, channels, sessions))
    seq[:, 0] += np.where(y[:, None] == 1, t, -t)
    return seq.reshape(n, -1), y.astype(str)


def test_conv1d_learns_trajectory_shape_and_is_an_sklearn_estimator():
    X, y = _sequences()
    net = Conv1DClassifier(sessions=8, channels=2, kernel_size=3, stride=1, filters=4,
                           epochs=150, learning_rate=1e-2, random_state=0)
    assert clone(net).get_params() == net.get_params()
    net.fit(X[:32], y[:32])
    assert np.mean(net.predict(X[32:]) == y[32:]) >= 0.9
    again = Conv1DClassifier(**net.get_params()).fit(X[:32], y[:32])
    np.testing.assert_array_equal(again.decision_function(X[32:]), net.decision_function(X[32:]))


def test_conv1d_uses_the_depth_columns():
    """Labels carried only by the extra (depth one-hot) columns are learnt through them: the
    trajectories are constant, so nothing else can tell the classes apart."""
    n, sessions = 48, 6
    depth = np.arange(n) % 2
    X = np.hstack([np.zeros((n, sessions)), np.eye(2)[depth]])
    y = np.array(["early", "deep"])[depth]
    fit = fit_predict(X, y, np.arange(32), np.arange(32, n),
                      {"name": "conv1d", "params": {"epochs": 150, "learning_rate": 1e-2, "kernel_size": 2}},
                      layout=Layout(sessions, 1, 2))
    assert np.mean(fit.predictions == y[32:]) == 1.0


def test_pca_components_bounded_by_the_smallest_inner_fold():
    X, y = _blobs(n_per_class=10)
    groups = np.arange(len(y))
    entry = {"name": "linear_svm", "grid": {"pca": [None, 4, 25, 1000], "C": [0.01]}}
    fit = fit_predict(X, y, np.arange(0, 30, 2), np.arange(1, 30, 2), entry, groups=groups)
    # 15 training samples, 3 inner folds: 10 per inner training fold, so 25 and 1000 are out
    assert fit.best_params["pca"] in (None, 4)
    assert [p if p == "passthrough" else p.n_components
            for p in fit.estimator.param_grid["pca"]] == ["passthrough", 4]
