"""The experimental-design planner: from a robustness grid, the fewest units, the fewest
sessions and the most noise at which a rig still identifies the rule at a target accuracy.

"Still" is read strictly: a setting qualifies only if it and every easier setting along the
same axis clear the target (more units, more sessions, less noise), so one lucky cell below
a failing one is not the answer. "Clear the target" means its uncertainty does, by one of:

- ``wilson``: the lower end of the 95% Wilson interval of the mean split accuracy, with n the
  test sites of one split (``accuracy_low`` of the grid);
- ``bootstrap``: the lower end of the subject bootstrap 95% interval of the test predictions
  pooled across splits (``accuracy_boot_low``: tested subjects resampled, so it allows for
  the sites of one network not being independent);
- ``split``: the lower end of the 95% t interval of the mean over splits
  (mean - t(0.975, splits - 1) x s.e.m.);
- ``mean``: the point estimate alone (no uncertainty; for comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import stats

from simlab.analysis.health import format_health
from simlab.errors import SimlabError, parameter

__all__ = ["CRITERIA", "Choice", "RigPlan", "format_plan", "lower_bound", "plan_design"]

CRITERIA = ("wilson", "bootstrap", "split", "mean")


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
    if criterion == "bootstrap":
        if f"{prefix}_boot_low" not in grid:
            raise SimlabError("the robustness grid has no subject bootstrap bounds (made by an older simlab); "
                              "recompute it with simlab robustness --force")
        return grid[f"{prefix}_boot_low"]
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


@dataclass(frozen=True)
class _RigCells:
    """One rig's units x noise cells for one classifier, with the lower bound each clears.

    ``units`` are ordered by the median units a site recorded (fewest first), ``noise`` from
    the quietest level up: the order in which settings get harder.
    """

    cell: xr.Dataset
    bound: xr.DataArray
    units: list[str]
    noise: list[float]
    target: float

    @classmethod
    def of(cls, grid: xr.Dataset, low: xr.DataArray, rig: str, classifier: str, target: float) -> "_RigCells":
        cell = grid.sel(rig=rig, classifier=classifier)
        order = np.argsort(cell["units_recorded"].values, kind="stable")
        units = [str(u) for u in cell["units"].values[order]]
        noise = sorted(float(n) for n in cell["noise"].values)
        return cls(cell, low.sel(rig=rig, classifier=classifier), units, noise, target)

    def clears(self, units: str, noise: float) -> bool:
        return float(self.bound.sel(units=units, noise=noise)) >= self.target

    def choice(self, units: str, noise: float, setting: str, note: str) -> Choice:
        at = {"units": units, "noise": noise}
        return Choice(setting, float(self.cell["accuracy_mean"].sel(at)), float(self.bound.sel(at)), note)

    def fewest_units_at(self, noise: float) -> int | None:
        """Index into ``units`` of the fewest that clear the target at ``noise``, strictly."""
        return _strict_first(np.array([self.clears(u, noise) for u in self.units]))


def _fewest_units(rig: _RigCells) -> Choice | None:
    """The fewest units that clear the target at the quietest noise level."""
    noise = rig.noise[0]
    i = rig.fewest_units_at(noise)
    if i is None:
        return None
    recorded = float(rig.cell["units_recorded"].sel(units=rig.units[i]))
    return rig.choice(rig.units[i], noise, rig.units[i], f"median {recorded:g} recorded, at noise {noise:g}")


def _most_noise(rig: _RigCells) -> Choice | None:
    """The last noise level from the quietest on that still clears the target, with the most units."""
    most = rig.units[-1]
    passes = np.array([rig.clears(most, n) for n in rig.noise])
    j = _strict_first(passes[::-1])
    if j is None:
        return None
    noise = rig.noise[len(rig.noise) - 1 - j]
    return rig.choice(most, noise, f"{noise:g}", f"with {most} units")


def _fewest_sessions(grid: xr.Dataset, rig: str, classifier: str, criterion: str, target: float) -> Choice | None:
    """The fewest sessions of the grid's session sweep (all units, no noise) that clear the target."""
    if "session_accuracy_mean" not in grid:
        return None
    mean = grid["session_accuracy_mean"].sel(rig=rig, classifier=classifier)
    low = lower_bound(grid, criterion, "session_accuracy").sel(rig=rig, classifier=classifier)
    counts = sorted(int(s) for s in grid["sessions"].values)
    k = _strict_first(np.array([float(low.sel(sessions=s)) >= target for s in counts]))
    if k is None:
        return None
    return Choice(str(counts[k]), float(mean.sel(sessions=counts[k])), float(low.sel(sessions=counts[k])),
                  "all units, no noise")


