"""Feature transforms, population grouping, subject bootstrap intervals, prediction shares and
binned held-out factors, on hand-made trajectories and small synthetic recordings."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from pydantic import ValidationError

from simlab.analysis.classifiers import Layout
from simlab.analysis.generalization import binned_levels, leave_one_level_out
from simlab.analysis.identify import (
    FeatureSet,
    Sites,
    _feature_sets,
    identify,
    results_dataset,
    select_sites,
    site_groups,
    subject_bootstrap,
)
from simlab.analysis.transforms import apply_transform, transformed
from simlab.errors import SimlabError
from simlab.specs.analyses import IdentifySpec

from test_identify import make_recording


def _block(*trajectories):
    """(site, session, observable) from one trajectory per observable of a single site."""
    return np.array(trajectories, dtype=np.float64).T[None]


# ----------------------------------------------------------------------------- transforms


def test_each_transform_on_a_hand_made_trajectory():
    block = _block([1.0, 3.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0])
    np.testing.assert_array_equal(apply_transform(block, "raw")[0, :, 0], [1, 3, 2, 2])
    np.testing.assert_array_equal(apply_transform(block, "diff")[0, :, 0], [2, -1, 0])
    # total variation |2| + |-1| + |0| = 3; a constant trajectory has none and gives 0, not NaN
    np.testing.assert_allclose(apply_transform(block, "diff_scaled")[0, :, 0], [2 / 3, -1 / 3, 0])
    np.testing.assert_array_equal(apply_transform(block, "diff_scaled")[0, :, 1], [0, 0, 0])
    # average ranks of ties
    np.testing.assert_array_equal(apply_transform(block, "ranks")[0, :, 0], [1, 4, 2.5, 2.5])
    np.testing.assert_array_equal(apply_transform(block, "ranks")[0, :, 1], [2.5, 2.5, 2.5, 2.5])


def test_log_ratio_is_the_log_of_magnitude_relative_to_the_first_session():
    block = _block([2.0, 4.0, 1.0, -8.0], [0.0, 0.0, 0.0, 0.0])
    got = apply_transform(block, "log_ratio")[0]
    # eps = 1e-6 * max |x| = 8e-6: negligible next to these magnitudes; the sign is dropped
    np.testing.assert_allclose(got[:, 0], [np.log(2), np.log(0.5), np.log(4)], rtol=1e-5)
    np.testing.assert_array_equal(got[:, 1], [0, 0, 0])  # an all-zero trajectory: no change


def test_a_transform_looks_at_one_site_only():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(5, 6, 3))
    for name in ("raw", "diff", "diff_scaled", "log_ratio", "ranks"):
        whole = apply_transform(block, name)
        alone = apply_transform(block[2:3], name)
        np.testing.assert_array_equal(whole[2:3], alone)
        # and one observable only
        np.testing.assert_array_equal(whole[:, :, 1], apply_transform(block[:, :, 1:2], name)[:, :, 0])


def test_a_list_concatenates_channels_transform_major_and_pads_shorter_ones_at_the_front():
    block = _block([1.0, 3.0, 2.0], [0.0, 1.0, 1.0])
    channels, of_channel, length = transformed(block, ["raw", "diff"])
    assert of_channel == ["raw", "raw", "diff", "diff"] and length == 3
    np.testing.assert_array_equal(channels[0], [[1, 3, 2], [0, 1, 1], [0, 2, -1], [0, 1, 0]])
    alone, _, length = transformed(block, "diff")  # not padded on its own
    assert length == 2
    np.testing.assert_array_equal(alone[0], [[2, -1], [1, 0]])


def test_differences_need_two_sessions():
    with pytest.raises(SimlabError, match="at least 2 sessions"):
        apply_transform(np.ones((2, 1, 3)), "diff")


def test_transform_setting_validates_and_normalizes():
    assert IdentifySpec().transform == "log_ratio"
    assert IdentifySpec(transform=["diff"]).transform == "diff"
    assert IdentifySpec(transform=["raw", "diff"]).transforms == ("raw", "diff")
    for bad in (["raw", "raw"], [], "logratio"):
        with pytest.raises(ValidationError):
            IdentifySpec(transform=bad)


# ----------------------------------------------------------------------------- features


S = 8  # sessions of the synthetic recordings (make_recording puts a NaN at session 7)


@pytest.fixture(scope="module")
def recording():
    return make_recording(n_per_rule=6, n_sessions=S)


def test_feature_columns_say_their_transform_and_session(recording):
    sites = select_sites(recording, "learning_rule")
    raw, _, _ = _feature_sets(sites, "measures")
    both, _, _ = _feature_sets(sites, "measures", ["raw", "diff"])
    weight, plain = both["weight"], raw["weight"]
    n_obs, n_depth = len(weight.kept), weight.layout.extra
    assert weight.layout == Layout(S, 2 * n_obs, n_depth)
    # the raw part is the untransformed matrix, column for column; then the padded differences
    np.testing.assert_array_equal(weight.X[:, : S * n_obs], plain.X[:, : S * n_obs])
    first = sites.observation[:, :, list(sites.observables).index(weight.kept[0])]
    np.testing.assert_array_equal(weight.X[:, S * n_obs: S * n_obs + S],
                                  np.hstack([np.zeros((len(first), 1)), np.diff(first, axis=1)]))
    assert weight.column_channel[0] == weight.kept[0]
    assert weight.column_channel[S * n_obs] == f"diff({weight.kept[0]})"
    assert list(weight.column_transform[-n_depth:]) == [""] * n_depth
    diff, _, _ = _feature_sets(sites, "measures", "diff")
    assert list(diff["weight"].column_session[:4]) == [1, 2, 3, 4]  # the session a difference arrives at
    assert diff["weight"].X.shape[1] == (S - 1) * n_obs + n_depth


# ----------------------------------------------------------------------------- population grouping


def _two_populations_per_rule(n_replicates=3, n_sessions=S):
    """Per rule, two architectures x one batch size, ``n_replicates`` seeds each."""
    ds = make_recording(n_per_rule=2 * n_replicates, n_sessions=n_sessions)
    n = ds.sizes["subject"]
    arch = np.tile(np.repeat(["mlp", "conv1d"], n_replicates), n // (2 * n_replicates))
    return ds.assign_coords(architecture=("subject", arch))


def test_population_grouping_never_splits_a_population():
    ds = _two_populations_per_rule()
    sites = select_sites(ds, "learning_rule")
    groups = site_groups(sites, "population")
    pop_of_subject = dict(zip(sites.subject_index, sites.population))
    assert len(set(sites.population)) == 8 and "mlp-mnist1d-adam_backprop-b64" in set(sites.population)
    results = identify(ds, IdentifySpec(group_by="population", splits=3, classifiers=["linear_svm"],
                                        bootstrap=50), n_jobs=1)
    assert results.attrs["group_by"] == "population"
    subject_of = dict(zip(results["site"].values, results["site_subject"].values))
    for s in results["split"].values:
        tested = {subject_of[name] for name in str(results["test_sites"].sel(split=s).values).split(",")}
        test_pops = {pop_of_subject[i] for i in tested}
        train_pops = {pop_of_subject[i] for i in set(sites.subject_index) - tested}
        assert not test_pops & train_pops
        # every subject of a tested population is tested
        assert tested == {i for i, p in pop_of_subject.items() if p in test_pops}
    assert len(np.unique(groups)) == 8


def test_population_grouping_refuses_a_target_that_varies_inside_a_population():
    ds = _two_populations_per_rule()
    with pytest.raises(SimlabError, match="population .* several target levels"):
        site_groups(select_sites(ds, "seed"), "population")
    bare = ds.drop_vars(["architecture", "task", "batch_size", "learning_rule"]).assign_coords(
        rule=("subject", ds["learning_rule"].values))
    with pytest.raises(SimlabError, match="none of them"):
        site_groups(select_sites(bare, "rule"), "population")


# ----------------------------------------------------------------------------- bootstrap and shares


def test_subject_bootstrap_on_a_hand_case():
    rng = np.random.default_rng(0)
    # subjects of 3/4 and 1/4 correct: resamples AA, AB, BB score 0.75, 0.5, 0.25 (p 1/4, 1/2, 1/4)
    np.testing.assert_allclose(subject_bootstrap([3, 1], [4, 4], 1000, rng), [0.25, 0.75])
    # 2 of 2 and 0 of 6: AA 1.0, AB 2/8, BB 0; a pooled-site interval would centre on 0.25
    np.testing.assert_allclose(subject_bootstrap([2, 0], [2, 6], 1000, rng), [0.0, 1.0])
    # a subject never tested is left out; leading axes are kept
    got = subject_bootstrap([[3, 1, 0], [4, 4, 0]], [4, 4, 0], 1000, rng)
    np.testing.assert_allclose(got, [[0.25, 0.75], [1.0, 1.0]])
    assert np.isnan(subject_bootstrap([1], [2], 0, rng)).all()


def test_results_carry_bootstrap_intervals_and_prediction_shares_of_a_hand_case():
    # two subjects of class a and one of class b, four sites each; one split tests all three
    labels = np.repeat(["a", "a", "b"], 4)
    sites = Sites(
        observation=np.zeros((12, 2, 1)), labels=labels, classes=("a", "b"),
        subject_index=np.repeat([0, 1, 2], 4), names=np.array([f"s{i // 4}:{i % 4}" for i in range(12)]),
        depth=np.full(12, ""), observables=np.array(["o"]), measures=np.array(["m"]), excluded_diverged=0,
        health=xr.Dataset(), population=np.repeat(["p0", "p0", "p1"], 4),
    )
    # subject 0: 4/4 right; subject 1: 2/4 (two called b); subject 2: 0/4 (all called a)
    pred = np.array(["a"] * 4 + ["a", "a", "b", "b"] + ["a"] * 4)
    fs = FeatureSet(np.zeros((12, 1)), Layout(2, 1), ["o"], [], "measure")
    splits = [(np.array([], dtype=int), np.arange(12))]
    res = results_dataset(sites, splits, {(0, 0, 0): (pred, {})}, ["clf"], {"m": fs}, {"m": []}, [],
                          IdentifySpec(bootstrap=2000), sites.subject_index, explicit=True)
    assert float(res["accuracy"].squeeze()) == 0.5
    # resampling 3 subjects of accuracy 1, 1/2, 0 (4 sites each): the 2.5% and 97.5% points of
    # the mean of three draws from {1, .5, 0} are 0 (p 1/27 + ...) and 1 (p 1/27 each way)
    np.testing.assert_allclose(res["accuracy_boot_ci"].squeeze().values, [0.0, 1.0])
    np.testing.assert_allclose(res["accuracy_mean_boot_ci"].squeeze().values, [0.0, 1.0])
    # 10 of 12 predictions are a, 2 are b
    np.testing.assert_allclose(res["prediction_share"].squeeze().values, [10 / 12, 2 / 12])
    np.testing.assert_allclose(res["prediction_share_pooled"].squeeze().values, [10 / 12, 2 / 12])


def test_identify_table_shows_bootstrap_and_shares(recording):
    from simlab.analysis.identify import format_table

    res = identify(recording, IdentifySpec(splits=2, classifiers=["linear_svm"], bootstrap=200,
                                           transform=["raw", "diff"]), n_jobs=1)
    boot = res["accuracy_mean_boot_ci"].values
    assert np.all(boot[..., 0] <= boot[..., 1]) and res.attrs["transform"] == "raw,diff"
    np.testing.assert_allclose(res["prediction_share_pooled"].sum("class"), 1.0)
    table = format_table(res)
    assert "subject bootstrap 95%" in table and "predicted shares" in table and "raw + diff" in table


# ----------------------------------------------------------------------------- binned factors


def test_learning_rates_binned_into_terciles_of_their_log():
    rates = np.repeat([0.001, 0.003, 0.01, 0.03], 3)
    level_of, levels = binned_levels(rates, np.ones(12, bool), 3)
    # edges: the 1/3 and 2/3 quantiles of the 12 log rates, log 0.003 and between log 0.01 and
    # log 0.03; a value equal to an edge falls in the lower bin
    assert levels == ["0.001-0.003", "0.01", "0.03"]
    assert list(level_of) == ["0.001-0.003"] * 6 + ["0.01"] * 3 + ["0.03"] * 3
    with pytest.raises(SimlabError, match="NaN"):
        binned_levels(np.array([0.1, np.nan, 0.2, 0.3]), np.ones(4, bool), 3)


def test_rates_binned_per_class_put_every_class_in_every_band():
    # class a trains at 1e-3..6e-3, class b at 0.1..0.6: cohort terciles would split them apart
    rates = np.concatenate([np.arange(1, 7) * 1e-3, np.arange(1, 7) * 1e-1])
    classes = np.repeat(["a", "b"], 6)
    level_of, levels = binned_levels(rates, np.ones(12, bool), 3)
    assert set(level_of[classes == "a"]).isdisjoint(level_of[classes == "b"][-2:])
    level_of, levels = binned_levels(rates, np.ones(12, bool), 3, classes)
    # each class's own log terciles: edges between its 2nd and 3rd, and 4th and 5th rates
    assert levels == ["band 1 of 3", "band 2 of 3", "band 3 of 3"]
    assert list(level_of) == [f"band {b} of 3" for b in (1, 1, 2, 2, 3, 3)] * 2


def test_leave_one_rate_band_out():
    ds = make_recording(n_per_rule=6, n_sessions=S)
    rates = np.geomspace(1e-3, 1e-1, ds.sizes["subject"])
    ds = ds.assign_coords(learning_rate=("subject", rates))
    splits, names, skipped = leave_one_level_out(ds, "learning_rate", IdentifySpec())
    assert len(names) == 3 and not skipped
    for train, test in splits:  # each fold holds out one contiguous band of rates
        low, high = rates[test].min(), rates[test].max()
        assert not ((rates[train] >= low) & (rates[train] <= high)).any()
    covered = np.concatenate([test for _, test in splits])
    assert len(covered) == len(set(covered))


# ----------------------------------------------------------------------------- CLI


def test_cli_flags_parse():
    from simlab.cli import options
    from simlab.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["identify", "run", "--transform", "raw", "diff", "--group-by", "population",
                              "--bootstrap", "100"])
    settings = options.given(args, options.IDENTIFY_SETTINGS)
    assert settings["transform"] == ["raw", "diff"] and settings["group_by"] == "population"
    assert IdentifySpec(**settings).bootstrap == 100
    args = parser.parse_args(["generalize", "run", "--factor", "learning_rate", "--bins", "4",
                              "--transform", "log_ratio", "--bin-per-class"])
    assert args.bins == 4 and args.transform == ["log_ratio"] and args.factors == ["learning_rate"]
    assert args.bin_per_class is True
    with pytest.raises(SystemExit):
        parser.parse_args(["generalize", "run", "--transform", "logratio"])


def test_importance_names_each_channel_by_its_transform(recording):
    from simlab.analysis.importance import feature_importance, format_importance

    spec = IdentifySpec(splits=2, transform=["raw", "diff"], bootstrap=0)
    forest = {"name": "random_forest", "params": {"n_estimators": 20}}
    result = feature_importance(recording, spec, forest, "weight", methods=("impurity",), n_jobs=1)
    by_transform = result["importance_by_transform"].sel(importance_type="impurity").mean("split")
    assert set(by_transform["transform"].values) == {"raw", "diff", "depth_group"}
    assert float(by_transform.sum()) == pytest.approx(1.0)  # impurity importances sum to 1
    channels = set(result["importance_by_channel"]["channel"].values)
    assert "weight_raw_mean" in channels and "diff(weight_raw_mean)" in channels
    assert "diff(weight_raw_mean)@1" in set(result["feature_name"].values)
    assert "by transform" in format_importance(result)
