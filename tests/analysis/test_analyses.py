"""Tests for the analyses of a run (generalization, trajectory access, robustness, performance
confound) on the tiny run, each checked against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from simlab.analysis.analyses import load_result, run_analysis
from simlab.analysis.classifiers import Layout, fit_predict
from simlab.analysis.common import open_run_recordings
from simlab.analysis.confound import curve_features, match_nearest, match_on_performance, performance_baseline
from simlab.analysis.generalization import generalization
from simlab.analysis.identify import build_features, depth_groups, identify, select_sites
from simlab.specs.analyses import ANALYSES, IdentifySpec, RobustnessSpec
from simlab.analysis.trajectory import select_access, trajectory_access
from simlab.cli.main import main
from simlab.errors import SimlabError
from simlab.protocol import parse_protocol
from simlab.specs.rigs import ScheduleSpec
from simlab.rundir import RunDirectory

from tests.analysis.conftest import FAST

SPEC = IdentifySpec(**FAST)
QUIET = dict(progress=False, echo=lambda *a, **k: None, n_jobs=1)


@pytest.fixture(scope="module")
def recording(tiny_run):
    return open_run_recordings(RunDirectory(tiny_run)).load()


def _sites_of(ds, subjects):
    return sorted(f"{s}:{l}" for s in subjects for l, name in zip(ds["layer"].values, ds["layer_name"].sel(subject=s).values)
                  if name != "")


def _weight_features(sites):
    """The weight feature set as identify builds it (SPEC's transform), and its layout."""
    X, kept, _ = build_features(sites, np.flatnonzero(sites.measures == "weight"), SPEC.transform)
    n_depth = len(depth_groups(sites))
    return X, Layout((X.shape[1] - n_depth) // len(kept), len(kept), n_depth)


# --------------------------------------------------------------------------- generalization


def test_generalization_folds_are_the_level_partition(analyzed_run, recording):
    result = load_result(analyzed_run / "analyses" / "generalization-architecture.nc")
    assert list(result["level"].values) == ["deep", "shallow"]
    arch = recording["architecture"].values
    for level in result["level"].values:
        held_out = recording["subject"].values[arch == level]
        tested = sorted(str(result["test_sites"].sel(level=level).values).split(","))
        assert tested == _sites_of(recording, held_out)


def test_generalization_accuracy_matches_a_manual_fit(analyzed_run, recording):
    """Fold 'deep': train on every shallow site, test on every deep site, by hand."""
    result = load_result(analyzed_run / "analyses" / "generalization-architecture.nc")
    sites = select_sites(recording, "learning_rule")
    level = recording["architecture"].values[sites.subject_index]
    X, layout = _weight_features(sites)
    train, test = np.flatnonzero(level != "deep"), np.flatnonzero(level == "deep")
    pred = fit_predict(X, sites.labels, train, test, SPEC.classifiers[0], groups=sites.subject_index,
                       preset=SPEC.preset, seed=SPEC.seed, split=0, layout=layout).predictions
    got = result["accuracy"].sel(level="deep", feature_set="weight").item()
    assert got == pytest.approx(np.mean(pred == sites.labels[test]))
    # with two levels, the matrix cell trained on shallow and tested on deep is that same fold
    assert result["matrix_accuracy"].sel(train_level="shallow", test_level="deep", feature_set="weight").item() == \
        pytest.approx(got)


def test_generalization_matrix_over_three_levels_by_hand(recording):
    """Seeds 0, 1, 2 (one subject per rule and architecture each): a cell trains on one seed and
    tests on another; the pairs are fitted in row order, so (1 -> 2) is the fourth, split 3.
    The diagonal is identification within the seed's subjects."""
    weights = recording.sel(observable=recording["measure"] == "weight")
    result = generalization(weights, "seed", SPEC)
    levels = [str(v) for v in result["train_level"].values]
    assert len(levels) == 3
    sites = select_sites(recording, "learning_rule")
    seed = recording["seed"].values.astype(str)[sites.subject_index]
    X, layout = _weight_features(sites)
    train, test = np.flatnonzero(seed == levels[1]), np.flatnonzero(seed == levels[2])
    pred = fit_predict(X, sites.labels, train, test, SPEC.classifiers[0], groups=sites.subject_index,
                       preset=SPEC.preset, seed=SPEC.seed, split=3, layout=layout).predictions
    cell = result["matrix_accuracy"].sel(train_level=levels[1], test_level=levels[2], feature_set="weight")
    assert cell.item() == pytest.approx(np.mean(pred == sites.labels[test]))
    within = identify(weights.isel(subject=np.flatnonzero(weights["seed"].values.astype(str) == levels[0])), SPEC)
    np.testing.assert_allclose(result["matrix_accuracy"].sel(train_level=levels[0], test_level=levels[0]).values,
                               within["accuracy_mean"].values)


def test_generalization_diagonal_is_within_level_identification(analyzed_run, recording):
    result = load_result(analyzed_run / "analyses" / "generalization-architecture.nc")
    shallow = recording.isel(subject=np.flatnonzero(recording["architecture"].values == "shallow"))
    within = identify(shallow, SPEC, n_jobs=1)["accuracy_mean"]
    diag = result["matrix_accuracy"].sel(train_level="shallow", test_level="shallow")
    np.testing.assert_allclose(diag.transpose(*within.dims).values, within.values)


@pytest.mark.parametrize("factor, message", [
    ("learning_rule", "is the identification target"),
    ("colour", "not a subject coordinate"),
    ("task", "1 level"),
])
def test_generalization_refuses_a_bad_factor(recording, factor, message):
    with pytest.raises(SimlabError, match=message):
        generalization(recording, factor, SPEC)


# --------------------------------------------------------------------------- trajectory


def test_select_access_picks_the_sessions_by_hand(recording):
    fraction = recording["fraction"].values  # 4 sessions: 0, 1/3, 2/3, 1
    first = select_access(recording, ScheduleSpec(window=(0.0, 0.5)))
    assert list(first["fraction"].values) == list(fraction[fraction <= 0.5])
    assert list(select_access(recording, ScheduleSpec(every=2))["session"].values) == [0, 2]
    assert list(select_access(recording, ScheduleSpec(count=2))["session"].values) == [0, 3]


def test_trajectory_equals_identify_on_manually_sliced_sessions(analyzed_run, recording):
    result = load_result(analyzed_run / "analyses" / "trajectory.nc")
    assert list(result["access"].values) == ["all", "first_half", "sessions_2"]
    assert list(result["n_sessions"].values) == [4, 2, 2]
    manual = identify(recording.isel(session=[0, 3]), SPEC, n_jobs=1)
    np.testing.assert_allclose(
        result["accuracy"].sel(access="sessions_2").transpose(*manual["accuracy"].dims).values,
        manual["accuracy"].values,
    )


def test_trajectory_refuses_the_reserved_name(recording):
    with pytest.raises(SimlabError, match="'all'"):
        trajectory_access(recording, {"all": ScheduleSpec()}, SPEC)


# --------------------------------------------------------------------------- robustness


def test_robustness_cells_equal_a_direct_record(analyzed_run, tmp_path):
    """A cached grid recording is what 'simlab record' writes with the same settings."""
    cached = sorted((analyzed_run / "recordings" / "robustness").glob("electrophysiology-units2-noise0.5.nc"))
    assert len(cached) == 1
    out = tmp_path / "direct.nc"
    assert main(["record", str(analyzed_run), "--rig", "electrophysiology", "--units", "2", "--noise", "0.5",
                 "--out", str(out), "--quiet"]) == 0
    with xr.open_dataset(cached[0]) as a, xr.open_dataset(out) as b:
        np.testing.assert_array_equal(a["observation"].values, b["observation"].values)
        np.testing.assert_array_equal(a["unit_index"].values, b["unit_index"].values)


def test_robustness_grid_accuracies_and_comparison(analyzed_run):
    grid = load_result(analyzed_run / "analyses" / "robustness.nc")
    assert grid["accuracy"].dims == ("rig", "units", "noise", "classifier", "split")
    assert list(grid["units"].values) == ["2", "all"] and list(grid["noise"].values) == [0.0, 0.5]
    assert grid["units_recorded"].sel(units="2").values.tolist() == [2.0, 2.0]
    # the comparison is a paired test over the same splits, Holm-corrected over the 4 cells
    a = grid["accuracy"].sel(rig="synapse").isel(classifier=0)
    b = grid["accuracy"].sel(rig="electrophysiology").isel(classifier=0)
    p = []
    for u in grid["units"].values:
        for n in grid["noise"].values:
            d = (b - a).sel(units=u, noise=n).values
            assert grid["difference_mean"].isel(classifier=0).sel(units=u, noise=n).item() == pytest.approx(d.mean())
            p.append(stats.ttest_rel(b.sel(units=u, noise=n), a.sel(units=u, noise=n)).pvalue
                     if np.any(d != d[0]) else (1.0 if d[0] == 0 else np.nan))
    p = np.array(p)
    ok = np.isfinite(p)
    order = np.argsort(p[ok])
    m = ok.sum()
    holm = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[ok][order]))
    expected = np.full(p.shape, np.nan)
    expected[np.flatnonzero(ok)[order]] = holm
    np.testing.assert_allclose(grid["p_holm"].isel(classifier=0).values.reshape(-1), expected)


