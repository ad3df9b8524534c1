"""Robustness of identification to unit undersampling and measurement noise, per rig.

Every cell of the grid is a fresh recording of the same snapshots (never retraining), made by
the rig with its ``units`` and ``noise`` overridden, and cached under
``RUN/recordings/robustness/`` by the same settings-naming as ``simlab record``, so a rerun or
a wider grid re-records only the cells it lacks. A sweep of session counts (at all units and
no noise) subsets the recording's session axis instead, since fewer sessions need no new
recording.

Both rigs are identified on the same splits (same sites, same seed), so their accuracies are
compared split by split: paired tests per cell, Holm-corrected over the cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.analysis.analyses import register_analysis
from simlab.analysis.common import with_run_untrained
from simlab.analysis.health import copy_health, format_health
from simlab.analysis.identify import identify
from simlab.analysis.statistics import holm, paired_split_tests
from simlab.analysis.trajectory import select_access
from simlab.errors import SimlabError
from simlab.recording.contract import open_recording, write_recording
from simlab.recording.rigfiles import resolve_rig
from simlab.rundir import recording_name
from simlab.rundir import RunDirectory
from simlab.specs.analyses import IdentifySpec, RobustnessSpec
from simlab.specs.rigs import RigSpec, ScheduleSpec

__all__ = ["compare_rigs", "format_robustness", "grid_recording", "robustness", "split_interval"]

SCHEMA = "simlab.robustness/1"
CACHE = "robustness"


def _quiet(*args, **kwargs) -> None:
    pass


def cell_spec(run: RunDirectory, rig: str, units, noise: float, seed: int | None) -> tuple[str, RigSpec]:
    """The rig ``rig`` (a rig of the protocol or a rig type) with units, noise (and seed) set."""
    overrides = {"units": units, "noise": noise, **({"seed": seed} if seed is not None else {})}
    return resolve_rig(rig, run.protocol, overrides)


def grid_recording(
    run: RunDirectory, rig: str, units, noise: float, seed: int | None = None, progress: bool = False,
    echo: Callable = _quiet,
) -> xr.Dataset:
    """The recording of one grid cell, from the cache or recorded now (and cached)."""
    from simlab.recording.record import record_cohort

    name, spec = cell_spec(run, rig, units, noise, seed)
    _, base = resolve_rig(rig, run.protocol)
    path = run.robustness_recording(recording_name(name, spec, base))  # named as simlab record names it
    if not path.is_file():
        write_recording(record_cohort(run, name, spec, progress=progress, echo=echo), path)
        run.log(f"record: {name} {spec.model_dump(mode='json')} -> {path}")
    return with_run_untrained(run, open_recording(path))


def _measure(recording: xr.Dataset) -> str:
    measures = np.unique(recording["measure"].values.astype(str))
    if len(measures) != 1:
        raise SimlabError(f"a robustness rig records one measure; got {', '.join(measures)}")
    return str(measures[0])


def split_interval(mean, n_test, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval of a mean split accuracy, taking the test sites of ONE split as n.

    Splits reuse sites, so pooling their predictions would count a site several times; one
    split's test set is the sample size a new experiment would have. NaN where mean is NaN.
    """
    from statsmodels.stats.proportion import proportion_confint

    mean, n = np.asarray(mean, np.float64), np.asarray(n_test, np.float64)
    ok = np.isfinite(mean) & (n > 0)
    safe_n = np.where(ok, n, 1.0)
    low, high = proportion_confint(np.where(ok, mean, 0.0) * safe_n, safe_n, alpha=alpha, method="wilson")
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def _cell(recording: xr.Dataset, spec: IdentifySpec, n_jobs) -> tuple[xr.DataArray, str, int, xr.Dataset]:
    """Per-split accuracy (classifier, split) on the rig's measure, the test sites, their count,
    and the identification's results (for its health report and subject bootstrap bounds);
    the chance level in the accuracy's attrs."""
    measure = _measure(recording)
    res = identify(recording, spec, n_jobs=n_jobs)
    acc = res["accuracy"].sel(feature_set=measure)
    acc.attrs["chance"] = res.attrs["chance"]
    return acc, "|".join(res["test_sites"].values), int(res["n_test"].isel(split=0).max()), res


