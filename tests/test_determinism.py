"""Reproducibility: the same protocol run twice gives the same recordings and results.

Training, unit sampling, noise and identification are all seeded from the protocol, so a
second run into another directory must reproduce the session's tiny run exactly (only the
``created`` and ``history`` attributes, which say when and how a file was made, differ).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from simlab.recording.contract import open_recording
from simlab.pipeline import run_protocol

RIGS = ("synapse", "electrophysiology", "paired")
WHEN = ("created", "history")


def without_when(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k not in WHEN}


@pytest.fixture(scope="module")
def second_run(tiny_protocol, tmp_path_factory):
    """The tiny protocol run again, into another directory."""
    out = tmp_path_factory.mktemp("determinism") / "again"
    run_protocol(tiny_protocol, out, progress=False, echo=lambda *args, **kwargs: None)
    return out


@pytest.mark.parametrize("rig", RIGS)
def test_same_protocol_gives_identical_recordings(tiny_run, second_run, rig):
    first = open_recording(tiny_run / "recordings" / f"{rig}.nc")
    again = open_recording(second_run / "recordings" / f"{rig}.nc")
    # values (NaN where NaN), dims, every coordinate and variable attribute
    xr.testing.assert_identical(first.drop_attrs(deep=False), again.drop_attrs(deep=False))
    assert without_when(first.attrs) == without_when(again.attrs)
    assert np.array_equal(first["observation"].values, again["observation"].values, equal_nan=True)


def test_same_protocol_gives_identical_subject_tables(tiny_run, second_run):
    first = xr.open_dataset(tiny_run / "subjects.nc").load()
    again = xr.open_dataset(second_run / "subjects.nc").load()
    xr.testing.assert_identical(first, again)


def test_same_protocol_gives_identical_identification(tiny_run, second_run):
    first = xr.open_dataset(tiny_run / "analyses" / "identify.nc").load()
    again = xr.open_dataset(second_run / "analyses" / "identify.nc").load()
    np.testing.assert_array_equal(first["accuracy"].values, again["accuracy"].values)
    xr.testing.assert_identical(first, again)
    table = "analyses/identify.txt"
    assert (tiny_run / table).read_text() == (second_run / table).read_text()