def test_robustness_reuses_cached_recordings(analyzed_run, tmp_path):
    from simlab.analysis.robustness import grid_recording

    run = RunDirectory(analyzed_run)
    cache = analyzed_run / "recordings" / "robustness"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.nc")}
    grid_recording(run, "synapse", 2, 0.0)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.nc")} == before


def test_robustness_spec_refuses_bad_settings():
    with pytest.raises(ValueError, match="unit count must be >= 1"):
        RobustnessSpec(units=[0])
    with pytest.raises(ValueError, match="compare"):
        RobustnessSpec(rigs=["synapse", "paired"], compare=("synapse", "electrophysiology"))


# --------------------------------------------------------------------------- confound


def _subjects(final, labels, n_steps=12, n_sessions=4, seed=0):
    rng = np.random.default_rng(seed)
    n = len(final)
    return xr.Dataset(
        {
            "final_accuracy": ("subject", np.asarray(final, float)),
            "loss": (("subject", "step"), rng.normal(size=(n, n_steps))),
            "test_accuracy": (("subject", "session"), rng.uniform(size=(n, n_sessions))),
        },
        coords={
            "subject": [f"s{i}" for i in range(n)],
            "learning_rule": ("subject", np.asarray(labels)),
            "status": ("subject", np.array(["ok"] * n)),
            "step": np.arange(1, n_steps + 1),
            "session_step": ("session", np.linspace(0, n_steps, n_sessions)),
        },
    )


