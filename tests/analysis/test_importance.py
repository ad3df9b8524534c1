"""Feature importance: block permutation mechanics, aggregation, and signal vs noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from simlab.analysis.importance import _parse_observable, _RowMixer, feature_importance
from simlab.specs.analyses import IdentifySpec
from simlab.errors import SimlabError
from tests.analysis.test_identify import make_recording


@pytest.fixture(scope="module")
def importance():
    ds = make_recording(measures=(("weight", "signal", 2), ("activation", "noise", 2)),
                        n_per_rule=6, n_sessions=8, nan_observable=None)
    return feature_importance(ds, IdentifySpec(splits=2, seed=1), n_jobs=1)


def test_signal_measure_matters_noise_does_not(importance):
    by_measure = importance["importance_by_measure"].mean("split")
    for method in ("impurity", "permutation"):
        m = by_measure.sel(importance_type=method)
        assert float(m.sel(measure="weight")) > 5 * abs(float(m.sel(measure="activation"))), method
    assert float(by_measure.sel(importance_type="permutation", measure="weight")) > 0.2


def test_aggregates_are_sums_of_columns(importance):
    imp = importance["importance"]
    np.testing.assert_allclose(imp.sel(importance_type="impurity").sum("feature"), 1.0)  # forest: sums to 1
    obs = importance["feature_observable"].values
    by_obs = importance["importance_by_observable"]
    for name in np.unique(obs):
        by_hand = imp.values[:, :, obs == name].sum(axis=2)
        np.testing.assert_allclose(by_obs.sel(observable=name).values, by_hand)
    by_stat = importance["importance_by_statistic"]
    np.testing.assert_allclose(by_stat.sum("statistic"), imp.sum("feature"))
    assert set(importance["measure"].values) == {"weight", "activation", "depth_group"}
    assert importance.attrs["classifier"] == "random_forest"


def test_row_mixer_swaps_whole_blocks():
    """Permuting the index column of a block gives each row another row's whole block."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 6))
    y = np.arange(10).astype(str)
    knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)  # predicts the row it is closest to
    blocks = [np.arange(0, 3), np.arange(3, 6)]
    mixer = _RowMixer(knn, X, blocks, np.unique(y))
    index = np.tile(np.arange(10)[:, None], (1, 2))
    np.testing.assert_array_equal(mixer.predict(index), knn.predict(X))
    perm = rng.permutation(10)
    index[:, 1] = perm
    by_hand = np.hstack([X[:, :3], X[perm, 3:]])
    np.testing.assert_array_equal(mixer.predict(index), knn.predict(by_hand))


def test_observable_names_and_refusals():
    assert _parse_observable("weight_abs_thirdquartile") == {
        "measure": "weight", "function": "abs", "statistic": "thirdquartile"}
    assert _parse_observable("activity_change_sq") == {
        "measure": "activity_change", "function": "sq", "statistic": "id"}
    ds = make_recording(n_per_rule=4, n_sessions=5, nan_observable=None)
    with pytest.raises(SimlabError, match="feature set 'sound'"):
        feature_importance(ds, IdentifySpec(splits=1), feature_set="sound")
    with pytest.raises(SimlabError, match="methods"):
        feature_importance(ds, IdentifySpec(splits=1), methods=("shapley",))
