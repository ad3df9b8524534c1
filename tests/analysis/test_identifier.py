"""A fitted identifier (simlab fit / simlab predict) on synthetic, contract-shaped recordings:
round trips, refusals that name the difference, the out-of-distribution flag, subject pooling
and calibration on planted cases."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simlab.analysis import identifier as identifier_module
from simlab.analysis.identifier import (
    fit_identifier,
    format_predictions,
    load_identifier,
    pool_subjects,
    predict_recording,
    reliability,
    save_identifier,
)
from simlab.errors import SimlabError
from simlab.specs.analyses import FitSpec

from test_identify import make_recording

SMALL_FOREST = {"name": "random_forest", "params": {"n_estimators": 50}}
RIGS = [
    {"name": "synapse", "measure": "weight", "type": "synapse", "units": "all", "sampling": "chronic",
     "noise_model": "gaussian", "noise": 0.0, "seed": 0, "percentiles": "nearest", "stimuli": None},
    {"name": "electrophysiology", "measure": "activation", "type": "electrophysiology", "units": "all",
     "sampling": "chronic", "noise_model": "gaussian", "noise": 0.0, "seed": 1, "percentiles": "nearest",
     "stimuli": None},
]


def recording(seed=0, n_per_rule=6, rigs=RIGS):
    ds = make_recording(n_per_rule=n_per_rule, n_sessions=8, seed=seed)
    ds.attrs["rig"] = yaml.safe_dump(rigs)
    return ds


@pytest.fixture(scope="module")
def training():
    return recording(seed=0)


@pytest.fixture(scope="module")
def fitted(training):
    # raw: the planted rules differ in levels, and the shifted site below is shifted in level
    return fit_identifier(training, FitSpec(classifier=SMALL_FOREST, transform="raw"))


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    out = tmp_path_factory.mktemp("identifier") / "identifier"
    save_identifier(fitted, out)
    return out


def test_the_manifest_says_what_the_identifier_applies_to(fitted, training):
    m = fitted.manifest
    assert m["classes"] == sorted(set(training["learning_rule"].values))
    assert m["sessions"]["count"] == 8
    np.testing.assert_allclose(m["sessions"]["fraction"], training["fraction"].values)
    assert [r["type"] for r in m["rigs"]] == ["synapse", "electrophysiology"]
    # weight_raw_median is NaN at one site and session: dropped, as identify does
    assert "weight_raw_median" in m["dropped_observables"] and "weight_raw_median" not in m["observables"]
    assert m["cohort"]["levels"]["architecture"] == ["mlp"]
    assert m["cohort"]["subjects"] == 23  # one of 24 diverged
    assert len(m["feature_columns"]) == m["n_features"] == len(fitted.low)


def test_a_saved_identifier_reloads_and_predicts_identically(fitted, saved, training):
    loaded = load_identifier(saved)
    assert loaded.manifest["model_sha256"] and loaded.manifest["classes"] == fitted.classes
    new = recording(seed=3)
    before, after = predict_recording(fitted, new), predict_recording(loaded, new)
    np.testing.assert_array_equal(before["probability"].values, after["probability"].values)
    np.testing.assert_array_equal(before["predicted"].values, after["predicted"].values)
    np.testing.assert_array_equal(before["ood_score"].values, after["ood_score"].values)


def test_a_changed_model_file_is_refused_by_its_hash(saved, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    model = copy / "model.skops"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(SimlabError, match="sha256"):
        load_identifier(copy)


def test_types_simlab_does_not_make_need_trust(saved, monkeypatch):
    monkeypatch.setattr(identifier_module, "TRUSTED_TYPES", frozenset())
    with pytest.raises(SimlabError, match=r"sklearn\.tree\._tree\.Tree.*--trust"):
        load_identifier(saved)
    assert load_identifier(saved, trust=True).classes


def test_a_recording_without_an_observable_is_refused_naming_it(fitted):
    new = recording(seed=1)
    new = new.sel(observable=[o for o in new["observable"].values if o != "weight_raw_mean"])
    with pytest.raises(SimlabError, match=r"observables differ.*weight_raw_mean.*simlab record RUN --rig synapse"):
        predict_recording(fitted, new)


def test_other_sessions_are_refused_saying_how_many(fitted):
    with pytest.raises(SimlabError, match=r"sessions differ: the recording has 7 .* the identifier 8 .*--sessions 8"):
        predict_recording(fitted, recording(seed=1).isel(session=slice(0, 7)))
    later = recording(seed=1)
    later = later.assign_coords(fraction=("session", later["fraction"].values ** 2))
    with pytest.raises(SimlabError, match="sessions differ"):
        predict_recording(fitted, later)


def test_another_rig_is_refused_with_the_command_to_re_record(fitted):
    noisy = [dict(RIGS[0], noise=0.5, units=20), RIGS[1]]
    with pytest.raises(SimlabError, match=r"weight observables differs: units 20 \(identifier: all\), noise 0.5 "
                                          r"\(identifier: 0.0\); re-record with simlab record RUN --rig synapse "
                                          r"--units all --noise 0.0"):
        predict_recording(fitted, recording(seed=1, rigs=noisy))
    reseeded = [dict(RIGS[0], seed=9), RIGS[1]]  # a new seed only redraws units and noise: it applies
    predict_recording(fitted, recording(seed=1, rigs=reseeded))


def test_a_shifted_site_is_flagged_and_sites_like_the_training_ones_are_not(fitted):
    new = recording(seed=5)
    obs = new["observation"].values.copy()
    obs[2, 0] += 50.0  # every observable of one site, far outside anything in training
    new["observation"] = (new["observation"].dims, obs, new["observation"].attrs)
    result = predict_recording(fitted, new)
    shifted = list(result["site"].values).index(f"{new['subject'].values[2]}:0")
    flags = result["out_of_distribution"].values
    assert flags[shifted] == 1 and result["ood_score"].values[shifted] > 0.9
    others = np.delete(flags, shifted)
    assert others.mean() <= 0.05  # the threshold is the 99th percentile of held-out training sites
    assert result.attrs["n_ood"] == flags.sum()
    assert f"{flags.sum()} sites flagged out of distribution" in format_predictions(result)


def test_subject_pooling_is_the_renormalized_product_of_site_probabilities():
    p = np.array([[0.6, 0.4], [0.7, 0.3], [np.nan, np.nan], [0.2, 0.8]])
    pooled, count = pool_subjects(p, np.array([0, 0, 0, 1]), 2)
    # subject 0: 0.6 * 0.7 = 0.42 against 0.4 * 0.3 = 0.12; the NaN site is left out
    np.testing.assert_allclose(pooled[0], [0.42 / 0.54, 0.12 / 0.54])
    np.testing.assert_allclose(pooled[1], [0.2, 0.8])
    np.testing.assert_array_equal(count, [2, 1])


def test_predict_pools_each_subjects_sites(fitted):
    result = predict_recording(fitted, recording(seed=2))
    for i, subject in enumerate(result["subject"].values):
        mine = result["site_subject"].values == subject
        product = np.prod(result["probability"].values[mine], axis=0)
        np.testing.assert_allclose(result["subject_probability"].values[i], product / product.sum(), rtol=1e-9)
        assert result["subject_sites"].values[i] == mine.sum()


def test_separable_rules_give_confident_correct_probabilities(fitted):
    result = predict_recording(fitted, recording(seed=7))
    p = result["probability"].values
    assert result.attrs["accuracy"] == 1.0
    assert p.max(axis=1).mean() > 0.8
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert result.attrs["subject_accuracy"] == 1.0
    assert np.trace(result["confusion"].values) == result.attrs["n_scored"]


def test_random_labels_give_probabilities_near_the_class_frequency(training):
    rng = np.random.default_rng(0)
    shuffled = training.assign_coords(learning_rule=("subject", rng.permutation(training["learning_rule"].values)))
    noise = fit_identifier(shuffled, FitSpec(classifier=SMALL_FOREST, transform="raw"))
    p = predict_recording(noise, recording(seed=4))["probability"].values
    # the classes are balanced (6 subjects each, one diverged): about 0.25 each
    np.testing.assert_allclose(p.mean(axis=0), 0.25, atol=0.08)
    assert p.max(axis=1).mean() < 0.45


def test_reliability_on_a_hand_case():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    truth = np.array(["a", "a", "a", "b"])
    rel = reliability(p, truth, ["a", "b"], bins=2)
    # top-class confidences 0.9, 0.8, 0.7, 0.6 all fall in [0.5, 1]: mean 0.75, 2 of 4 correct
    np.testing.assert_allclose(rel["confidence"][1], 0.75)
    np.testing.assert_allclose(rel["accuracy"][1], 0.5)
    assert list(rel["count"]) == [0, 4]
    np.testing.assert_allclose(rel["ece"], 0.25)
    brier = np.mean([(0.1**2 + 0.1**2), (0.2**2 + 0.2**2), (0.7**2 + 0.7**2), (0.6**2 + 0.6**2)])
    np.testing.assert_allclose(rel["brier"], brier)


def test_predictions_write_as_netcdf_and_draw_a_reliability_diagram(fitted, tmp_path):
    import xarray as xr

    from simlab.analysis.analyses import write_results
    from simlab.analysis.figures import plot_reliability

    result = predict_recording(fitted, recording(seed=2))
    path = write_results(result, tmp_path / "predict.nc")
    with xr.open_dataset(path) as back:
        np.testing.assert_array_equal(back["probability"].values, result["probability"].values)
    figure = plot_reliability(result, tmp_path / "predict-reliability")
    assert all(p.is_file() for p in figure.paths)


def test_fit_and_predict_commands_parse():
    from simlab.cli.main import build_parser, flags_of

    parser = build_parser()
    args = parser.parse_args(["fit", "runs/a", "--transform", "diff", "--classifier", "linear_svm",
                              "--observables", "weight", "activation_raw_mean", "--out", "runs/a/identifier"])
    assert args.transform == ["diff"] and args.observables == ["weight", "activation_raw_mean"]
    args = parser.parse_args(["predict", "runs/a/identifier", "runs/b", "--trust", "--out", "p.nc"])
    assert args.trust and args.command == "predict"
    assert flags_of(parser, "fit")["ood_threshold"] == "--ood-threshold"


def test_the_python_api_fits_saves_and_predicts(training, tmp_path):
    import simlab

    identifier = simlab.fit(training, out=tmp_path / "id.skops", classifier=SMALL_FOREST, transform=["diff"])
    assert (tmp_path / "id.json").is_file() and identifier.manifest["transform"] == ["diff"]
    with pytest.raises(SimlabError, match="already exists"):
        simlab.fit(training, out=tmp_path / "id.skops", classifier=SMALL_FOREST)
    result = simlab.predict(tmp_path / "id.skops", recording(seed=2))
    assert result.attrs["schema"] == "simlab.predict/1"
    with pytest.raises(SimlabError, match="observables"):
        simlab.fit(training, observables=["spikes"])
