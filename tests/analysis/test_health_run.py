"""The health check on a run directory: recordings carry the untrained value, the commands and
the API exclude planted subjects that did not learn, and every analysis result reports it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simlab
from simlab.cli.main import main

RIGS = ("synapse", "electrophysiology", "paired")
# the tiny run's subjects: sgdm shallow 0-2, feedback_alignment shallow 3-5, sgdm deep 6-8,
# feedback_alignment deep 9-11; these three are planted not to learn (gain 0)
NOT_LEARNED = [3, 6, 9]
EXCLUDED_LINE = "excluded 3 of 12 subjects that did not learn: sgdm 1, feedback_alignment 2"
FAST = ["--splits", "2", "--classifier", "linear_svm", "--quiet"]


def plant_gains(run, coordinate: bool = True) -> None:
    """Untrained values 0.10 below each final accuracy, equal to it for NOT_LEARNED, in the
    subject table (session 0) and the recordings; without ``coordinate``, as a run recorded
    before recordings carried ``initial_accuracy``: the subject table's session 0 only."""
    table = xr.load_dataset(run / "subjects.nc")
    initial = table["final_accuracy"].values - np.float32(0.10)
    initial[NOT_LEARNED] = table["final_accuracy"].values[NOT_LEARNED]
    table["test_accuracy"][:, 0] = initial
    table = table.assign_coords(initial_accuracy=("subject", initial))
    if not coordinate:
        table = table.drop_vars("initial_accuracy")
    table.to_netcdf(run / "subjects.nc")
    for rig in RIGS:
        path = run / "recordings" / f"{rig}.nc"
        recording = xr.load_dataset(path).drop_vars("initial_accuracy")
        if coordinate:
            recording = recording.assign_coords(initial_accuracy=("subject", initial))
        recording.to_netcdf(path)


def subjects_on_test(result) -> set[str]:
    """The subjects whose sites a result tested, in any split."""
    return {site.split(":")[0] for text in result["test_sites"].values for site in str(text).split(",")}


def test_recordings_carry_the_untrained_value(tiny_run):
    table = xr.load_dataset(tiny_run / "subjects.nc")
    np.testing.assert_array_equal(table["initial_accuracy"].values, table["test_accuracy"].values[:, 0])
    for rig in RIGS:
        recording = xr.load_dataset(tiny_run / "recordings" / f"{rig}.nc")
        np.testing.assert_array_equal(recording["initial_accuracy"].values, table["initial_accuracy"].values)


@pytest.mark.parametrize("coordinate", [True, False], ids=["recorded", "older run"])
def test_identify_excludes_the_subjects_that_did_not_learn(tiny_run_copy, capsys, coordinate):
    plant_gains(tiny_run_copy, coordinate)
    out_file = tiny_run_copy / "analyses" / "identify-health.nc"
    assert main(["identify", str(tiny_run_copy), *FAST, "--min-gain", "0.05", "--out", str(out_file)]) == 0
    assert EXCLUDED_LINE in capsys.readouterr().out
    result = xr.load_dataset(out_file)
    assert result["subjects_excluded"].sel(health_rule=["sgdm", "feedback_alignment"]).values.tolist() == [1, 2]
    assert result["subjects_learned"].sum().item() == 9
    assert result.attrs["n_subjects"] == 9
    names = xr.load_dataset(tiny_run_copy / "subjects.nc")["subject"].values
    assert subjects_on_test(result).isdisjoint(names[NOT_LEARNED])
    assert EXCLUDED_LINE in out_file.with_suffix(".txt").read_text()


def test_the_analysis_commands_and_the_api_exclude_them_too(tiny_run_copy, capsys):
    plant_gains(tiny_run_copy)
    assert main(["generalize", str(tiny_run_copy), "--factor", "architecture", "--no-matrix", "--splits", "2",
                 "--classifier", "linear_svm", "--min-gain", "0.05", "--force"]) == 0  # not --quiet: the table
    assert EXCLUDED_LINE in capsys.readouterr().out
    held_out = xr.load_dataset(tiny_run_copy / "analyses" / "generalization-architecture.nc")
    names = xr.load_dataset(tiny_run_copy / "subjects.nc")["subject"].values
    assert subjects_on_test(held_out).isdisjoint(names[NOT_LEARNED])
    assert held_out["subjects_excluded"].sum().item() == 3

    run = simlab.open_run(tiny_run_copy)
    api = simlab.identify(run, splits=2, classifiers=["linear_svm"], health={"min_gain": 0.05}, n_jobs=1)
    assert api.attrs["n_subjects"] == 9
    matched = simlab.confound(run, matching="bins", bins=1, curve_points=5, splits=2, classifiers=["linear_svm"],
                              health={"min_gain": 0.05}, n_jobs=1)
    assert matched["n_subjects"].sel(cohort="all").sum().item() == 9  # matching and baseline: learned only
    assert matched.attrs["baseline_subjects"] == 9
    assert (matched["matched_group"].values[NOT_LEARNED] == -1).all()
    assert matched["subjects_excluded"].sum().item() == 3


def test_info_health_marks_the_planted_cells(tiny_run_copy, capsys):
    plant_gains(tiny_run_copy)
    assert main(["info", str(tiny_run_copy), "--health"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| rule | shallow / digits | deep / digits |"
    assert lines[2].startswith("| sgdm |") and lines[2].count("did not learn") == 1
    assert lines[2].split("|")[3].strip().endswith("(1 did not learn)")  # subject 6: deep
    assert [c.strip().endswith("(1 did not learn)") for c in lines[3].split("|")[2:4]] == [True, True]
    assert "less than 0.05 above the same subject's untrained value" in "\n".join(lines)


def test_a_negative_min_gain_is_a_usage_error(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["identify", str(tiny_run), "--min-gain", "-0.1"])
    assert exit.value.code == 2
    assert "--min-gain" in capsys.readouterr().err
    with pytest.raises(simlab.SimlabError, match="min_gain"):
        simlab.identify(tiny_run, health={"min_gain": -0.1})


def test_every_analysis_of_a_run_reports_health(analyzed_run):
    for name in ("generalization-architecture", "trajectory", "robustness", "confound"):
        result = xr.load_dataset(analyzed_run / "analyses" / f"{name}.nc")
        assert result["subjects_total"].sum().item() == 12, name
        assert result["subjects_excluded"].sum().item() == 0, name  # reporting only, by default
        assert "learned (not diverged, final_accuracy >= initial_accuracy + 0.05)" in \
            (analyzed_run / "analyses" / f"{name}.txt").read_text(), name


def test_the_design_plan_repeats_the_grid_health(analyzed_run):
    from simlab.analysis.plan import format_plan, plan_design

    grid = xr.load_dataset(analyzed_run / "analyses" / "robustness.nc")
    text = format_plan(plan_design(grid, 0.6), 0.6, "wilson", grid)
    assert "learned (not diverged, final_accuracy >= initial_accuracy + 0.05)" in text