def _boot(res: xr.Dataset, recording: xr.Dataset) -> np.ndarray:
    """The subject bootstrap bounds (classifier, bound) of a cell's pooled test predictions."""
    return res["accuracy_mean_boot_ci"].sel(feature_set=_measure(recording)).transpose("classifier", "bound").values


@dataclass(frozen=True)
class _Grid:
    """What the units x noise cells gave, rig by rig."""

    accuracy: np.ndarray  # (rig, units, noise, classifier, split)
    boot: np.ndarray  # (rig, units, noise, classifier, bound): subject bootstrap 95% of pooled predictions
    recorded: np.ndarray  # (rig, units): median units (synapses) a site kept
    n_test: np.ndarray  # (rig,): test sites of one split
    test_sites: dict[str, set[str]]  # rig -> the test sites of its cells, one text per distinct set
    classifiers: np.ndarray
    chance: float
    health: xr.Dataset  # the first cell's results, whose health report every cell shares


def _units_noise_grid(run: RunDirectory, spec: RobustnessSpec, bar, echo: Callable, n_jobs) -> _Grid:
    """Record (or read from the cache) and identify every cell of the units x noise grid."""
    rigs, units = list(spec.rigs), [str(u) for u in spec.units]
    accuracy = recorded = None
    n_test, test_sites = {}, {}
    for r, u, n in ((r, u, n) for r in spec.rigs for u in spec.units for n in spec.noise):
        rec = grid_recording(run, r, u, n, spec.seed, echo=echo)
        acc, sites, n_test[r], res = _cell(rec, spec.identify, n_jobs)
        test_sites.setdefault(r, set()).add(sites)
        if accuracy is None:
            classifiers, chance, health = acc["classifier"].values, acc.attrs["chance"], res
            accuracy = np.full((len(rigs), len(units), len(spec.noise), len(classifiers), acc.sizes["split"]), np.nan)
            boot = np.full(accuracy.shape[:-1] + (2,), np.nan)
            recorded = np.zeros((len(rigs), len(units)))
        ri, ui, ni = rigs.index(r), units.index(str(u)), spec.noise.index(n)
        accuracy[ri, ui, ni] = acc.transpose("classifier", "split").values
        boot[ri, ui, ni] = _boot(res, rec)
        real = rec["layer_name"].values.astype(str) != ""
        recorded[ri, ui] = float(np.median(rec["n_recorded"].values[real]))
        bar.update(1)
    return _Grid(accuracy, boot, recorded, np.array([n_test[r] for r in rigs], np.int64), test_sites, classifiers, chance,
                 health)


def _session_sweep(run: RunDirectory, spec: RobustnessSpec, grid: _Grid, bar, echo: Callable,
                   n_jobs) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy (rig, sessions, classifier, split) from each count of ``spec.sessions`` evenly
    spaced sessions of each rig's recording at all units and no noise, and its subject
    bootstrap bounds (rig, sessions, classifier, bound)."""
    n_classifiers, n_splits = grid.accuracy.shape[-2:]
    accuracy = np.full((len(spec.rigs), len(spec.sessions), n_classifiers, n_splits), np.nan)
    boot = np.full(accuracy.shape[:-1] + (2,), np.nan)
    for ri, r in enumerate(spec.rigs):
        full = grid_recording(run, r, "all", 0.0, spec.seed, echo=echo)
        for si, count in enumerate(spec.sessions):
            if count > full.sizes["session"]:
                raise SimlabError(f"robustness sessions: {count} sessions asked, the run has {full.sizes['session']}")
            chosen = select_access(full, ScheduleSpec(count=count))
            acc, _, _, res = _cell(chosen, spec.identify, n_jobs)
            accuracy[ri, si] = acc.transpose("classifier", "split").values
            boot[ri, si] = _boot(res, chosen)
            bar.update(1)
    return accuracy, boot


def _over_splits(accuracy: np.ndarray, n_test: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, s.e.m. and Wilson bounds (:func:`split_interval`) over the last axis (splits),
    with ``n_test`` per rig (the first axis)."""
    n_splits = accuracy.shape[-1]
    mean = accuracy.mean(axis=-1)
    sem = accuracy.std(axis=-1, ddof=1) / np.sqrt(n_splits) if n_splits > 1 else np.full(mean.shape, np.nan)
    low, high = split_interval(mean, n_test.reshape((-1,) + (1,) * (mean.ndim - 1)))
    return mean, sem, low, high


