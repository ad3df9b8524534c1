"""Recordings of the tiny run that keep unit responses, and their NWB exports, made once per
test session: a Poisson rig (exported as a Units table) and an acute lognormal one (exported
as ROI responses)."""

from __future__ import annotations

import pytest

pytest.importorskip("pynwb")

RIGS = {
    "poisson": {"units": 6, "noise_model": "poisson", "keep_units": True},
    "lognormal": {"units": 5, "sampling": "acute", "noise_model": "lognormal", "noise": 0.3, "keep_units": True},
}


@pytest.fixture(scope="session")
def kept(tiny_run):
    """name -> the tiny run's electrophysiology recording with kept unit responses."""
    import simlab

    return {name: simlab.record(tiny_run, "electrophysiology", progress=False, **settings)
            for name, settings in RIGS.items()}


@pytest.fixture(scope="session")
def exported(kept, tmp_path_factory):
    """name -> the NWB files of that recording, one per subject, in its subject order."""
    import simlab

    out = tmp_path_factory.mktemp("nwb")
    return {name: simlab.export_nwb(recording, out / name, progress=False) for name, recording in kept.items()}