def test_matching_by_hand():
    # quantiles of the 8 accuracies: the median is 0.575, so bin 0 holds A 0.1, 0.2, 0.5 and
    # B 0.55; bin 1 holds A 0.6 and B 0.65, 0.9, 0.95: one subject of each class per bin
    table = _subjects([0.1, 0.2, 0.5, 0.6, 0.55, 0.65, 0.9, 0.95], ["A"] * 4 + ["B"] * 4)
    keep, bins = match_on_performance(table, "learning_rule", bins=2, seed=0)
    assert len(keep) == 4
    assert 4 in keep and 3 in keep  # the only B of bin 0, the only A of bin 1
    assert sorted(bins[keep].tolist()) == [0, 0, 1, 1]
    labels = np.array(["A"] * 4 + ["B"] * 4)
    for b in (0, 1):
        assert sorted(labels[keep][bins[keep] == b]) == ["A", "B"]


def test_nearest_matching_by_hand():
    # rarest class C (2 subjects: 0.50, 0.80); from the lowest up: 0.50 takes A 0.52 and B 0.47;
    # 0.80 takes A 0.90 (nearest unused, 0.10 away): outside the 0.05 caliper, so no group
    table = _subjects([0.52, 0.9, 0.3, 0.47, 0.6, 0.2, 0.5, 0.8], ["A", "A", "A", "B", "B", "B", "C", "C"])
    keep, group = match_nearest(table, "learning_rule", caliper=0.05)
    assert keep.tolist() == [0, 3, 6]
    assert group.tolist() == [0, -1, -1, 0, -1, -1, 0, -1]
    keep, _ = match_nearest(table, "learning_rule", caliper=0.25)
    assert keep.tolist() == [0, 1, 3, 4, 6, 7]  # 0.80 now takes A 0.90 and B 0.60


