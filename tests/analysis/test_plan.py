"""Tests for the design planner on a hand-made robustness grid whose answers are worked out by
hand."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from simlab.analysis.identify import write_results
from simlab.analysis.plan import format_plan, lower_bound, plan_design
from simlab.cli.main import main
from simlab.errors import SimlabError

UNITS = ["all", "4", "16"]  # deliberately not in size order: the planner orders by units_recorded
RECORDED = [100.0, 4.0, 16.0]
NOISE = [0.0, 0.5, 1.0]


def hand_grid() -> xr.Dataset:
    """One rig, one classifier; lower Wilson bounds set by hand (rows: units as in UNITS).

    at noise 0:   4 -> 0.80 (fails), 16 -> 0.92, all -> 0.95: fewest units 16
    at noise 0.5: 4 -> 0.93, 16 -> 0.85 (fails), all -> 0.91: 4 passes alone, so 'all'
    at noise 1:   every cell fails
    with all units: 0 -> 0.95, 0.5 -> 0.91, 1 -> 0.70: the most noise is 0.5
    sessions 2 -> 0.5, 3 -> 0.95, 6 -> 0.96: the fewest sessions is 3
    """
    low = np.array([[0.95, 0.91, 0.70], [0.80, 0.93, 0.60], [0.92, 0.85, 0.50]])
    mean = low + 0.04
    sem = np.full(low.shape, 0.01)
    s_low = np.array([0.5, 0.95, 0.96])
    cell = ("rig", "units", "noise", "classifier")
    scell = ("rig", "sessions", "classifier")
    return xr.Dataset(
        {
            "accuracy_mean": (cell, mean[None, :, :, None]),
            "accuracy_sem": (cell, sem[None, :, :, None]),
            "accuracy_low": (cell, low[None, :, :, None]),
            "units_recorded": (("rig", "units"), np.array([RECORDED])),
            "session_accuracy_mean": (scell, (s_low + 0.03)[None, :, None]),
            "session_accuracy_sem": (scell, np.full((1, 3, 1), 0.01)),
            "session_accuracy_low": (scell, s_low[None, :, None]),
            "n_test": (("rig",), np.array([24])),
        },
        coords={"rig": ["ephys"], "units": UNITS, "noise": NOISE, "classifier": ["rf"], "sessions": [2, 3, 6],
                "measure": ("rig", ["activation"])},
        attrs={"splits": 10, "chance": 0.25, "target": "learning_rule"},
    )


def test_plan_answers_worked_out_by_hand():
    (plan,) = plan_design(hand_grid(), 0.9)
    assert plan.fewest_units.setting == "16" and plan.fewest_units.bound == pytest.approx(0.92)
    assert plan.most_noise.setting == "0.5" and plan.most_noise.bound == pytest.approx(0.91)
    assert plan.fewest_sessions.setting == "3" and plan.fewest_sessions.bound == pytest.approx(0.95)
    assert plan.units_per_noise == {0.0: "16", 0.5: "all", 1.0: "none"}
    assert plan.clearing == ["units 4 noise 0.5", "units 16 noise 0", "units all noise 0", "units all noise 0.5"]


def test_plan_split_criterion_is_the_t_bound():
    grid = hand_grid()
    bound = lower_bound(grid, "split")
    expected = grid["accuracy_mean"] - stats.t.ppf(0.975, 9) * grid["accuracy_sem"]
    np.testing.assert_allclose(bound.values, expected.values)
    # mean - 2.262 * 0.01 = low + 0.0174: 4 units at noise 0 (0.8174) still fails, so 16 again
    (plan,) = plan_design(grid, 0.9, criterion="split")
    assert plan.fewest_units.setting == "16"


def test_plan_bootstrap_criterion_reads_the_subject_bootstrap_bound():
    grid = hand_grid()
    with pytest.raises(SimlabError, match="no subject bootstrap bounds"):
        lower_bound(grid, "bootstrap")
    # the subject bootstrap is wider: 16 units at noise 0 now fails (0.88), so only 'all' clears
    boot = grid["accuracy_low"].copy(data=grid["accuracy_low"].values - 0.04)
    grid = grid.assign(accuracy_boot_low=boot,
                       session_accuracy_boot_low=grid["session_accuracy_low"] - 0.04)
    (plan,) = plan_design(grid, 0.9, criterion="bootstrap")
    assert plan.fewest_units.setting == "all" and plan.fewest_units.bound == pytest.approx(0.91)
    assert plan.fewest_sessions.setting == "3" and plan.fewest_sessions.bound == pytest.approx(0.91)
    assert "subject bootstrap" in format_plan([plan], 0.9, "bootstrap", grid)


def test_plan_reports_when_nothing_qualifies():
    (plan,) = plan_design(hand_grid(), 0.99)
    assert plan.fewest_units is None and plan.most_noise is None and plan.fewest_sessions is None
    text = format_plan([plan], 0.99, "wilson", hand_grid())
    assert "none in the grid clears the target" in text and "best cell: units all, noise 0" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.5}, "in \\(0, 1\\]"),
    ({"target": 0.9, "rigs": ["synapse"]}, "not in the robustness grid"),
    ({"target": 0.9, "classifier": "svm"}, "classifier 'svm'"),
    ({"target": 0.9, "criterion": "bayes"}, "unknown criterion"),
])
def test_plan_refuses_bad_requests(kwargs, message):
    with pytest.raises(SimlabError, match=message):
        plan_design(hand_grid(), **kwargs)


def test_cli_plan_reads_the_run_grid(tiny_run_copy, capsys):
    write_results(hand_grid(), tiny_run_copy / "analyses" / "robustness.nc", force=True)
    assert main(["plan", str(tiny_run_copy), "--target", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "fewest units: 16 per site" in out and "most noise: 0.5 sd" in out and "fewest sessions: 3" in out
    assert "Wilson" in out
