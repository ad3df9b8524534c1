"""The matched-hyperparameter control and the transfer table, on planted recordings where the
answer is known: rules that differ only in learning rate, rules that differ in an observable
at matched rates, and a tiny table of rates matched by hand."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml

import simlab
from simlab.analysis.generalization import generalization
from simlab.analysis.controls import format_identify as format_table, identify_with_controls
from simlab.analysis.identify import identify
from simlab.analysis.matched import MIN_MATCHED, format_matched, match_rates, matched_control, unit_splits
from simlab.analysis.transfer import format_transfer, transfer_table
from simlab.errors import SimlabError
from simlab.specs.analyses import IdentifySpec

# raw trajectories: the planted effects are levels, which a transform relative to the first
# session (log_ratio, the default) would remove
FAST = dict(splits=4, bootstrap=200, transform="raw", classifiers=[{"name": "random_forest", "params": {"n_estimators": 25}}])


def planted(rates_a, rates_b, rule_effect=0.0, architectures=("mlp",), tasks=("digits",), n_layers=2,
            n_sessions=6, seed=0) -> xr.Dataset:
    """Two rules, one subject per rate (repeated over every architecture x task).

    Observable ``weight_raw_norm`` grows over sessions at a speed set by the subject's log
    learning rate, plus ``rule_effect`` for rule B; ``weight_raw_mean`` is noise. So with no
    rule effect the recordings name the rule only through its rate.
    """
    rng = np.random.default_rng(seed)
    subjects = [(rule, rate, arch, task) for arch in architectures for task in tasks
                for rule, rates in (("rule_a", rates_a), ("rule_b", rates_b)) for rate in rates]
    n = len(subjects)
    rule = np.array([s[0] for s in subjects])
    rate = np.array([s[1] for s in subjects], dtype=np.float64)
    fraction = np.linspace(0.0, 1.0, n_sessions)
    speed = np.log10(rate) + 4.0 + rule_effect * (rule == "rule_b")
    arch_shift = np.array([architectures.index(s[2]) for s in subjects]) * 0.3
    obs = rng.normal(scale=0.05, size=(n, n_layers, n_sessions, 2))
    obs[..., 0] += (speed + arch_shift)[:, None, None] * fraction[None, None, :] + np.arange(n_layers)[None, :, None]
    obs[..., 1] = rng.normal(size=obs[..., 1].shape)
    return xr.Dataset(
        {"observation": (("subject", "layer", "session", "observable"), obs.astype(np.float32))},
        coords={
            "subject": [f"s{i:03d}" for i in range(n)],
            "layer": np.arange(n_layers),
            "session": np.arange(n_sessions),
            "observable": ["weight_raw_norm", "weight_raw_mean"],
            "measure": ("observable", ["weight", "weight"]),
            "learning_rule": ("subject", rule),
            "learning_rate": ("subject", rate),
            "architecture": ("subject", [s[2] for s in subjects]),
            "task": ("subject", [s[3] for s in subjects]),
            "batch_size": ("subject", np.full(n, 32)),
            "seed": ("subject", np.arange(n)),
            "status": ("subject", np.full(n, "ok")),
            "layer_name": (("subject", "layer"), np.array([[f"dense_{l}" for l in range(n_layers)]] * n)),
            "depth": (("subject", "layer"), np.array([["early", "deep"][: n_layers]] * n)),
            "fraction": ("session", fraction),
        },
        attrs={"schema": "simlab.recording/1"},
    )


def _rates(seed=1):
    """Rule A mostly low, rule B mostly high, 10 subjects of each at shared rates (jittered
    by a ratio of at most 1.2 either way): the rate names most subjects' rule outright."""
    rng = np.random.default_rng(seed)
    shared = np.geomspace(2e-3, 2e-2, 10)
    low = np.geomspace(1e-4, 5e-4, 24)
    high = np.geomspace(2e-1, 1.0, 24)
    jitter = np.exp(rng.uniform(-np.log(1.2), np.log(1.2), 10))
    return np.concatenate([low, shared]), np.concatenate([shared * jitter, high])


# ----------------------------------------------------------------------------- matching by hand


