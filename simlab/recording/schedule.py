"""Which snapshot sessions a rig records: the experimentalist's recording schedule.

A schedule can only pick among the sessions the run snapshotted; when it asks for what the
snapshot store cannot serve, the error lists the sessions that exist.
"""

from __future__ import annotations

import numpy as np

from simlab.errors import SimlabError
from simlab.specs.rigs import ScheduleSpec


def _existing(steps: np.ndarray, total_steps: int) -> str:
    shown = ", ".join(f"{s} ({s / total_steps:.2f})" for s in steps)
    return f"the run has {len(steps)} sessions at steps (fraction of training) {shown}"


def select_sessions(session_steps, total_steps: int, schedule: ScheduleSpec) -> np.ndarray:
    """Indices (into the run's sessions) of the sessions to record, in training order."""
    steps = np.asarray(session_steps)
    fraction = steps / total_steps
    start, end = schedule.window
    candidates = np.flatnonzero((fraction >= start - 1e-12) & (fraction <= end + 1e-12))
    if len(candidates) == 0:
        raise SimlabError(f"schedule window [{start}, {end}] holds no session; {_existing(steps, total_steps)}")
    candidates = candidates[:: schedule.every]
    if schedule.count is None:
        return candidates
    count = schedule.count
    if count > len(candidates):
        raise SimlabError(
            f"schedule asks for {count} sessions but only {len(candidates)} remain after window "
            f"[{start}, {end}] and every {schedule.every}; {_existing(steps, total_steps)}"
        )
    if schedule.spacing == "linear":  # evenly in training steps, each target's nearest session
        targets = np.linspace(steps[candidates[0]], steps[candidates[-1]], count)
        chosen = candidates[np.abs(steps[candidates][None, :] - targets[:, None]).argmin(axis=1)]
    else:  # geometrically in session order: dense early in training, sparse late
        positions = np.round(np.geomspace(1.0, len(candidates), count)).astype(int) - 1
        for i in range(1, count):  # where early positions collide, take the next free session
            positions[i] = max(positions[i], positions[i - 1] + 1)
        chosen = candidates[positions]  # count <= len(candidates), so the last stays in range
    if len(np.unique(chosen)) < count:
        picked = ", ".join(str(steps[i]) for i in chosen)
        raise SimlabError(
            f"schedule asks for {count} {schedule.spacing}-spaced sessions, but the snapshots are too sparse to "
            f"give {count} distinct ones (nearest: steps {picked}); {_existing(steps, total_steps)}"
        )
    return chosen
