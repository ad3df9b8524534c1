"""A copy of the tiny run with every analysis of a run computed once (small, fast settings),
for the tests of the analyses, figures and report."""

from __future__ import annotations

import shutil

import pytest

# a small forest and two splits: the tests check how analyses are put together, not accuracy
FAST = {"splits": 2, "classifiers": [{"name": "random_forest", "params": {"n_estimators": 20}}]}
SMALL_GRID = {"units": [2, "all"], "noise": [0.0, 0.5], "sessions": [2], "identify": FAST}


@pytest.fixture(scope="session")
def analyzed_run(tiny_run, tmp_path_factory):
    """The tiny run with generalization, trajectory, robustness and confound results."""
    from simlab.analysis.analyses import run_analysis
    from simlab.specs.analyses import ANALYSES
    from simlab.rundir import RunDirectory

    path = tmp_path_factory.mktemp("analyzed") / tiny_run.name
    shutil.copytree(tiny_run, path)
    run = RunDirectory(path)
    settings = {
        "generalization": {"factors": ["architecture"], "identify": FAST},
        "trajectory": {"schedules": {"first_half": {"window": [0.0, 0.5]}, "sessions_2": {"count": 2}}, "identify": FAST},
        "robustness": SMALL_GRID,
        "confound": {"matching": "bins", "bins": 1, "curve_points": 5, "identify": FAST},
    }
    for name, values in settings.items():
        run_analysis(run, name, ANALYSES[name](**values), progress=False, echo=lambda *a, **k: None, n_jobs=1)
    return path