def _grid_variables(run: RunDirectory, spec: RobustnessSpec, grid: _Grid) -> tuple[dict, dict]:
    dims = ("rig", "units", "noise", "classifier", "split")
    mean, sem, low, high = _over_splits(grid.accuracy, grid.n_test)
    data = {
        "accuracy": (dims, grid.accuracy, {"long_name": "test accuracy", "units": "1"}),
        "accuracy_mean": (dims[:-1], mean, {"long_name": "mean test accuracy over splits", "units": "1"}),
        "accuracy_sem": (dims[:-1], sem, {"long_name": "s.e.m. over splits", "units": "1"}),
        "accuracy_low": (dims[:-1], low, {"long_name": "95% Wilson lower bound (n = test sites of one split)"}),
        "accuracy_high": (dims[:-1], high, {"long_name": "95% Wilson upper bound (n = test sites of one split)"}),
        "accuracy_boot_low": (dims[:-1], grid.boot[..., 0], {
            "long_name": "subject bootstrap 95% lower bound of the test predictions pooled across splits"}),
        "accuracy_boot_high": (dims[:-1], grid.boot[..., 1], {
            "long_name": "subject bootstrap 95% upper bound of the test predictions pooled across splits"}),
        "units_recorded": (("rig", "units"), grid.recorded, {"long_name": "median units (synapses) recorded per site"}),
        "n_test": (("rig",), grid.n_test, {"long_name": "test sites per split"}),
    }
    coords = {
        "rig": np.array(spec.rigs, dtype=str),
        "units": np.array([str(u) for u in spec.units], dtype=str),
        "noise": np.array(spec.noise, np.float64),
        "classifier": np.array(grid.classifiers, dtype=str),
        "split": np.arange(grid.accuracy.shape[-1], dtype=np.int64),
        "measure": ("rig", np.array([_rig_measure(run, r) for r in spec.rigs], dtype=str)),
    }
    return data, coords


def _session_variables(spec: RobustnessSpec, sweep: tuple[np.ndarray, np.ndarray], grid: _Grid) -> tuple[dict, dict]:
    accuracy, boot = sweep
    mean, sem, low, high = _over_splits(accuracy, grid.n_test)
    dims = ("rig", "sessions", "classifier")
    data = {
        "session_accuracy": ((*dims, "split"), accuracy,
                             {"long_name": "test accuracy from this many sessions (all units, no noise)"}),
        "session_accuracy_mean": (dims, mean),
        "session_accuracy_sem": (dims, sem),
        "session_accuracy_low": (dims, low),
        "session_accuracy_high": (dims, high),
        "session_accuracy_boot_low": (dims, boot[..., 0]),
        "session_accuracy_boot_high": (dims, boot[..., 1]),
    }
    return data, {"sessions": np.array(spec.sessions, np.int64)}


def _paired_rigs(spec: RobustnessSpec, grid: _Grid) -> tuple[str, str] | None:
    """The two rigs to compare (``spec.compare``, else the first two), or None when there are
    not two or their cells were not all tested on the same sites (nothing to pair)."""
    compare = tuple(spec.compare) if spec.compare else tuple(spec.rigs[:2])
    if len(compare) != 2 or not all(len(grid.test_sites[r]) == 1 for r in compare):
        return None
    return compare if grid.test_sites[compare[0]] == grid.test_sites[compare[1]] else None