def test_matching_by_hand_respects_caliper_and_strata():
    # a0-b0 ratio 1.2 and a1-b1 1.05 match; a1-b0 (1.67) is outside the caliper; a2 shares b's
    # rates only in another stratum; a3-b3 is a ratio of 3
    a, b = [1.0, 2.0, 4.0, 10.0], [1.2, 2.1, 4.0, 30.0]
    assert match_rates(a, b, ["x", "x", "y", "x"], ["x"] * 4, caliper=1.5) == [(0, 0), (1, 1)]
    # nearest first: a1 (1.3) is nearer b0 (1.2) than a0 (1.0) is, so a0 stays unmatched
    assert match_rates([1.0, 1.3], [1.2], caliper=1.5) == [(1, 0)]
    # greedy by increasing gap, one-to-one: b0 goes to a1 (gap log 1.1), then a0 takes b1
    assert match_rates([1.0, 2.2], [2.0, 1.4], caliper=1.5) == [(0, 1), (1, 0)]
    # the caliper bound itself is admissible; a wider caliper admits more; bad rates none
    assert match_rates([1.0], [1.5], caliper=1.5) == [(0, 0)]
    assert match_rates([1.0], [1.6], caliper=1.5) == []
    assert match_rates([1.0], [1.6], caliper=2.0) == [(0, 0)]
    assert match_rates([np.nan, 0.0], [1.0, 1.0], caliper=2.0) == []
    with pytest.raises(SimlabError, match="above 1"):
        match_rates([1.0], [1.0], caliper=1.0)


# ----------------------------------------------------------------------------- planted cohorts


@pytest.fixture(scope="module")
def rate_only_cohort():
    return planted(*_rates())


def test_rules_that_differ_only_in_rate_are_at_chance_once_matched(rate_only_cohort):
    spec = IdentifySpec(**FAST)
    unmatched = float(identify(rate_only_cohort, spec, n_jobs=1)["accuracy_mean"].sel(feature_set="weight").max())
    control = matched_control(rate_only_cohort, spec, n_jobs=1)
    row = control.sel(pair="rule_a vs rule_b").isel(classifier=0)
    assert int(row["matched_subjects"]) == 10 and str(row["matched_status"].values) == "ok"
    assert float(row["matched_log_gap"]) <= np.log(1.5) + 1e-9
    assert unmatched > 0.75
    assert float(row["matched_accuracy"].sel(feature_set="weight")) < 0.65
    assert abs(float(row["matched_rate_accuracy"]) - 0.5) < 0.15  # the rate cue is gone ...
    assert float(row["matched_rate_unmatched"]) > 0.75  # ... that was there before matching
    low, high = row["matched_boot_ci"].sel(feature_set="weight").values
    assert low <= float(row["matched_accuracy"].sel(feature_set="weight")) + 0.1 and high <= 1.0


def test_rules_that_differ_in_an_observable_are_named_at_matched_rates():
    control = matched_control(planted(*_rates(), rule_effect=3.0), IdentifySpec(**FAST), n_jobs=1)
    row = control.sel(pair="rule_a vs rule_b").isel(classifier=0)
    assert float(row["matched_accuracy"].sel(feature_set="weight")) > 0.9
    assert abs(float(row["matched_rate_accuracy"]) - 0.5) < 0.2


def test_matched_subjects_are_the_hand_matches_and_the_splits_are_identify_s():
    a, b = _rates()
    ds = planted(a, b)
    control = matched_control(ds, IdentifySpec(**FAST), n_jobs=1)
    pairs = [match_rates(a, b, caliper=1.5)]
    names = ds["subject"].values
    expected = ",".join(f"{names[i]}={names[len(a) + j]}" for i, j in pairs[0])
    assert str(control["matched_pairs"].values[0]) == expected
    # the pair's accuracy is identify's on exactly those subjects
    keep = [i for i, _ in pairs[0]] + [len(a) + j for _, j in pairs[0]]
    order = np.argsort(keep)
    units = np.tile(np.arange(len(pairs[0])), 2)[order]  # each matched pair on one side of a split
    splits = unit_splits(units, FAST["splits"], 0.25, 0)
    for train, test in splits:
        assert (np.unique(units[test], return_counts=True)[1] == 2).all()  # both members tested
    direct = identify(ds.isel(subject=np.array(keep)[order]), IdentifySpec(**FAST), n_jobs=1, subject_splits=splits)
    np.testing.assert_allclose(control["matched_accuracy"].values[0], direct["accuracy_mean"].values)


