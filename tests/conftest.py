"""Shared fixtures: one tiny protocol, trained once per test session.

``tiny_run`` is the run directory of that protocol (trained, recorded with the three default
rigs, identified). Treat it as read-only: a test that writes into a run directory takes
``tiny_run_copy``, a fresh copy of it, so tests stay independent of their order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Two architectures of different depth (so recordings of the shallow one are NaN-padded) x two
# rules x 3 replicates of narrow MLPs on digits: trains, records and identifies in seconds and
# still has every stage of the flow (4 populations, 2-3 layers, 4 sessions). Three replicates,
# not two: identification needs two training subjects per class for its inner
# cross-validation.
TINY_PROTOCOL = """\
# tests/conftest.py: the smallest cohort that exercises the whole flow
name: tiny-test
seed: 0
cohort:
  architecture: [shallow, deep]
  task: [digits]
  learning_rule: [sgdm, feedback_alignment]
  batch_size: [16]
  replicates: 3
architectures:
  shallow: {type: mlp, hidden: [16]}
  deep: {type: mlp, hidden: [16, 8]}
training:
  steps: 30
recording:
  sessions: 4
  stimuli: 16
analyses:
  identify: {splits: 2}
"""

# The rigs a run of TINY_PROTOCOL records (the protocol's defaults: one rig of each type).
TINY_RIGS = ("synapse", "electrophysiology", "paired")


def quiet(*args, **kwargs) -> None:
    """An ``echo`` for run_protocol that prints nothing."""


@pytest.fixture(scope="session")
def tiny_protocol(tmp_path_factory) -> Path:
    """The tiny protocol, written to a YAML file."""
    path = tmp_path_factory.mktemp("protocol") / "tiny-test.yaml"
    path.write_text(TINY_PROTOCOL)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_protocol, tmp_path_factory) -> Path:
    """The run directory of the tiny protocol (read-only for tests: use tiny_run_copy to write)."""
    from simlab.pipeline import run_protocol

    out = tmp_path_factory.mktemp("runs") / "tiny-test"
    run_protocol(tiny_protocol, out, progress=False, echo=quiet)
    return out


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run (file modification times kept) that a test may change."""
    copy = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, copy)
    return copy
