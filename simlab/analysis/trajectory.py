"""Identification from limited access to the trajectory: only the start or the end of
training, every k-th session, or a few sessions.

A schedule picks sessions of an existing recording exactly as a rig's schedule picks
snapshots (:func:`simlab.recording.schedule.select_sessions`), so "the first quarter" means
the same fraction of training here and in ``simlab record --window 0:0.25``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.analysis.analyses import register_analysis
from simlab.analysis.health import copy_health, format_health
from simlab.analysis.identify import identify
from simlab.errors import SimlabError
from simlab.recording.schedule import select_sessions
from simlab.specs.analyses import IdentifySpec, TrajectorySpec
from simlab.specs.rigs import ScheduleSpec

__all__ = ["FULL", "describe_schedule", "format_trajectory", "select_access", "trajectory_access"]

SCHEMA = "simlab.trajectory/1"
FULL = "all"


def _total_steps(ds: xr.Dataset) -> int:
    """Training steps of the run, from the sessions' ``step`` and ``fraction`` coordinates."""
    if "step" not in ds.coords or "fraction" not in ds.coords:
        raise SimlabError("the recording has no 'step' and 'fraction' coordinates on 'session'")
    step, fraction = ds["step"].values, ds["fraction"].values
    last = int(np.argmax(fraction))
    if fraction[last] <= 0:
        raise SimlabError("the recording holds only the session at step 0; nothing to subset")
    return int(round(step[last] / fraction[last]))


def select_access(ds: xr.Dataset, schedule: ScheduleSpec) -> xr.Dataset:
    """The recording restricted to the sessions ``schedule`` picks (window, every, count)."""
    picked = select_sessions(ds["step"].values, _total_steps(ds), schedule)
    return ds.isel(session=picked)


def describe_schedule(schedule: ScheduleSpec) -> str:
    """A short text for a schedule, e.g. ``window 0-0.25, every 2, 3 linear``."""
    parts = []
    if tuple(schedule.window) != (0.0, 1.0):
        parts.append(f"window {schedule.window[0]:g}-{schedule.window[1]:g}")
    if schedule.every != 1:
        parts.append(f"every {schedule.every}")
    if schedule.count is not None:
        parts.append(f"{schedule.count} sessions, {schedule.spacing}")
    return ", ".join(parts) or "all sessions"


def trajectory_access(
    ds: xr.Dataset,
    schedules: Mapping[str, ScheduleSpec],
    spec: IdentifySpec = IdentifySpec(),
    progress: bool = False,
    n_jobs: int | None = None,
) -> xr.Dataset:
    """``identify`` on the full recording (``access="all"``) and on each schedule's sessions.

    The splits are the same for every access (same sites, same seed), so accuracies can be
    compared split by split.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording with ``step`` and ``fraction`` coordinates on ``session``.
    schedules : mapping of str to ScheduleSpec
        Named session choices (``window``, ``every``, ``count``, ``spacing``, as in a rig's
        schedule); ``all``, the full trajectory, is always included and may not be a name.
    spec : IdentifySpec
        The identification settings.
    progress : bool
        Show a progress bar over the schedules.
    n_jobs : int, optional
        Worker processes, as for :func:`~simlab.analysis.identify.identify`.

    Returns
    -------
    xarray.Dataset
        identify's results stacked along ``access`` (``all`` first, then the schedules), with
        coordinates ``n_sessions``, ``steps`` (the training steps kept) and ``schedule`` (a
        description) on ``access``.

    Examples
    --------
    >>> from simlab.analysis.common import open_run_recordings
    >>> from simlab.rundir import RunDirectory
    >>> recording = open_run_recordings(RunDirectory("runs/tiny"))
    >>> access = trajectory_access(recording, {"first_half": ScheduleSpec(window=(0.0, 0.5))})
    >>> access["accuracy_mean"].sel(access=["all", "first_half"])
    """
    if FULL in schedules:
        raise SimlabError(f"a schedule may not be called {FULL!r}: that name is the full trajectory")
    names = [FULL, *schedules]
    chosen = {FULL: ds, **{name: select_access(ds, s) for name, s in schedules.items()}}
    results = []
    for name in tqdm(names, desc="trajectory access", unit="schedule", disable=not progress):
        res = identify(chosen[name], spec, progress=False, n_jobs=n_jobs)
        results.append(res.drop_vars([v for v in res.data_vars if "split" in res[v].dims and res[v].dtype.kind in "US"]))
    combined = xr.concat(results, dim="access", join="outer", combine_attrs="drop_conflicts", coords="minimal",
                         compat="override")
    steps = [",".join(str(int(s)) for s in chosen[n]["step"].values) for n in names]
    described = [describe_schedule(ScheduleSpec()) if n == FULL else describe_schedule(schedules[n]) for n in names]
    combined = combined.assign_coords(
        access=np.array(names, dtype=str),
        n_sessions=("access", np.array([chosen[n].sizes["session"] for n in names], np.int64)),
        steps=("access", np.array(steps, dtype=str)),
        schedule=("access", np.array(described, dtype=str)),
    )
    combined.attrs.update({"schema": SCHEMA, "title": f"identification of {spec.target} from part of the trajectory"})
    return copy_health(results[0], combined)  # every access has the same subjects


def format_trajectory(results: xr.Dataset) -> str:
    """Mean ± s.e.m. accuracy per access (rows) and feature set (columns), per classifier."""
    sets = [str(f) for f in results["feature_set"].values]
    lines = [f"{results.attrs.get('title', 'trajectory access')} (chance {float(results.attrs.get('chance', np.nan)):.3f})",
             *format_health(results)]
    for clf in results["classifier"].values:
        lines += ["", f"{clf}:", f"  {'access':<16}{'sessions':>9}  " + "  ".join(f"{f:>16}" for f in sets)]
        for acc in results["access"].values:
            cell = results.sel(access=acc, classifier=clf)
            values = [
                f"{float(cell['accuracy_mean'].sel(feature_set=f)):.3f} ± {float(cell['accuracy_sem'].sel(feature_set=f)):.3f}"
                for f in sets
            ]
            lines.append(f"  {str(acc):<16}{int(cell['n_sessions']):>9}  " + "  ".join(f"{v:>16}" for v in values))
    lines += ["", "schedules:"] + [
        f"  {a}: {s} (steps {st})"
        for a, s, st in zip(results["access"].values, results["schedule"].values, results["steps"].values)
    ]
    return "\n".join(lines)


def _of_spec(
    recording: xr.Dataset, spec: TrajectorySpec, progress: bool = False, n_jobs: int | None = None
) -> xr.Dataset:
    return trajectory_access(recording, spec.schedules, spec.identify, progress, n_jobs)


register_analysis("trajectory", spec=TrajectorySpec, compute=_of_spec, table=format_trajectory)
