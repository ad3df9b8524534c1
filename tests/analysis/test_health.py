"""The health check of the analyses: which subjects learned, the counts per rule, and the
exclusion of those that did not, on planted subjects whose gains are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from simlab.analysis.generalization import generalization
from simlab.analysis.health import assess, format_health, learned, with_untrained
from simlab.analysis.identify import identify, select_sites
from simlab.analysis.importance import feature_importance
from simlab.analysis.trajectory import trajectory_access
from simlab.errors import SimlabError
from simlab.specs.analyses import HealthSpec, IdentifySpec
from simlab.specs.rigs import ScheduleSpec
from tests.analysis.test_identify import RULES, make_recording

FAST = {"splits": 2, "classifiers": ["linear_svm"]}


def planted(n_per_rule: int = 6) -> tuple[xr.Dataset, np.ndarray]:
    """make_recording's cohort (4 rules x n_per_rule, the next-to-last subject diverged) with
    final accuracy 0.60 everywhere and untrained values giving known gains: 0.50 (gain 0.10)
    except for planted subjects: rule 2's first two gain 0.02 and 0.04, rule 3's first gains
    exactly 0.05 (the margin) and its second has a NaN final accuracy. Returns the recording
    and which subjects learned at the default margin."""
    ds = make_recording(n_per_rule=n_per_rule)
    n = ds.sizes["subject"]
    final = np.full(n, 0.60, np.float32)
    initial = np.full(n, 0.50, np.float32)
    r2, r3 = 2 * n_per_rule, 3 * n_per_rule
    initial[r2], initial[r2 + 1] = 0.58, 0.56
    initial[r3] = 0.55
    final[r3 + 1] = np.nan
    ds = ds.assign_coords(final_accuracy=("subject", final), initial_accuracy=("subject", initial))
    expected = ds["status"].values.astype(str) == "ok"
    expected[[r2, r2 + 1, r3 + 1]] = False
    return ds, expected


def test_learned_by_hand():
    ds, expected = planted()
    np.testing.assert_array_equal(learned(ds, 0.05), expected)
    # a margin of 0.03 lets rule 2's second subject (gain 0.04) and still not its first (0.02)
    expected_03 = expected.copy()
    expected_03[2 * 6 + 1] = True
    np.testing.assert_array_equal(learned(ds, 0.03), expected_03)


def test_report_counts_per_rule_and_excludes_only_with_min_gain():
    ds, _ = planted()
    keep, report = assess(ds, HealthSpec())
    assert list(report["health_rule"].values) == list(RULES)
    # 6 per rule; the diverged subject is the next-to-last, of the last rule
    assert report["subjects_total"].values.tolist() == [6, 6, 6, 6]
    assert report["subjects_diverged"].values.tolist() == [0, 0, 0, 1]
    assert report["subjects_learned"].values.tolist() == [6, 6, 4, 4]
    assert report["subjects_not_learned"].values.tolist() == [0, 0, 2, 1]
    assert report["subjects_excluded"].values.tolist() == [0, 0, 0, 0]
    assert keep.sum() == 23  # reporting alone keeps every subject that did not diverge
    keep, report = assess(ds, HealthSpec(min_gain=0.05))
    assert report["subjects_excluded"].values.tolist() == [0, 0, 2, 1]
    assert keep.sum() == 20
    assert report.attrs["health_min_gain"] == 0.05


def test_min_gain_needs_the_untrained_value():
    ds, _ = planted()
    ds = ds.drop_vars("initial_accuracy")
    keep, report = assess(ds, HealthSpec())
    assert "subjects_learned" not in report and keep.sum() == 23
    assert "unknown" in format_health(report)[0]
    with pytest.raises(SimlabError, match="no 'initial_accuracy'"):
        assess(ds, HealthSpec(min_gain=0.05))


def test_untrained_value_from_a_subject_table():
    ds, _ = planted()
    initial = ds["initial_accuracy"].values
    bare = ds.drop_vars("initial_accuracy")
    table = xr.Dataset(
        {"test_accuracy": (("subject", "session"), np.stack([initial, np.full_like(initial, 0.9)], axis=1))},
        coords={"subject": ds["subject"].values, "session_step": ("session", [0, 100])},
    )
    np.testing.assert_array_equal(with_untrained(bare, table)["initial_accuracy"].values, initial)
    # another cohort's table (other subjects) is not used
    other = table.assign_coords(subject=[f"x{i}" for i in range(ds.sizes["subject"])])
    assert "initial_accuracy" not in with_untrained(bare, other).coords


def test_exclusion_changes_the_subjects_identified():
    ds, expected = planted()
    spec = IdentifySpec(**FAST, health={"min_gain": 0.05})
    sites = select_sites(ds, "learning_rule", spec.health)
    assert set(sites.subject_index) == set(np.flatnonzero(expected))
    assert set(select_sites(ds, "learning_rule").subject_index) == set(np.flatnonzero(ds["status"].values == "ok"))
    result = identify(ds, spec, n_jobs=1)
    assert result.attrs["n_subjects"] == 20
    tested = {s.split(":")[0] for text in result["test_sites"].values for s in str(text).split(",")}
    assert tested.isdisjoint(ds["subject"].values[~expected])
    assert result["subjects_excluded"].sel(health_rule=RULES[2]).item() == 2
    from simlab.analysis.identify import format_table

    table = format_table(result)
    assert f"excluded 3 of 24 subjects that did not learn: {RULES[2]} 2, {RULES[3]} 1" in table
    assert f"{RULES[2]} 4/6" in table


def test_without_min_gain_nothing_changes_but_the_report():
    ds, _ = planted()
    plain = identify(ds.drop_vars("initial_accuracy"), IdentifySpec(**FAST), n_jobs=1)
    reported = identify(ds, IdentifySpec(**FAST), n_jobs=1)
    np.testing.assert_array_equal(plain["accuracy"].values, reported["accuracy"].values)
    assert reported.attrs["n_subjects"] == 23
    assert "kept 3 subjects that did not learn" in "\n".join(format_health(reported))


def test_every_identification_carries_the_report():
    ds, _ = planted()
    # two architectures, each with learned subjects of every rule
    ds = ds.assign_coords(architecture=("subject", np.tile(["mlp", "mlp", "mlp", "knet", "knet", "knet"], 4)))
    spec = IdentifySpec(**FAST, health={"min_gain": 0.05})
    for result in (
        generalization(ds, "architecture", spec, matrix=False, n_jobs=1),
        trajectory_access(ds, {"first_half": ScheduleSpec(window=(0.0, 0.5))}, spec, n_jobs=1),
        feature_importance(ds, spec, "random_forest", "weight", methods=("impurity",), n_jobs=1),
    ):
        assert result["subjects_excluded"].dims == ("health_rule",)
        assert result["subjects_excluded"].values.tolist() == [0, 0, 2, 1]
        assert format_health(result)[1].startswith("excluded 3 of 24 subjects that did not learn")


def test_too_few_learned_subjects_is_an_error_that_says_why():
    # rule 2 keeps 1 of 3 subjects: too few to split (rule 3's NaN subject is the diverged one here)
    ds, _ = planted(n_per_rule=3)
    with pytest.raises(SimlabError, match=f"class {RULES[2]} has 1 group.*after excluding 2 subjects that did not "
                       r"learn \(health min_gain 0.05\)"):
        identify(ds, IdentifySpec(**FAST, health={"min_gain": 0.05}), n_jobs=1)
