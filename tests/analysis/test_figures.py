"""Tests for the figures: every analysis of the tiny run is drawn, as valid PNG and SVG, and
the trajectory figure's numbers are the per-rule site means computed by hand."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from simlab.analysis.common import open_run_recordings
from simlab.analysis.figures import draw_run_figures, plot_trajectories, site_trajectories
from simlab.errors import SimlabError
from simlab.rundir import RunDirectory

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _valid(figure) -> None:
    assert figure.png.read_bytes().startswith(PNG_SIGNATURE)
    import matplotlib.image

    assert matplotlib.image.imread(figure.png).ndim == 3
    root = ET.parse(figure.svg).getroot()
    assert root.tag.endswith("svg")


@pytest.fixture(scope="module")
def figures(analyzed_run):
    return draw_run_figures(RunDirectory(analyzed_run))


def test_every_analysis_is_drawn_as_png_and_svg(figures, analyzed_run):
    names = {f.png.stem for f in figures}
    analyses = {p.stem for p in (analyzed_run / "analyses").glob("*.nc")}
    assert names == analyses | {"trajectories"}
    for figure in figures:
        _valid(figure)


def test_trajectory_numbers_are_site_means_by_rule(analyzed_run):
    ds = open_run_recordings(RunDirectory(analyzed_run))
    t = site_trajectories(ds, "weight_raw_norm")
    obs = ds["observation"].sel(observable="weight_raw_norm").values  # (subject, layer, session)
    real = ds["layer_name"].values != ""
    for rule in ("sgdm", "feedback_alignment"):
        mine = obs[(ds["learning_rule"].values == rule)[:, None] & real]  # (site, session)
        np.testing.assert_allclose(t["mean"].sel(label=rule).values, mine.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(t["sem"].sel(label=rule).values,
                                   mine.std(axis=0, ddof=1) / np.sqrt(len(mine)), rtol=1e-5)


def test_trajectory_figure_refuses_an_unknown_observable(analyzed_run, tmp_path):
    ds = open_run_recordings(RunDirectory(analyzed_run))
    with pytest.raises(SimlabError, match="weight_raw_nothing"):
        plot_trajectories(ds, tmp_path / "t", ["weight_raw_nothing"])
    _valid(plot_trajectories(ds, tmp_path / "t", ["activation_abs_mean"]))


def test_importance_figure(analyzed_run, tmp_path):
    from simlab.analysis.figures import plot_importance
    from simlab.analysis.importance import importance_for
    from simlab.specs.analyses import IdentifySpec

    ds = open_run_recordings(RunDirectory(analyzed_run), ["synapse"])
    spec = IdentifySpec(splits=2, classifiers=[{"name": "random_forest", "params": {"n_estimators": 10}}])
    _valid(plot_importance(importance_for(ds, spec, n_jobs=1), tmp_path / "importance"))