def test_too_few_matches_is_reported_not_dropped():
    ds = planted([1e-3, 2e-3, 1e-1, 2e-1], [1.1e-3, 2.1e-3, 5.0, 9.0])  # 2 matches
    control = matched_control(ds, IdentifySpec(**FAST), n_jobs=1)
    assert int(control["matched_subjects"].values[0]) == 2 < MIN_MATCHED
    assert "too few matches: 2 per class (need 3)" in str(control["matched_status"].values[0])
    assert np.isnan(control["matched_accuracy"].values).all()
    assert "too few matches" in format_matched(control)


def test_one_line_when_nothing_can_be_matched():
    same = planted([1e-3] * 6, [1e-1] * 6)
    text = format_matched(matched_control(same, IdentifySpec(**FAST), n_jobs=1))
    assert "every subject of a class has the same learning_rate (rule_a 0.001, rule_b 0.1)" in text
    assert len(text.splitlines()) == 2
    none = matched_control(same.drop_vars("learning_rate"), IdentifySpec(**FAST), n_jobs=1)
    assert "carry no learning_rate coordinate" in format_matched(none)
    results = identify_with_controls(same.drop_vars("learning_rate"), IdentifySpec(**FAST, matched_control=True),
                                     n_jobs=1)
    assert format_table(results).endswith("the subjects carry no learning_rate coordinate: nothing to match on")


def test_identify_prints_and_stores_the_control_beside_its_table(rate_only_cohort, tmp_path):
    spec = IdentifySpec(**FAST, matched_control=True)
    results = identify_with_controls(rate_only_cohort, spec, n_jobs=1)
    plain = identify(rate_only_cohort, spec, n_jobs=1)
    np.testing.assert_array_equal(results["accuracy"].values, plain["accuracy"].values)
    text = format_table(results)
    assert text.startswith(format_table(plain)) and "matched-learning_rate control" in text
    path = tmp_path / "identify.nc"
    results.to_netcdf(path)
    with xr.open_dataset(path) as back:
        assert "rule_a vs rule_b" in format_table(back.load())


# ----------------------------------------------------------------------------- transfer table


def test_transfer_table_cells_are_identify_and_generalization_numbers():
    a, b = np.geomspace(1e-3, 1e-2, 3), np.geomspace(1e-3, 1e-2, 3)
    ds = planted(a, b, rule_effect=1.0, architectures=("mlp", "conv"), tasks=("digits", "teacher"))
    spec = IdentifySpec(**{**FAST, "splits": 2})
    table = transfer_table(ds, spec, ["raw", "diff"], n_jobs=1)
    assert list(table["evaluation"].values) == ["within", "within_population", "held_out_architecture",
                                                "held_out_task"]
    for transform in ("raw", "diff"):
        row = IdentifySpec(**{**spec.model_dump(), "transform": transform})
        cell = table["transfer_accuracy"].sel(transfer_transform=transform).isel(classifier=0)
        within = identify(ds, row, n_jobs=1)
        pop = identify(ds, IdentifySpec(**{**row.model_dump(), "group_by": "population"}), n_jobs=1)
        np.testing.assert_allclose(cell.sel(evaluation="within").values, within["accuracy_mean"].isel(classifier=0))
        np.testing.assert_allclose(cell.sel(evaluation="within_population").values,
                                   pop["accuracy_mean"].isel(classifier=0))
        np.testing.assert_allclose(
            table["transfer_boot_ci"].sel(transfer_transform=transform, evaluation="within").values,
            within["accuracy_mean_boot_ci"].values)
        for factor in ("architecture", "task"):
            held = generalization(ds, factor, row, matrix=False, n_jobs=1)
            pooled = held["correct"].sum("level") / held["n_test"].sum("level")
            np.testing.assert_allclose(cell.sel(evaluation=f"held_out_{factor}").values, pooled.isel(classifier=0))
    text = format_transfer(table)
    assert "held-out architecture" in text and "within (population)" in text