def _best_cell(rig: _RigCells) -> Choice:
    flat = rig.cell["accuracy_mean"].stack(cell_=("units", "noise"))
    units, noise = flat["cell_"].values[int(np.nanargmax(flat.values))]
    return rig.choice(units, noise, f"units {units}, noise {float(noise):g}", "")


def _plan_rig(grid: xr.Dataset, low: xr.DataArray, rig: str, classifier: str, target: float, criterion: str) -> RigPlan:
    cells = _RigCells.of(grid, low, rig, classifier, target)
    per_noise = {}
    for n in cells.noise:
        i = cells.fewest_units_at(n)
        per_noise[n] = "none" if i is None else cells.units[i]
    clearing = [f"units {u} noise {n:g}" for u in cells.units for n in cells.noise if cells.clears(u, n)]
    return RigPlan(
        rig, str(cells.cell["measure"].values), classifier, _fewest_units(cells), _most_noise(cells),
        _fewest_sessions(grid, rig, classifier, criterion, target), per_noise, _best_cell(cells), clearing,
    )


def _check_request(grid: xr.Dataset, target: float, rigs: list[str] | None, classifier: str | None) -> None:
    """Refuse a target outside (0, 1] and rigs or a classifier the grid does not hold."""
    if not 0.0 < target <= 1.0:
        raise SimlabError(f"{parameter('target', target)}: the accuracy to reach must be in (0, 1]")
    known = [str(r) for r in grid["rig"].values]
    for rig in rigs or []:
        if rig not in known:
            raise SimlabError(f"rig {rig!r} is not in the robustness grid; it has: {', '.join(known)}")
    if classifier is not None and classifier not in grid["classifier"].values:
        raise SimlabError(
            f"classifier {classifier!r} is not in the robustness grid; it has: "
            f"{', '.join(map(str, grid['classifier'].values))}"
        )


def plan_design(
    grid: xr.Dataset, target: float, rigs: list[str] | None = None, classifier: str | None = None,
    criterion: str = "wilson",
) -> list[RigPlan]:
    """The plan for each rig of a robustness grid (see the module docstring for the reading).

    Parameters
    ----------
    grid : xarray.Dataset
        A robustness result (:func:`simlab.analysis.robustness.robustness`).
    target : float
        The accuracy to reach, in (0, 1].
    rigs : list of str, optional
        Rigs of the grid to plan for (default: all).
    classifier : str, optional
        A classifier of the grid (default: per rig, the one with the highest mean accuracy
        over the grid).
    criterion : {"wilson", "bootstrap", "split", "mean"}
        Which lower bound must reach the target (see :func:`lower_bound`).

    Returns
    -------
    list of RigPlan
        Per rig: the fewest units (at the quietest noise), the most noise (with the most
        units), the fewest sessions (from the grid's session sweep), the fewest units at each
        noise level, every cell that clears the target on its own, and the best cell. Units
        are ordered by the median units a site recorded.

    Examples
    --------
    >>> from simlab.analysis.analyses import load_result
    >>> grid = load_result("runs/tiny/analyses/robustness.nc")
    >>> print(format_plan(plan_design(grid, 0.9), 0.9, "wilson", grid))
    """
    _check_request(grid, target, rigs, classifier)
    low = lower_bound(grid, criterion)
    return [
        _plan_rig(grid, low, rig, classifier or _best_classifier(grid, rig), target, criterion)
        for rig in rigs or [str(r) for r in grid["rig"].values]
    ]


def _describe(c: Choice | None, what: str, unit: str) -> str:
    if c is None:
        return f"  {what}: none in the grid clears the target"
    return f"  {what}: {c.setting}{unit} ({c.note}): accuracy {c.accuracy:.3f}, lower bound {c.bound:.3f}"


def format_plan(plans: list[RigPlan], target: float, criterion: str, grid: xr.Dataset) -> str:
    """A short readable answer."""
    reading = {
        "wilson": "the lower end of the 95% Wilson interval (n = test sites of one split)",
        "bootstrap": "the lower end of the subject bootstrap 95% interval (tested subjects resampled)",
        "split": "the lower end of the 95% t interval of the mean over splits",
        "mean": "the mean accuracy alone (no uncertainty)",
    }[criterion]
    n_test = {str(r): int(n) for r, n in zip(grid["rig"].values, grid["n_test"].values)} if "n_test" in grid else {}
    lines = [
        f"design for {target:.0%} accuracy identifying {grid.attrs.get('target', 'the rule')} "
        f"(chance {float(grid.attrs.get('chance', np.nan)):.3f}), {grid.attrs.get('splits')} splits;",
        f"a setting counts when {reading} reaches {target:g}, and so does every easier setting on its axis.",
        *format_health(grid),
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
