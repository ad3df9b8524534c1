"""What the claim notebooks in ``analyses/`` share: which run, which settings, load or compute.

A notebook reads ``RUN/analyses/<stem>.nc`` when ``simlab run`` (or a subcommand) wrote it and
otherwise computes the same analysis in memory with the protocol's settings, never writing
into the run (only robustness re-recordings are cached, as ``simlab robustness`` caches them).
A small run (few subjects or sessions, like the test suite's) gets small settings, so every
notebook also runs in seconds there.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Callable

import xarray as xr

from simlab.errors import SimlabError
from simlab.rundir import RunDirectory

__all__ = [
    "DEFAULT_RUN",
    "analysis_spec",
    "figure_stem",
    "holm_table",
    "is_small",
    "launch_directory",
    "levels",
    "load_or_compute",
    "n_jobs",
    "open_run",
    "robustness_grid",
    "show",
    "split_by_measure",
    "user_path",
    "wilson_verdict",
]

DEFAULT_RUN = "runs/nayebi2020"
SMALL_SUBJECTS = 24  # fewer usable subjects than this: a test-sized run
SMALL_SESSIONS = 6


def launch_directory() -> Path:
    """The directory the user started Jupyter (or nbconvert) in.

    A kernel runs in the notebook's folder (analyses/), but it inherits the environment of the
    shell that started Jupyter, whose ``PWD`` is where the user typed the command; relative
    paths a user gives (``SIMLAB_RUN=runs/quickstart``) mean paths from there.
    """
    launched = os.environ.get("PWD")
    return Path(launched) if launched and Path(launched).is_dir() else Path.cwd()


def user_path(text: str | os.PathLike) -> Path:
    """A path the user gave, absolute: a relative one is taken from :func:`launch_directory`."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else (launch_directory() / path).resolve()


def open_run(default: str = DEFAULT_RUN) -> RunDirectory:
    """The run directory named by ``$SIMLAB_RUN`` (else ``default``), relative paths taken from
    the directory Jupyter was started in; the error shows the absolute path it looked at."""
    given = os.environ.get("SIMLAB_RUN", default)
    path = user_path(given)
    if not path.is_dir():
        source = "SIMLAB_RUN" if "SIMLAB_RUN" in os.environ else "the default run"
        raise SimlabError(
            f"{source} {given!r}: no run directory at {path} (relative paths are taken from the directory "
            f"Jupyter was started in, {launch_directory()}); run 'simlab run' first or set SIMLAB_RUN"
        )
    return RunDirectory.existing(path)


def is_small(run: RunDirectory) -> bool:
    """A run too small for the full grids (the tests' tiny run): few subjects or sessions."""
    with xr.open_dataset(run.subjects_file) as subjects:
        return subjects.sizes["subject"] < SMALL_SUBJECTS or subjects.sizes["session"] <= SMALL_SESSIONS


def n_jobs(run: RunDirectory) -> int | None:
    """Worker processes for a notebook's computations: one on a small run (starting workers
    would take longer than the work), else one per CPU."""
    return 1 if is_small(run) else None


def analysis_spec(run: RunDirectory, name: str):
    """The protocol's ``analyses: name`` settings, or that analysis's defaults with the
    protocol's ``identify`` settings (so splits and classifiers match the run's identify).

    On a small run, what a notebook computes uses the random forest alone, to stay fast.
    """
    from simlab.specs.analyses import ANALYSES, IdentifySpec

    analyses = run.protocol.analyses
    identify = analyses.get("identify", IdentifySpec())
    if name == "identify":
        spec = identify
    else:
        spec = analyses[name] if name in analyses else ANALYSES[name](identify=identify)
    if not is_small(run):
        return spec
    fast = {"classifiers": ["random_forest"]}
    if name == "identify":
        return spec.model_copy(update=fast)
    return spec.model_copy(update={"identify": spec.identify.model_copy(update=fast)})