def robustness(
    run: RunDirectory, spec: RobustnessSpec = RobustnessSpec(), progress: bool = False, echo: Callable = _quiet,
    n_jobs: int | None = None,
) -> xr.Dataset:
    """Identification accuracy over the units x noise grid of each rig and over session counts.

    Each cell re-records the run's snapshots with the rig's ``units`` and ``noise`` overridden
    (cached under ``RUN/recordings/robustness/``; never retraining), then identifies the target
    from the rig's measure. Every cell uses the same splits, so two rigs are compared split by
    split.

    Parameters
    ----------
    run : RunDirectory
        A run directory with snapshots (made by ``simlab run``).
    spec : RobustnessSpec
        The grid: ``rigs`` (rigs of the protocol or rig types), ``units``, ``noise``,
        ``sessions`` (counts to sweep at all units and no noise; empty: no sweep), ``seed``
        (one rig seed for every rig, default each rig's own), ``compare`` (the two rigs tested
        against each other, default the first two) and ``identify`` (the identification
        settings).
    progress : bool
        Show a progress bar over the cells.
    echo : callable
        Where re-recording reports what it does (default: nowhere).
    n_jobs : int, optional
        Worker processes, as for :func:`~simlab.analysis.identify.identify`.

    Returns
    -------
    xarray.Dataset
        ``accuracy`` (rig, units, noise, classifier, split) with ``accuracy_mean``,
        ``accuracy_sem``, Wilson bounds ``accuracy_low``/``accuracy_high``
        (:func:`split_interval`), ``units_recorded`` (median units or synapses a site kept),
        ``session_accuracy`` (rig, sessions, classifier, split) likewise summarized, and the
        paired comparison of the compared rigs (:func:`compare_rigs`).

    Examples
    --------
    >>> from simlab.rundir import RunDirectory
    >>> grid = robustness(RunDirectory("runs/tiny"), RobustnessSpec(units=[4, "all"], noise=[0.0, 0.5], sessions=[2, 3]))
    >>> grid["accuracy_mean"].sel(rig="synapse", classifier="random_forest")
    """
    bar = tqdm(total=len(spec.rigs) * (len(spec.units) * len(spec.noise) + len(spec.sessions)), desc="robustness",
               unit="cell", disable=not progress)
    grid = _units_noise_grid(run, spec, bar, echo, n_jobs)
    sessions = _session_sweep(run, spec, grid, bar, echo, n_jobs) if spec.sessions else None
    bar.close()
    data, coords = _grid_variables(run, spec, grid)
    if sessions is not None:
        for into, more in zip((data, coords), _session_variables(spec, sessions, grid)):
            into.update(more)
    result = xr.Dataset(data, coords=coords)
    compared = _paired_rigs(spec, grid)
    if compared is not None:
        result = result.merge(compare_rigs(result, *compared))
    result.attrs = {
        "schema": SCHEMA,
        "title": f"robustness of {spec.identify.target} identification to units and noise",
        "target": spec.identify.target,
        "chance": float(grid.chance),
        "splits": int(grid.accuracy.shape[-1]),
        "seed": int(spec.identify.seed),
        "rig_seed": "each rig's own" if spec.seed is None else int(spec.seed),
        "compared": ",".join(compared) if compared is not None else "",
        "interval": "Wilson 95% with p = mean split accuracy and n = test sites of one split; "
        "accuracy_boot_low/high: subject bootstrap 95% of the test predictions pooled across splits "
        "(identify's accuracy_mean_boot_ci)",
        "cache": f"recordings/{CACHE}/",
    }
    return copy_health(grid.health, result)


def _rig_measure(run: RunDirectory, rig: str) -> str:
    from simlab.recording.rigs import Rig

    return Rig(cell_spec(run, rig, "all", 0.0, None)[1]).measure


