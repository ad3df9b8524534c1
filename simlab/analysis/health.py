"""Which subjects learned: the health check that every classifying analysis applies and reports.

A subject learned when it did not diverge and its final health metric (``final_accuracy``:
test accuracy, or linear-probe accuracy for self-supervised subjects) is at least a margin
above the same subject's value before training (``initial_accuracy``: session 0, step 0). A
classifier that names a rule because its subjects stayed at chance has learned "did not
learn", not the rule; so every identification says, per learning rule, how many subjects
learned, and with ``health: {min_gain: G}`` leaves out those that did not before any split.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from simlab.errors import SimlabError
from simlab.specs.analyses import HealthSpec

__all__ = ["UNTRAINED", "assess", "copy_health", "format_health", "learned", "untrained_values",
           "with_untrained"]

UNTRAINED = "initial_accuracy"
# accuracies are stored as float32: a gain equal to the margin must count as reaching it
_ROUNDING = 1e-6
_VARIABLES = ("subjects_total", "subjects_diverged", "subjects_learned", "subjects_not_learned",
              "subjects_excluded")
_ATTRS = ("health", "health_margin", "health_min_gain", "health_by")


def untrained_values(ds: xr.Dataset) -> np.ndarray | None:
    """Each subject's health metric before training: the ``initial_accuracy`` coordinate, else
    a subject table's ``test_accuracy`` at its session at step 0; None when ``ds`` has neither."""
    if UNTRAINED in ds.coords and ds[UNTRAINED].dims == ("subject",):
        return ds[UNTRAINED].values.astype(np.float64)
    if "test_accuracy" in ds.data_vars and "session_step" in ds.coords and int(ds["session_step"].values[0]) == 0:
        return ds["test_accuracy"].transpose("subject", "session").values[:, 0].astype(np.float64)
    return None


def with_untrained(recording: xr.Dataset, subjects: xr.Dataset) -> xr.Dataset:
    """The recording with ``initial_accuracy`` taken from the run's subject table where it
    lacks it (recorded before recordings carried it); the subjects must be the same, in order."""
    if UNTRAINED in recording.coords:
        return recording
    initial = untrained_values(subjects)
    if initial is None or list(recording["subject"].values) != list(subjects["subject"].values):
        return recording
    return recording.assign_coords({UNTRAINED: ("subject", initial.astype(np.float32))})


def _status_ok(ds: xr.Dataset) -> np.ndarray:
    if "status" in ds.coords or "status" in ds.data_vars:
        return ds["status"].values.astype(str) == "ok"
    return np.ones(ds.sizes["subject"], bool)


def learned(ds: xr.Dataset, margin: float) -> np.ndarray | None:
    """Per subject: not diverged and ``final_accuracy >= initial_accuracy + margin`` (a
    non-finite value never counts as learned); None when ``ds`` lacks either value."""
    initial = untrained_values(ds)
    if initial is None or "final_accuracy" not in ds:
        return None
    final = ds["final_accuracy"].values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        gained = final - initial >= margin - _ROUNDING
    return _status_ok(ds) & gained