def load_or_compute(run: RunDirectory, stem: str, compute: Callable[[], xr.Dataset]) -> xr.Dataset:
    """``RUN/analyses/<stem>.nc`` if it exists, else ``compute()`` (not written); says which."""
    from simlab.analysis.analyses import load_result

    path = run.analysis(stem, "nc")
    if path.is_file():
        print(f"loaded {path}")
        return load_result(path)
    print(f"{path} not found: computing it now (in memory, not written)")
    return compute()


def levels(ds: xr.Dataset, factor: str) -> list[str]:
    """The levels of a subject factor among subjects that trained without diverging."""
    if factor not in ds.coords:
        return []
    values = ds[factor].values.astype(str)
    if "status" in ds.coords:
        values = values[ds["status"].values.astype(str) == "ok"]
    return sorted(set(values))


def split_by_measure(results: xr.Dataset) -> list[str]:
    """The feature sets of an identify result that are measures or ``all`` (not single observables)."""
    sets = [str(f) for f in results["feature_set"].values]
    if "feature_kind" not in results.coords:
        return sets
    return [f for f in sets if str(results["feature_kind"].sel(feature_set=f).values) != "observable"]


def wilson_verdict(low: float, high: float, chance: float) -> str:
    """Above, below or indistinguishable from chance, by a 95% interval."""
    if low > chance:
        return "above chance"
    if high < chance:
        return "below chance"
    return "not distinguishable from chance"


def robustness_grid(run: RunDirectory) -> xr.Dataset:
    """``RUN/analyses/robustness.nc``, or the grid computed now: the protocol's settings, or on a
    small run two unit counts x two noise levels and two session counts (re-recorded from the
    snapshots and cached under ``RUN/recordings/robustness/``)."""
    from simlab.analysis.robustness import robustness
    from simlab.specs.analyses import RobustnessSpec

    def compute() -> xr.Dataset:
        from simlab.training.accelerators import enable_compilation_cache

        enable_compilation_cache()  # as simlab run does: each noisy cell otherwise compiles anew
        spec = analysis_spec(run, "robustness")
        if is_small(run) and "robustness" not in run.protocol.analyses:
            with xr.open_dataset(run.subjects_file) as subjects:
                n_sessions = subjects.sizes["session"]
            spec = RobustnessSpec(units=[4, "all"], noise=[0.0, 1.0], sessions=sorted({2, n_sessions}),
                                  identify=spec.identify)
            print(f"small run: a {len(spec.units)} x {len(spec.noise)} grid, sessions {spec.sessions}")
        return robustness(run, spec, n_jobs=n_jobs(run))

    return load_or_compute(run, "robustness", compute)


def figure_stem(name: str) -> Path:
    """Where a notebook's figure files go: ``$SIMLAB_FIGURES`` (relative to the launch
    directory) or a temporary folder."""
    folder = os.environ.get("SIMLAB_FIGURES")
    return (user_path(folder) if folder else Path(_temporary_folder())) / name


_FOLDER: list[str] = []


def _temporary_folder() -> str:
    if not _FOLDER:
        _FOLDER.append(tempfile.mkdtemp(prefix="simlab-figures-"))
    return _FOLDER[0]


def show(figure) -> None:
    """Display a figure in the notebook: a :class:`simlab.analysis.figures.Figure` (its PNG) or
    a matplotlib figure (drawn to PNG, whatever the backend, then closed)."""
    from IPython.display import Image, display

    if hasattr(figure, "png"):
        display(Image(filename=str(figure.png)))
        return
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    display(Image(data=buffer.getvalue()))


def holm_table(rows: list[dict], pvalue: str = "ttest_pvalue", alpha: float = 0.05):
    """A pandas table of comparisons with ``p_holm`` and ``reject`` added over its rows."""
    import pandas as pd

    from simlab.analysis.statistics import holm

    table = pd.DataFrame(rows)
    adjusted, reject = holm(table[pvalue].values, alpha)
    table["p_holm"], table["reject"] = adjusted, reject
    return table