def compare_rigs(result: xr.Dataset, a: str, b: str) -> xr.Dataset:
    """Rig ``b`` against rig ``a`` in every cell: paired t-test and Wilcoxon signed-rank test
    over splits (:func:`simlab.analysis.statistics.paired_split_tests`), Holm-corrected over
    the units x noise cells of each classifier."""
    acc = result["accuracy"]
    clfs, units, noise = acc["classifier"].values, acc["units"].values, acc["noise"].values
    shape = (len(clfs), len(units), len(noise))
    out = {k: np.full(shape, np.nan) for k in ("mean_difference", "ttest_pvalue", "wilcoxon_pvalue")}
    for c, clf in enumerate(clfs):
        for u, unit in enumerate(units):
            for n, level in enumerate(noise):
                cell = acc.sel(classifier=clf, units=unit, noise=level)
                tests = paired_split_tests(cell.sel(rig=b).values, cell.sel(rig=a).values)
                for k in out:
                    out[k][c, u, n] = tests[k]
    holm_p = np.full(shape, np.nan)
    reject = np.zeros(shape, bool)
    for c in range(len(clfs)):
        adjusted, rejected = holm(out["ttest_pvalue"][c].reshape(-1))
        holm_p[c], reject[c] = adjusted.reshape(shape[1:]), rejected.reshape(shape[1:])
    dims = ("classifier", "units", "noise")
    return xr.Dataset({
        "difference_mean": (dims, out["mean_difference"], {"long_name": f"mean accuracy {b} minus {a} over splits"}),
        "p_value": (dims, out["ttest_pvalue"], {"long_name": "two-sided paired t-test p-value over splits"}),
        "p_wilcoxon": (dims, out["wilcoxon_pvalue"], {"long_name": "Wilcoxon signed-rank p-value over splits"}),
        "p_holm": (dims, holm_p, {"long_name": "Holm-corrected t-test p-value over the units x noise cells"}),
        "significant": (dims, reject.astype(np.int8), {"long_name": "1 where p_holm < 0.05"}),
    })


def format_robustness(result: xr.Dataset, classifier: str | None = None) -> str:
    """Accuracy mean ± s.e.m. per units (rows) x noise (columns), per rig; then the comparison."""
    clf = classifier or str(result["classifier"].values[0])
    noise = [float(n) for n in result["noise"].values]
    lines = [f"{result.attrs.get('title', 'robustness')}: {clf}, {result.attrs.get('splits')} splits, "
             f"chance {float(result.attrs.get('chance', np.nan)):.3f}", *format_health(result)]
    for rig in result["rig"].values:
        cell = result.sel(rig=rig, classifier=clf)
        lines += ["", f"{rig} ({str(cell['measure'].values)}): rows units (median recorded), columns noise sd"]
        lines.append(f"  {'units':<14}" + "".join(f"{n:>16g}" for n in noise))
        for u in result["units"].values:
            c = cell.sel(units=u)
            label = f"{u} ({float(c['units_recorded']):g})"
            lines.append(f"  {label:<14}" + "".join(
                f"{float(c['accuracy_mean'].sel(noise=n)):>9.3f} ±{float(c['accuracy_sem'].sel(noise=n)):.3f}" for n in noise))
        if "session_accuracy_mean" in result:
            lines.append("  sessions (all units, no noise): " + ", ".join(
                f"{int(s)}: {float(cell['session_accuracy_mean'].sel(sessions=s)):.3f}" for s in result["sessions"].values))
    if "p_holm" in result:
        a, b = result.attrs["compared"].split(",")
        lines += ["", f"{b} minus {a} (paired t over splits, Holm over cells): difference (p_holm)"]
        lines.append(f"  {'units':<14}" + "".join(f"{n:>16g}" for n in noise))
        for u in result["units"].values:
            c = result.sel(classifier=clf, units=u)
            lines.append(f"  {str(u):<14}" + "".join(
                f"{float(c['difference_mean'].sel(noise=n)):>+8.3f} ({float(c['p_holm'].sel(noise=n)):.3f})" for n in noise))
    return "\n".join(lines)


register_analysis("robustness", spec=RobustnessSpec, compute=robustness, table=format_robustness, reads=("run",))
