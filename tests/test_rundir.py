"""The run directory: the one place that knows where each output of a run lives."""

from __future__ import annotations

import pytest

from simlab.rundir import RunDirectory, recording_name
from simlab.specs.rigs import RigSpec

BASE = RigSpec(type="electrophysiology", seed=1)


@pytest.mark.parametrize(
    "changes, name",
    [
        ({}, "electrophysiology"),  # the rig as it is: the file simlab run writes
        ({"units": 20, "noise": 0.5}, "electrophysiology-units20-noise0.5"),
        ({"units": 0.25, "seed": 3}, "electrophysiology-units0.25-seed3"),
        ({"noise_model": "poisson", "rate_gain": 5.0}, "electrophysiology-noise_modelpoisson-rate_gain5.0"),
        ({"schedule": {"count": 6, "spacing": "log"}}, "electrophysiology-count6-spacinglog"),
        ({"schedule": {"window": (0.0, 0.2)}}, "electrophysiology-window0.0_0.2"),
        ({"stimuli": {"source": "noise", "size": 64}, "keep_units": True},
         "electrophysiology-sourcenoise-size64-seed0-keep_units"),
    ],
)
def test_a_recording_name_is_the_rig_and_what_differs(changes, name):
    spec = BASE.model_copy(update={k: v for k, v in changes.items() if k not in ("schedule", "stimuli")})
    if "schedule" in changes or "stimuli" in changes:
        spec = RigSpec(**{**BASE.model_dump(), **changes})
    assert recording_name("electrophysiology", spec, BASE) == name


def test_different_settings_never_share_a_name():
    variants = [BASE.model_copy(update=u) for u in ({"units": 1}, {"units": 1.0}, {"noise": 1.0}, {"seed": 1 + 1})]
    names = {recording_name("e", spec, BASE) for spec in variants}
    assert len(names) == len(variants)


def test_paths_live_under_the_run(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.recording_for("synapse", RigSpec(type="synapse", units=4), RigSpec(type="synapse")) == (
        tmp_path / "recordings" / "synapse-units4.nc"
    )
    assert run.analysis("identify", "nc") == tmp_path / "analyses" / "identify.nc"
    assert run.robustness_recording("x") == tmp_path / "recordings" / "robustness" / "x.nc"
    assert run.rig_stimuli("digits", "noise", 64, 0) == tmp_path / "stimuli" / "digits-noise-n64-seed0.npz"
    assert run.recording_files() == {} and run.analysis_files() == {} and run.shard_files() == {}