def test_transfer_table_leaves_out_a_factor_of_one_level_and_says_so(rate_only_cohort):
    table = transfer_table(rate_only_cohort, IdentifySpec(**{**FAST, "splits": 2}), n_jobs=1)
    assert "held_out_task" not in table["evaluation"].values
    assert "task: one level (digits), not held out" in table.attrs["transfer_notes"]
    assert "architecture: one level (mlp)" in format_transfer(table)


def test_identify_cli_prints_the_control_and_transfer_tables(tmp_path, capsys, monkeypatch):
    from simlab.cli.main import main

    monkeypatch.setattr("simlab.analysis.identify._n_workers", lambda n_jobs: 1)  # no worker start-up

    shared = np.geomspace(2e-3, 2e-2, 4)
    small = planted([1e-4, 2e-4, 3e-4, 4e-4, *shared], [*(shared * 1.1), 0.2, 0.4, 0.6, 0.8])
    path = tmp_path / "rec.nc"
    small.to_netcdf(path)
    out = tmp_path / "res.nc"
    code = main(["identify", str(path), "--out", str(out), "--splits", "2", "--bootstrap", "50", "--quiet",
                 "--classifier", "random_forest:n_estimators=10", "--matched-control", "--matched-caliper", "1.3",
                 "--report-transfer", "raw", "raw+diff"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "ratio <= 1.3" in printed and "transfer of learning_rule" in printed and "raw+diff" in printed
    with pytest.raises(SystemExit):
        main(["identify", str(path), "--report-transfer", "raw+bogus"])
    assert "unknown transform bogus" in capsys.readouterr().err


def test_api_and_summary():
    ds = planted(*_rates())
    control = simlab.matched_control(ds, caliper=1.3, n_jobs=1, **FAST)
    assert control.attrs["matched_caliper"] == 1.3
    assert "matched-learning_rate control" in simlab.summary(control)
    with pytest.raises(SimlabError, match="caliper"):
        simlab.identify(ds, matched_caliper=0.5)


def test_a_protocol_setting_saves_the_control_with_the_run_s_identify_results(tiny_run_copy):
    from simlab.analysis.analyses import load_result, run_analysis
    from simlab.rundir import RunDirectory

    run = RunDirectory(tiny_run_copy)
    protocol = yaml.safe_load(run.protocol_file.read_text())
    protocol["analyses"]["identify"] = {"splits": 3, "matched_control": True}
    spec = load_protocol_text(yaml.safe_dump(protocol)).analyses["identify"]
    assert spec.matched_control and spec.matched_caliper == 1.5
    [path] = run_analysis(run, "identify", IdentifySpec(**{**spec.model_dump(), **FAST}), force=True,
                          progress=False, echo=lambda *a, **k: None, n_jobs=1)
    saved = load_result(path)
    # the tiny run trains each rule at its one rate (no spread): one line says nothing matched
    assert "no pair matches" in saved.attrs["matched_note"]
    assert "no pair matches" in path.with_suffix(".txt").read_text()


def load_protocol_text(text):
    import tempfile
    from pathlib import Path

    from simlab.protocol import load_protocol

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "protocol.yaml"
        path.write_text(text)
        return load_protocol(path)


def test_transfer_table_holds_out_rate_bands_per_class():
    """Rule a's rates all below rule b's: per-class terciles hold out each rule's own band, so
    every fold trains on both rules; the cell equals generalization's pooled number."""
    ds = planted(np.geomspace(1e-4, 1e-3, 6), np.geomspace(1e-2, 1e-1, 6), rule_effect=1.0)
    spec = IdentifySpec(**{**FAST, "splits": 2})
    table = transfer_table(ds, spec, ["raw"], factors=["learning_rate"], n_jobs=1, bin_per_class=True)
    held = generalization(ds, "learning_rate", spec, matrix=False, n_jobs=1, bin_per_class=True)
    assert held.attrs["classes_not_trained"] == ""  # every band holds both rules
    pooled = held["correct"].sum("level") / held["n_test"].sum("level")
    np.testing.assert_allclose(table["transfer_accuracy"].sel(transfer_transform="raw", evaluation="held_out_learning_rate")
                               .isel(classifier=0).values, pooled.isel(classifier=0))
