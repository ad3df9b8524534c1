"""The experimental-design planner: from a robustness grid, the fewest units, the fewest
sessions and the most noise at which a rig still identifies the rule at a target accuracy.

"Still" is read strictly: a setting qualifies only if it and every easier setting along the
same axis clear the target (more units, more sessions, less noise), so one lucky cell below
a failing one is not the answer. "Clear the target" means its uncertainty does, by one of:

- ``wilson``: the lower end of the 95% Wilson interval of the mean split accuracy, with n the
  test sites of one split (``accuracy_low`` of the grid);
- ``split``: the lower end of the 95% t interval of the mean over splits
  (mean - t(0.975, splits - 1) x s.e.m.);
- ``mean``: the point estimate alone (no uncertainty; for comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import stats

from simlab.errors import SimlabError

__all__ = ["CRITERIA", "Choice", "RigPlan", "format_plan", "lower_bound", "plan_design"]

CRITERIA = ("wilson", "split", "mean")


@dataclass(frozen=True)
class Choice:
    """One setting the planner picked, and the accuracy it rests on."""

    setting: str  # e.g. "16", "all", "0.3", "6"
    accuracy: float
    bound: float  # the lower bound that cleared the target (= accuracy for 'mean')
    note: str = ""  # e.g. "median 16 recorded", "at noise 0"


@dataclass
class RigPlan:
    rig: str
    measure: str
    classifier: str
    fewest_units: Choice | None
    most_noise: Choice | None
    fewest_sessions: Choice | None
    units_per_noise: dict[float, str] = field(default_factory=dict)
    best: Choice | None = None  # the best cell, for when nothing qualifies
    clearing: list[str] = field(default_factory=list)  # every cell whose bound clears the target


def lower_bound(grid: xr.Dataset, criterion: str, prefix: str = "accuracy") -> xr.DataArray:
    """The lower bound of ``criterion`` for every cell of ``{prefix}_mean``."""
    mean = grid[f"{prefix}_mean"]
    if criterion == "wilson":
        return grid[f"{prefix}_low"]
    if criterion == "split":
        n = grid.attrs.get("splits") or grid.sizes.get("split")
        if not n or int(n) < 2:
            raise SimlabError("criterion 'split' needs at least 2 splits in the grid")
        return mean - stats.t.ppf(0.975, int(n) - 1) * grid[f"{prefix}_sem"]
    if criterion == "mean":
        return mean
    raise SimlabError(f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")


def _strict_first(passes: np.ndarray) -> int | None:
    """Index of the first element from which every later one passes (None if the last fails)."""
    if len(passes) == 0 or not passes[-1]:
        return None
    i = len(passes) - 1
    while i > 0 and passes[i - 1]:
        i -= 1
    return i


def _best_classifier(grid: xr.Dataset, rig: str) -> str:
    mean = grid["accuracy_mean"].sel(rig=rig).mean(dim=["units", "noise"])
    return str(mean["classifier"].values[int(np.nanargmax(mean.values))])


def plan_design(
    grid: xr.Dataset, target: float, rigs: list[str] | None = None, classifier: str | None = None,
    criterion: str = "wilson",
) -> list[RigPlan]:
    """The plan for each rig of a robustness grid (see the module docstring for the reading).

    Units are ordered by the median units a site recorded; ``classifier`` defaults, per rig,
    to the classifier with the highest mean accuracy over the grid.
    """
    if not 0.0 < target <= 1.0:
        raise SimlabError(f"--target is an accuracy in (0, 1]; got {target}")
    known = [str(r) for r in grid["rig"].values]
    for rig in rigs or []:
        if rig not in known:
            raise SimlabError(f"rig {rig!r} is not in the robustness grid; it has: {', '.join(known)}")
    if classifier is not None and classifier not in grid["classifier"].values:
        raise SimlabError(
            f"classifier {classifier!r} is not in the robustness grid; it has: "
            f"{', '.join(map(str, grid['classifier'].values))}"
        )
    low = lower_bound(grid, criterion)
    plans = []
    for rig in rigs or known:
        clf = classifier or _best_classifier(grid, rig)
        cell = grid.sel(rig=rig, classifier=clf)
        bound = low.sel(rig=rig, classifier=clf)
        order = np.argsort(cell["units_recorded"].values, kind="stable")
        units = [str(u) for u in cell["units"].values[order]]
        noise = sorted(float(n) for n in cell["noise"].values)
        recorded = {str(u): float(r) for u, r in zip(cell["units"].values, cell["units_recorded"].values)}

        def choice(sel: dict, setting: str, note: str, on=cell, lb=bound, prefix="accuracy") -> Choice:
            return Choice(setting, float(on[f"{prefix}_mean"].sel(sel)), float(lb.sel(sel)), note)

        def fewest_units_at(n: float) -> int | None:
            return _strict_first(np.array([float(bound.sel(units=u, noise=n)) >= target for u in units]))

        i = fewest_units_at(noise[0])
        fewest_units = None if i is None else choice(
            {"units": units[i], "noise": noise[0]}, units[i], f"median {recorded[units[i]]:g} recorded, at noise {noise[0]:g}")
        # the most noise: the last level from the quietest on that still passes, with the most units
        passes = np.array([float(bound.sel(units=units[-1], noise=n)) >= target for n in noise])
        j = _strict_first(passes[::-1])
        most_noise = None if j is None else choice(
            {"units": units[-1], "noise": noise[len(noise) - 1 - j]}, f"{noise[len(noise) - 1 - j]:g}",
            f"with {units[-1]} units")
        fewest_sessions = None
        if "session_accuracy_mean" in grid:
            s_low = lower_bound(grid, criterion, "session_accuracy").sel(rig=rig, classifier=clf)
            counts = sorted(int(s) for s in grid["sessions"].values)
            k = _strict_first(np.array([float(s_low.sel(sessions=s)) >= target for s in counts]))
            if k is not None:
                fewest_sessions = choice({"sessions": counts[k]}, str(counts[k]), "all units, no noise",
                                         on=cell, lb=s_low, prefix="session_accuracy")
        per_noise = {}
        for n in noise:
            i = fewest_units_at(n)
            per_noise[n] = "none" if i is None else units[i]
        flat = cell["accuracy_mean"].stack(cell_=("units", "noise"))
        b = int(np.nanargmax(flat.values))
        u_best, n_best = flat["cell_"].values[b]
        best = choice({"units": u_best, "noise": n_best}, f"units {u_best}, noise {float(n_best):g}", "")
        clearing = [f"units {u} noise {n:g}" for u in units for n in noise if float(bound.sel(units=u, noise=n)) >= target]
        plans.append(RigPlan(rig, str(cell["measure"].values), clf, fewest_units, most_noise, fewest_sessions,
                             per_noise, best, clearing))
    return plans


def _describe(c: Choice | None, what: str, unit: str) -> str:
    if c is None:
        return f"  {what}: none in the grid clears the target"
    return f"  {what}: {c.setting}{unit} ({c.note}): accuracy {c.accuracy:.3f}, lower bound {c.bound:.3f}"


def format_plan(plans: list[RigPlan], target: float, criterion: str, grid: xr.Dataset) -> str:
    """A short readable answer."""
    reading = {
        "wilson": "the lower end of the 95% Wilson interval (n = test sites of one split)",
        "split": "the lower end of the 95% t interval of the mean over splits",
        "mean": "the mean accuracy alone (no uncertainty)",
    }[criterion]
    n_test = {str(r): int(n) for r, n in zip(grid["rig"].values, grid["n_test"].values)} if "n_test" in grid else {}
    lines = [
        f"design for {target:.0%} accuracy identifying {grid.attrs.get('target', 'the rule')} "
        f"(chance {float(grid.attrs.get('chance', np.nan)):.3f}), {grid.attrs.get('splits')} splits;",
        f"a setting counts when {reading} reaches {target:g}, and so does every easier setting on its axis.",
    ]
    for p in plans:
        lines += ["", f"{p.rig} ({p.measure}), {p.classifier}" + (f", {n_test[p.rig]} test sites per split" if p.rig in n_test else "") + ":"]
        lines.append(_describe(p.fewest_units, "fewest units", " per site"))
        lines.append(_describe(p.most_noise, "most noise", " sd"))
        lines.append(_describe(p.fewest_sessions, "fewest sessions", ""))
        lines.append("  fewest units at each noise level: " + ", ".join(f"{n:g}: {u}" for n, u in p.units_per_noise.items()))
        lines.append("  cells clearing the target on their own: " + (", ".join(p.clearing) or "none"))
        if p.fewest_units is None and p.best is not None:
            lines.append(f"  best cell: {p.best.setting}: accuracy {p.best.accuracy:.3f}, lower bound {p.best.bound:.3f}")
    return "\n".join(lines)