def test_curve_features_by_hand():
    table = _subjects([0.5, 0.6], ["A", "B"], n_steps=6, n_sessions=3)
    X, layout = curve_features(table, points=3)
    loss = table["loss"].values
    np.testing.assert_allclose(X[:, :3], loss.reshape(2, 3, 2).mean(axis=2))
    centres = np.array([1.5, 3.5, 5.5])
    for i in range(2):
        np.testing.assert_allclose(X[i, 3:], np.interp(centres, [0, 3, 6], table["test_accuracy"].values[i]))
    assert layout == Layout(sessions=3, channels=2)


def test_performance_baseline_names_separable_classes():
    final = [0.1, 0.15, 0.2, 0.25, 0.3, 0.7, 0.75, 0.8, 0.85, 0.9]
    table = _subjects(final, ["A"] * 5 + ["B"] * 5)
    result = performance_baseline(table, SPEC, points=4)
    assert result["baseline_accuracy"].sel(feature_set="final_accuracy").values.tolist() == [[1.0, 1.0]]


def test_confound_one_bin_matches_every_balanced_subject(analyzed_run):
    result = load_result(analyzed_run / "analyses" / "confound.nc")
    assert (result["matched_group"].values == 0).all()  # 6 subjects per rule: all kept
    np.testing.assert_allclose(result["accuracy"].sel(cohort="all").values, result["accuracy"].sel(cohort="matched").values)
    assert set(result["baseline_features"].values) == {"curves", "final_accuracy"}


# --------------------------------------------------------------------------- protocol and CLI


def test_protocol_analyses_entries_validate_with_field_errors():
    base = "name: p\ncohort: {architecture: [mlp], task: [digits], learning_rule: [sgdm], batch_size: [8]}\n"
    protocol = parse_protocol(base + "analyses:\n  generalization: {factors: [batch_size]}\n  robustness: {noise: [0, 1]}\n")
    assert protocol.analyses["generalization"].factors == ["batch_size"]
    with pytest.raises(SimlabError, match=r"analyses\.robustness\.units"):
        parse_protocol(base + "analyses:\n  robustness: {units: [0]}\n", source="p.yaml")


def test_run_analysis_keeps_existing_results(analyzed_run):
    run = RunDirectory(analyzed_run)
    path = run.analysis("trajectory", "nc")
    before = path.stat().st_mtime_ns
    said = []
    run_analysis(run, "trajectory", ANALYSES["trajectory"](), progress=False, echo=said.append)
    assert path.stat().st_mtime_ns == before and "exists, kept" in said[0]


def test_cli_generalize_writes_results_and_reports_mistakes(tiny_run_copy, capsys):
    assert main(["generalize", str(tiny_run_copy), "--factor", "architecture", "--no-matrix", "--splits", "2",
                 "--classifier", "random_forest:n_estimators=10", "--rigs", "synapse", "--quiet"]) == 0
    result = load_result(tiny_run_copy / "analyses" / "generalization-architecture.nc")
    assert "matrix_accuracy" not in result and list(result["feature_set"].values) == ["weight"]
    capsys.readouterr()
    assert main(["generalize", str(tiny_run_copy), "--factor", "colour", "--force", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simlab generalize: error:") and "colour" in err and "\n" not in err
    assert main(["robustness", str(tiny_run_copy), "--units", "0", "--quiet"]) == 2
    assert "--units" in capsys.readouterr().err


def test_info_prints_each_analysis_table(analyzed_run):
    from simlab.info import describe_path

    for stem, text in [("robustness", "electrophysiology minus synapse"), ("confound", "performance alone"),
                       ("trajectory", "first_half"), ("generalization-architecture", "held out")]:
        assert text in describe_path(analyzed_run / "analyses" / f"{stem}.nc")


@pytest.mark.parametrize("command, options", [
    ("generalize", ["--factor", "--no-matrix", "--splits", "--classifier", "--rigs", "--force"]),
    ("trajectory", ["--first", "--last", "--every", "--sessions"]),
    ("robustness", ["--rig", "--units", "--noise", "--sessions", "--rig-seed"]),
    ("confound", ["--matching", "--caliper", "--bins", "--curve-points"]),
    ("plan", ["--target", "--rig", "--classifier", "--criterion"]),
    ("figures", ["--observable"]),
    ("report", ["--out", "--observable"]),
])
def test_analysis_subcommand_help(command, options, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "RUN_DIR" in out and all(option in out for option in options)
