"""Tests for learning-rule identification on synthetic, contract-shaped recordings."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from simlab.analysis.identify import (
    balanced_splits,
    format_table,
    identify,
    select_sites,
    write_results,
)
from simlab.specs.analyses import IdentifySpec
from simlab.errors import SimlabError

RULES = ("sgd_backprop", "adam_backprop", "sgd_feedback_alignment", "sgd_information_alignment")
FUNCTIONS = ("raw", "abs", "sq")
STATISTICS = ("norm", "mean", "median", "thirdquartile", "var", "skew", "kurtosis")


def _depths(n_layers):
    """Depth groups as thirds by layer index."""
    return [("early", "middle", "deep")[3 * l // n_layers] for l in range(n_layers)]


def make_recording(
    measures=(("weight", "signal", 3), ("activation", "noise", 2)),
    n_per_rule=12,
    n_layers=3,
    n_sessions=21,
    nan_observable="weight_raw_median",
    seed=0,
) -> xr.Dataset:
    """A recording shaped like the data contract, with known structure.

    ``measures``: (measure, "signal" | "noise", n_observables). A signal observable drifts over
    sessions at a rate set by the learning rule; a noise observable is i.i.d. noise. The first
    subject of each rule has one layer fewer (padding); one subject diverged and is all inf;
    ``nan_observable`` (if present) is NaN at one session of one real site.
    """
    rng = np.random.default_rng(seed)
    n_sub = len(RULES) * n_per_rule
    names, meas, funcs, stats, kinds = [], [], [], [], []
    for measure, kind, n in measures:
        combos = [(f, s) for f in FUNCTIONS for s in STATISTICS]
        if measure == "activity_change":
            combos = [(f, "id") for f in FUNCTIONS]
        for f, s in combos[:n]:
            names.append(f"{measure}_{f}" if measure == "activity_change" else f"{measure}_{f}_{s}")
            meas.append(measure)
            funcs.append(f)
            stats.append(s)
            kinds.append(kind)
    fraction = np.linspace(0.0, 1.0, n_sessions)
    rule_idx = np.repeat(np.arange(len(RULES)), n_per_rule)
    obs = rng.normal(size=(n_sub, n_layers, n_sessions, len(names)))
    for o, kind in enumerate(kinds):
        if kind == "signal":
            # each rule its own trajectory shape, so no class sits between two others
            shape = np.sin(np.pi / 2 * (rule_idx[:, None] + 1.0) * fraction[None, :])
            obs[:, :, :, o] = 0.1 * obs[:, :, :, o] + (1.0 + 0.3 * o) * shape[:, None, :] + 1.0
    layer_name = np.array([[f"dense_{l}" for l in range(n_layers)]] * n_sub, dtype=object)
    depth = np.array([_depths(n_layers)] * n_sub, dtype=object)
    for r in range(len(RULES)):  # the first subject of each rule is one layer shallower
        s = r * n_per_rule
        obs[s, -1] = np.nan
        layer_name[s, -1] = ""
        depth[s] = _depths(n_layers - 1) + [""]
    status = np.array(["ok"] * n_sub, dtype=object)
    diverged = len(RULES) * n_per_rule - 2
    status[diverged] = "diverged"
    obs[diverged] = np.inf
    if nan_observable in names:
        obs[3, 1, 7, names.index(nan_observable)] = np.nan
    ds = xr.Dataset(
        {"observation": (("subject", "layer", "session", "observable"), obs.astype(np.float32),
                         {"long_name": "observation", "units": "1"})},
        coords={
            "subject": [f"s{i:03d}" for i in range(n_sub)],
            "layer": np.arange(n_layers),
            "session": np.arange(n_sessions),
            "observable": names,
            "learning_rule": ("subject", np.array(RULES)[rule_idx]),
            "architecture": ("subject", ["mlp"] * n_sub),
            "task": ("subject", ["mnist1d"] * n_sub),
            "batch_size": ("subject", [64] * n_sub),
            "seed": ("subject", np.arange(n_sub)),
            "final_accuracy": ("subject", rng.uniform(0.5, 0.9, n_sub)),
            "status": ("subject", status.astype(str)),
            "layer_name": (("subject", "layer"), layer_name.astype(str)),
            "depth": (("subject", "layer"), depth.astype(str)),
            "step": ("session", np.arange(n_sessions) * 100),
            "fraction": ("session", fraction),
            "measure": ("observable", meas),
            "function": ("observable", funcs),
            "statistic": ("observable", stats),
        },
        attrs={"schema": "simlab.recording/1"},
    )
    return ds


@pytest.fixture(scope="module")
def recording():
    return make_recording()


@pytest.fixture(scope="module")
def results(recording):
    # raw trajectories, so feature counts are sessions x observables (log_ratio: sessions - 1)
    return identify(recording, IdentifySpec(splits=3, seed=1, transform="raw"), n_jobs=1)


# ----------------------------------------------------------------------------- splits


def _toy(n_classes=4, n_groups=12, per_group=3):
    labels = np.repeat(np.arange(n_classes), n_groups * per_group).astype(str)
    groups = np.repeat(np.arange(n_classes * n_groups), per_group)
    return labels, groups


def test_splits_balanced_and_group_disjoint():
    labels, groups = _toy()
    splits = balanced_splits(labels, groups, n_splits=10, test_fraction=0.25, seed=3)
    assert len(splits) == 10
    for train, test in splits:
        assert set(groups[train]).isdisjoint(groups[test])
        assert len(train) + len(test) == len(labels)
        for c in np.unique(labels):
            assert len(set(groups[test][labels[test] == c])) == 3  # round(0.25 * 12)
    assert not all(np.array_equal(splits[0][1], s[1]) for s in splits[1:])


def test_splits_use_smallest_class_and_are_deterministic():
    labels, groups = _toy()
    keep = groups != 0  # class "0" now has 11 groups: round(2.75) = 3 per class still
    labels, groups = labels[keep], groups[keep]
    a = balanced_splits(labels, groups, 5, 0.5, seed=7)
    b = balanced_splits(labels, groups, 5, 0.5, seed=7)
    for (tr_a, te_a), (tr_b, te_b) in zip(a, b):
        np.testing.assert_array_equal(tr_a, tr_b)
        np.testing.assert_array_equal(te_a, te_b)
        for c in np.unique(labels):
            assert len(set(groups[te_a][labels[te_a] == c])) == 6  # round(0.5 * 11), half up
    c = balanced_splits(labels, groups, 5, 0.5, seed=8)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_splits_layer_mode_cut_subjects():
    labels, subjects = _toy()
    samples = np.arange(len(labels))
    splits = balanced_splits(labels, samples, 10, 0.25, seed=0)
    for _, test in splits:
        assert np.bincount(labels[test].astype(int)).tolist() == [9, 9, 9, 9]  # round(0.25 * 36)
    shared = [len(set(subjects[tr]) & set(subjects[te])) for tr, te in splits]
    assert max(shared) > 0  # layers of one network on both sides, as in the reference


def test_splits_refuse_a_class_too_small():
    labels = np.array(["a", "a", "b", "b", "b"])
    with pytest.raises(SimlabError, match="class a"):
        balanced_splits(labels, np.arange(5), 2, 0.75, seed=0)  # round(1.5) = 2 of 2


def test_identify_splits_never_share_a_subject(results):
    for sites in results["test_sites"].values:
        subjects = {s.split(":")[0] for s in str(sites).split(",")}
        assert len(subjects) == 4 * 3  # three test subjects per rule, all their layers
    assert results.attrs["n_test_groups_per_class"] == 3


# ----------------------------------------------------------------------------- sites


def test_sites_exclude_diverged_and_padding(recording):
    sites = select_sites(recording, "learning_rule")
    assert sites.excluded_diverged == 1
    assert len(sites.labels) == 47 * 3 - 4  # one subject diverged, four padded layers
    assert np.isfinite(sites.observation[:, :, 0]).all()
    assert "" not in set(sites.depth)


# ----------------------------------------------------------------------------- identify


def test_signal_identified_noise_at_chance(results):
    acc = results["accuracy_mean"]
    assert list(results["feature_set"].values) == ["weight", "activation", "all"]
    assert float(acc.sel(feature_set="weight").min()) > 0.95
    assert float(acc.sel(feature_set="all").min()) > 0.95
    noise = acc.sel(feature_set="activation")
    assert np.all(np.abs(noise.values - 0.25) < 0.15), noise.values
    assert results.attrs["chance"] == 0.25
    assert results.attrs["classes"] == ",".join(sorted(RULES))


def test_nonfinite_observable_dropped_and_reported(results):
    assert results.attrs["dropped_weight"] == "weight_raw_median"
    assert results.attrs["dropped_all"] == "weight_raw_median"
    assert results.attrs["dropped_activation"] == ""
    assert results["dropped_observables"].sel(feature_set="weight").item() == "weight_raw_median"
    # two kept weight observables x 21 sessions + three depth groups
    assert int(results["n_features"].sel(feature_set="weight")) == 2 * 21 + 3
    assert "weight_raw_median" in format_table(results)


def test_counts_and_confusion(results):
    assert results.attrs["excluded_diverged"] == 1
    assert results.attrs["n_subjects"] == 47
    assert results.attrs["n_samples"] == 47 * 3 - 4
    n_test = sum(len(str(s).split(",")) for s in results["test_sites"].values)
    assert (results["confusion"].sum(("true_class", "predicted_class")) == n_test).all()
    a = results["accuracy"].shape
    assert a == (2, 3, 3)


def test_deterministic_single_measure_layer_mode():
    ds = make_recording(measures=(("weight", "signal", 2),), n_per_rule=4, nan_observable=None)
    spec = IdentifySpec(splits=2, group_by="layer", seed=5)
    a, b = identify(ds, spec, n_jobs=1), identify(ds, spec, n_jobs=2)
    xr.testing.assert_identical(a, b)  # same input, same output, however many workers
    assert list(a["feature_set"].values) == ["weight"]  # no "all" for a single measure
    assert a.attrs["group_by"] == "layer"
    assert float(a["accuracy_mean"].min()) > 0.95


def test_round_trip_and_refuse_overwrite(results, tmp_path):
    path = tmp_path / "identify.nc"
    write_results(results, path)
    with xr.open_dataset(path) as back:
        back.load()
    xr.testing.assert_identical(back, results)
    with pytest.raises(SimlabError, match="already exists"):
        write_results(results, path)
    write_results(results, path, force=True)
    table = format_table(results)
    assert "±" in table and "chance" in table and "learning_rule" in table


def test_missing_target_and_single_class(recording):
    with pytest.raises(SimlabError, match="optimizer"):
        identify(recording, IdentifySpec(target="optimizer"))
    one = recording.assign_coords(task=("subject", ["mnist1d"] * recording.sizes["subject"]))
    with pytest.raises(SimlabError, match="at least 2 classes"):
        identify(one, IdentifySpec(target="task"))


# ----------------------------------------------------------------------------- explicit splits


def test_explicit_subject_splits_named_and_respected(recording):
    n = recording.sizes["subject"]
    halves = [(np.arange(0, n, 2), np.arange(1, n, 2)), (np.arange(1, n, 2), np.arange(0, n, 2))]
    spec = IdentifySpec(classifiers=["linear_svm"], seed=2, transform="raw")
    res = identify(recording, spec, n_jobs=1, subject_splits=halves, split_names=["even", "odd"])
    assert list(res["split_name"].values) == ["even", "odd"]
    assert res.attrs["split_kind"] == "explicit subject splits"
    tested = res["prediction"].sel(classifier="linear_svm", feature_set="weight") != ""
    subjects = res["site_subject"].values
    # split 0 tests exactly the usable sites of odd subjects, split 1 those of even subjects
    np.testing.assert_array_equal(tested.isel(split=0).values, subjects % 2 == 1)
    np.testing.assert_array_equal(tested.isel(split=1).values, subjects % 2 == 0)
    assert (res["n_test"].isel(split=0) == (subjects % 2 == 1).sum()).all()
    assert float(res["accuracy"].sel(feature_set="weight").min()) > 0.95


def test_explicit_splits_refuse_overlap_and_single_class(recording):
    n = recording.sizes["subject"]
    with pytest.raises(SimlabError, match="both the train and test"):
        identify(recording, IdentifySpec(), subject_splits=[([0, 1, 2], [2, 3])])
    rule = recording["learning_rule"].values
    one_rule = np.flatnonzero(rule == rule[0])
    with pytest.raises(SimlabError, match="fewer than 2 classes"):
        identify(recording, IdentifySpec(), subject_splits=[(one_rule, np.arange(n)[rule != rule[0]])])
    with pytest.raises(SimlabError, match="2 split names for 1 splits"):
        identify(recording, IdentifySpec(), subject_splits=[(np.arange(0, n, 2), np.arange(1, n, 2))],
                 split_names=["a", "b"])


# ----------------------------------------------------------------------------- results


def test_predictions_intervals_and_per_class_metrics(results):
    from sklearn.metrics import precision_recall_fscore_support

    pred = results["prediction"]
    labels = results["site_label"].values
    tested = pred != ""
    correct = ((pred == results["site_label"]) & tested).sum("site")
    xr.testing.assert_equal(correct.rename(None), results["correct"].rename(None))
    np.testing.assert_allclose(results["accuracy"], correct / tested.sum("site"))
    # Wilson 95% interval by hand for one split, and for the pooled predictions
    z = 1.959963984540054
    k, n = int(results["correct"][0, 0, 0]), int(results["n_test"][0, 0, 0])
    p = k / n
    centre, half = (p + z**2 / (2 * n)) / (1 + z**2 / n), z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    np.testing.assert_allclose(results["accuracy_ci"][0, 0, 0], [centre - half, centre + half])
    assert "pooled across splits" in results.attrs["confidence_intervals"]
    # per-class metrics from the summed confusion equal sklearn's on the pooled predictions
    for c in results["classifier"].values:
        for f in results["feature_set"].values:
            p_cf = pred.sel(classifier=c, feature_set=f).transpose("site", "split").values
            mask = p_cf != ""
            truth = np.repeat(labels[:, None], p_cf.shape[1], axis=1)[mask]
            prec, rec, f1, sup = precision_recall_fscore_support(
                truth, p_cf[mask], labels=list(results["class"].values), zero_division=np.nan)
            sel = dict(classifier=c, feature_set=f)
            np.testing.assert_allclose(results["precision"].sel(sel), prec)
            np.testing.assert_allclose(results["recall"].sel(sel), rec)
            np.testing.assert_allclose(results["f1"].sel(sel), f1)
            np.testing.assert_array_equal(results["support"].sel(sel), sup)
    assert "[" in format_table(results) and "Wilson" in format_table(results)


def test_observable_feature_sets_and_other_classifiers(recording):
    spec = IdentifySpec(classifiers=[{"name": "logistic_regression", "params": {"C": 0.1}, "label": "logreg"}],
                        features="both", splits=2, transform="raw")
    res = identify(recording, spec, n_jobs=1)
    kinds = dict(zip(res["feature_set"].values, res["feature_kind"].values))
    assert kinds["weight"] == "measure" and kinds["all"] == "all"
    assert kinds["weight_raw_norm"] == "observable" and kinds["activation_raw_norm"] == "observable"
    assert "weight_raw_median" not in kinds  # the observable with a NaN has nothing left
    assert "weight_raw_median" in res.attrs["empty_feature_sets"]
    assert int(res["n_features"].sel(feature_set="weight_raw_norm")) == 21 + 3
    acc = res["accuracy_mean"].sel(classifier="logreg")
    assert float(acc.sel(feature_set="weight_raw_norm")) > 0.9
    assert float(acc.sel(feature_set="activation_raw_norm")) < 0.5


# ----------------------------------------------------------------------------- command line


def test_cli_classifiers_target_features_and_importance(tiny_run, tmp_path, capsys):
    from simlab.cli.main import main

    out = tmp_path / "r.nc"
    argv = ["identify", str(tiny_run / "recordings" / "synapse.nc"), "--classifier",
            "logistic_regression:C=0.5", "--classifier", "knn", "--target", "credit_mechanism",
            "--features", "both", "--importance", "--splits", "2", "--seed", "4", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    with xr.open_dataset(out) as res:
        assert list(res["classifier"].values) == ["logistic_regression(C=0.5)", "knn"]
        assert res.attrs["target"] == "credit_mechanism" and res.attrs["seed"] == 4
        assert "observable" in set(res["feature_kind"].values.astype(str))
    with xr.open_dataset(tmp_path / "r.importance.nc") as imp:
        assert imp.attrs["classifier"] == "logistic_regression(C=0.5)"  # no forest: the first
        assert bool(imp["importance"].sel(importance_type="impurity").isnull().all())
        assert bool(imp["importance"].sel(importance_type="permutation").notnull().all())
    assert "by measure" in printed and "credit_mechanism" in printed
    assert main(["identify", str(tiny_run / "recordings" / "synapse.nc"), "--classifier", "knn:k=3",
                 "--out", str(tmp_path / "bad.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--classifier" in err[0] and "k not accepted" in err[0]


def test_run_directory_of_an_older_protocol_dump_still_resumes(tmp_path):
    """A stored protocol without the identify options added since reads back the same."""
    from simlab.protocol import parse_protocol
    from simlab.pipeline import prepare_run_directory

    protocol = parse_protocol(
        "name: t\ncohort: {architecture: mlp, task: mnist1d, learning_rule: sgdm, batch_size: 32}\n"
    )
    old = "\n".join(
        line for line in protocol.to_yaml().splitlines()
        if not line.strip().startswith(("preset:", "features:", "importance:"))
    ) + "\n"
    assert old != protocol.to_yaml()
    (tmp_path / "protocol.yaml").write_text(old)
    prepare_run_directory(protocol, tmp_path, force=False)  # resumes, no error
    other = parse_protocol(
        "name: t\ncohort: {architecture: mlp, task: mnist1d, learning_rule: adam, batch_size: 32}\n"
    )
    with pytest.raises(SimlabError, match="another protocol"):
        prepare_run_directory(other, tmp_path, force=False)
