"""What the analyses of a run directory share: the recordings of the protocol's rigs, with
each subject's health metric before training (``initial_accuracy``) from the subject table
where a recording made before recordings carried it lacks it."""

from __future__ import annotations

from typing import Sequence

import xarray as xr

from simlab.errors import SimlabError
from simlab.rundir import RunDirectory

__all__ = ["open_run_recordings", "with_run_untrained"]


def with_run_untrained(run: RunDirectory, recording: xr.Dataset) -> xr.Dataset:
    """The recording with ``initial_accuracy`` from the run's subject table if it lacks it."""
    from simlab.analysis.health import UNTRAINED, with_untrained

    if UNTRAINED in recording.coords or not run.subjects_file.is_file():
        return recording
    with xr.open_dataset(run.subjects_file) as subjects:
        return with_untrained(recording, subjects.load())


def open_run_recordings(run: RunDirectory, rigs: Sequence[str] | None = None) -> xr.Dataset:
    """The recordings of the protocol's rigs (``rigs``: some of them), combined along observable."""
    from simlab.recording.contract import combine_recordings, open_recording

    protocol_rigs = list(run.protocol.rigs)
    names = protocol_rigs if rigs is None else list(rigs)
    recordings = []
    for name in names:
        if name not in protocol_rigs:
            raise SimlabError(f"rig {name!r} is not a rig of the protocol; it has: {', '.join(protocol_rigs)}")
        path = run.recording(name)
        if not path.is_file():
            raise SimlabError(f"{path}: no recording of rig {name!r}; run 'simlab run' first")
        recordings.append(open_recording(path))
    return with_run_untrained(run, recordings[0] if len(recordings) == 1 else combine_recordings(recordings))