def assess(ds: xr.Dataset, health: HealthSpec = HealthSpec(), by: str = "learning_rule") -> tuple[np.ndarray, xr.Dataset]:
    """The subjects an analysis keeps, and the health report (a Dataset over ``health_rule``).

    Kept: subjects that did not diverge, and, when ``health.min_gain`` is set, that learned by
    it. The report counts per level of ``by`` (the learning rule): ``subjects_total``,
    ``subjects_diverged``, ``subjects_learned``, ``subjects_not_learned`` (did not diverge,
    gained less than the margin) and ``subjects_excluded`` (left out for not learning; 0 when
    nothing is excluded); learned and not learned are absent where the untrained value is not
    known, which refuses ``min_gain``.
    """
    ok = _status_ok(ds)
    did_learn = learned(ds, health.margin)
    if did_learn is None and health.excludes:
        raise SimlabError(
            f"health min_gain {health.min_gain:g}: the recording has no {UNTRAINED!r} coordinate (the health "
            "metric before training; recorded by an older simlab): analyze the run directory, whose subject "
            "table has it, or record again"
        )
    keep = ok & did_learn if health.excludes else ok
    groups = ds[by].values.astype(str) if by in ds.coords else np.full(ds.sizes["subject"], "all")
    levels = list(dict.fromkeys(groups))
    member = groups[None, :] == np.array(levels, dtype=str)[:, None]  # (level, subject)

    def count(mask) -> np.ndarray:
        return (member & mask[None, :]).sum(axis=1).astype(np.int64)

    dims = ("health_rule",)
    data = {
        "subjects_total": (dims, member.sum(axis=1).astype(np.int64), {"long_name": "subjects"}),
        "subjects_diverged": (dims, count(~ok), {"long_name": "subjects whose training diverged (always left out)"}),
    }
    criterion = f"not diverged and final_accuracy >= initial_accuracy + {health.margin:g}"
    if did_learn is not None:
        not_learned = ok & ~did_learn
        data["subjects_learned"] = (dims, count(did_learn), {"long_name": f"subjects that learned: {criterion}"})
        data["subjects_not_learned"] = (dims, count(not_learned), {
            "long_name": f"subjects that did not diverge but gained less than {health.margin:g} over the untrained network"})
        data["subjects_excluded"] = (dims, count(not_learned if health.excludes else np.zeros_like(ok)), {
            "long_name": "subjects left out for not learning (health min_gain)"})
        text = f"learned: {criterion}; " + (
            f"those that did not are excluded (min_gain {health.min_gain:g})" if health.excludes
            else "those that did not are kept (no min_gain)")
    else:
        text = f"unknown: no {UNTRAINED} (the health metric before training) to compare final_accuracy with"
    attrs = {"health": text, "health_margin": float(health.margin), "health_by": by}
    if health.excludes:
        attrs["health_min_gain"] = float(health.min_gain)
    report = xr.Dataset(data, coords={"health_rule": np.array(levels, dtype=str)}, attrs=attrs)
    return keep, report


def copy_health(source: xr.Dataset, into: xr.Dataset) -> xr.Dataset:
    """``into`` with the health report (variables and attributes) of ``source``, if it has one."""
    present = [name for name in _VARIABLES if name in source]
    if not present:
        return into
    report = source[present].drop_vars([c for c in source[present].coords if c != "health_rule"])
    out = into.drop_vars([name for name in _VARIABLES if name in into]).merge(report)
    out.attrs = {**into.attrs, **{k: source.attrs[k] for k in _ATTRS if k in source.attrs}}
    return out


def _per_rule(result: xr.Dataset, name: str, of: str | None = None, only_nonzero: bool = False) -> str:
    rules = [str(r) for r in result["health_rule"].values]
    values = result[name].values
    total = result[of].values if of else None
    parts = [
        f"{rule} {int(v)}" + (f"/{int(t)}" if total is not None else "")
        for rule, v, t in zip(rules, values, total if total is not None else values)
        if not only_nonzero or v
    ]
    return ", ".join(parts)


def format_health(result: xr.Dataset) -> list[str]:
    """The lines a result's table prints about health: who learned, per rule, and who was
    excluded for not learning (none when the result has no health report)."""
    if "subjects_total" not in result:
        return []
    total = int(result["subjects_total"].sum())
    diverged = int(result["subjects_diverged"].sum())
    margin = float(result.attrs.get("health_margin", np.nan))
    by = str(result.attrs.get("health_by", "learning_rule"))
    if "subjects_learned" not in result:
        return [f"health: {result.attrs.get('health', 'unknown')}; {diverged} of {total} subjects diverged"]
    learned_count = int(result["subjects_learned"].sum())
    lines = [
        f"learned (not diverged, final_accuracy >= initial_accuracy + {margin:g}): {learned_count} of {total} "
        f"subjects; per {by}: {_per_rule(result, 'subjects_learned', of='subjects_total')}"
    ]
    not_learned = int(result["subjects_not_learned"].sum())
    excluded = int(result["subjects_excluded"].sum())
    if "health_min_gain" in result.attrs:
        which = _per_rule(result, "subjects_excluded", only_nonzero=True)
        lines.append(f"excluded {excluded} of {total} subjects that did not learn" + (f": {which}" if which else ""))
    elif not_learned:
        which = _per_rule(result, "subjects_not_learned", only_nonzero=True)
        lines.append(f"kept {not_learned} subjects that did not learn ({which}); health min_gain excludes them")
    return lines
