"""Tests for simlab.analysis.notebooks, the helpers the claim notebooks share."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from simlab.analysis import notebooks
from simlab.errors import SimlabError
from simlab.rundir import RunDirectory


def test_open_run_reads_the_environment(tiny_run, monkeypatch, tmp_path):
    monkeypatch.setenv("SIMLAB_RUN", str(tiny_run))
    assert notebooks.open_run().path == tiny_run
    monkeypatch.setenv("SIMLAB_RUN", str(tmp_path / "missing"))
    with pytest.raises(SimlabError, match="no run directory at " + str(tmp_path / "missing")):
        notebooks.open_run()


def test_a_relative_run_is_taken_from_where_jupyter_was_started(tiny_run, monkeypatch, tmp_path):
    """The kernel runs in analyses/, but SIMLAB_RUN=runs/x means runs/x of the launch directory."""
    monkeypatch.setenv("PWD", str(tiny_run.parent.parent))  # the shell's directory when jupyter started
    kernel_dir = tmp_path / "analyses"
    kernel_dir.mkdir()
    monkeypatch.chdir(kernel_dir)
    monkeypatch.setenv("SIMLAB_RUN", f"{tiny_run.parent.name}/{tiny_run.name}")
    assert notebooks.open_run().path == tiny_run
    monkeypatch.setenv("SIMLAB_RUN", "runs/not-there")
    with pytest.raises(SimlabError) as error:
        notebooks.open_run()
    assert str(tiny_run.parent.parent / "runs" / "not-there") in str(error.value)
    monkeypatch.setenv("SIMLAB_FIGURES", "figs")
    assert notebooks.figure_stem("x") == tiny_run.parent.parent / "figs" / "x"


def test_small_run_gets_the_protocol_settings_with_one_classifier(tiny_run):
    run = RunDirectory(tiny_run)
    assert notebooks.is_small(run) and notebooks.n_jobs(run) == 1
    identify = notebooks.analysis_spec(run, "identify")
    assert identify.classifiers == ["random_forest"] and identify.splits == 2  # the protocol's splits
    confound = notebooks.analysis_spec(run, "confound")  # not in the protocol: defaults
    assert confound.identify.splits == 2 and confound.identify.classifiers == ["random_forest"]
    assert confound.caliper == 0.05


def test_load_or_compute_prefers_the_file(tiny_run, capsys):
    run = RunDirectory(tiny_run)
    loaded = notebooks.load_or_compute(run, "identify", lambda: pytest.fail("computed although the file exists"))
    assert loaded.attrs["target"] == "learning_rule"
    assert "loaded" in capsys.readouterr().out
    made = xr.Dataset({"x": ("a", [1.0])})
    assert notebooks.load_or_compute(run, "not-there", lambda: made) is made
    assert not run.analysis("not-there", "nc").exists()  # computed results are not written


def test_levels_leave_diverged_subjects_out():
    ds = xr.Dataset(coords={"subject": [0, 1, 2], "task": ("subject", ["a", "b", "b"]),
                            "status": ("subject", ["diverged", "ok", "ok"])})
    assert notebooks.levels(ds, "task") == ["b"]
    assert notebooks.levels(ds, "missing") == []


def test_wilson_verdict_and_holm_table():
    assert notebooks.wilson_verdict(0.6, 0.9, 0.5) == "above chance"
    assert notebooks.wilson_verdict(0.1, 0.4, 0.5) == "below chance"
    assert notebooks.wilson_verdict(0.4, 0.7, 0.5) == "not distinguishable from chance"
    table = notebooks.holm_table([{"ttest_pvalue": p} for p in (0.01, 0.04, 0.03)])
    # Holm by hand: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 0.04)
    assert np.allclose(table["p_holm"], [0.03, 0.06, 0.06])
    assert list(table["reject"]) == [True, False, False]


def test_show_displays_a_matplotlib_figure(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython import display as ipd

    shown = []
    monkeypatch.setattr(ipd, "display", shown.append)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    notebooks.show(fig)
    assert shown[0].data.startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def test_split_by_measure_leaves_single_observables_out():
    results = xr.Dataset(coords={"feature_set": ["weight", "all", "weight_raw_norm"],
                                 "feature_kind": ("feature_set", ["measure", "all", "observable"])})
    assert notebooks.split_by_measure(results) == ["weight", "all"]
