"""Every analysis of a run directory, by the name it has under ``analyses:`` in a protocol.

An analysis reads the run's recordings (and subject table), returns one or more xarray
Datasets, and is written as ``RUN/analyses/<stem>.nc`` with its printed table next to it
(``<stem>.txt``). ``simlab run`` and the analysis subcommands both go through
:func:`run_analysis`, so a protocol entry and a command give the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import xarray as xr
from pydantic import BaseModel

from simlab.errors import SimlabError
from simlab.fileio import write_text_atomic
from simlab.rundir import RunDirectory

__all__ = ["RUNNERS", "Runner", "format_result", "load_result", "output_stems", "run_analysis"]


@dataclass(frozen=True)
class Runner:
    """How one kind of analysis names its outputs, computes them, and prints them."""

    stems: Callable[[BaseModel], list[str]]
    compute: Callable[..., dict[str, xr.Dataset]]  # (run, spec, progress, echo, n_jobs)
    table: Callable[[xr.Dataset], str]


def _recordings(run: RunDirectory, spec) -> xr.Dataset:
    from simlab.analysis.common import open_run_recordings

    return open_run_recordings(run, getattr(spec, "rigs", None))


def _identify(run, spec, progress, echo, n_jobs):
    from simlab.analysis.identify import identify

    return {"identify": identify(_recordings(run, spec), spec, progress=progress, n_jobs=n_jobs)}


def _generalization(run, spec, progress, echo, n_jobs):
    from simlab.analysis.generalization import generalization

    ds = _recordings(run, spec)
    return {
        f"generalization-{factor}": generalization(ds, factor, spec.identify, spec.matrix, progress, n_jobs)
        for factor in spec.factors
    }


def _trajectory(run, spec, progress, echo, n_jobs):
    from simlab.analysis.trajectory import trajectory_access

    return {"trajectory": trajectory_access(_recordings(run, spec), spec.schedules, spec.identify, progress, n_jobs)}


def _robustness(run, spec, progress, echo, n_jobs):
    from simlab.analysis.robustness import robustness

    return {"robustness": robustness(run, spec, progress, echo, n_jobs)}


def _confound(run, spec, progress, echo, n_jobs):
    from simlab.analysis.confound import confound

    subjects = xr.open_dataset(run.subjects_file).load()
    result = confound(_recordings(run, spec), subjects, spec.identify, spec.matching, spec.caliper, spec.bins,
                      spec.curve_points, progress, n_jobs)
    return {"confound": result}


def _table(module: str, name: str) -> Callable[[xr.Dataset], str]:
    def table(result: xr.Dataset) -> str:
        import importlib

        return getattr(importlib.import_module(f"simlab.analysis.{module}"), name)(result)

    return table


RUNNERS: dict[str, Runner] = {
    "identify": Runner(lambda spec: ["identify"], _identify, _table("identify", "format_table")),
    "generalization": Runner(
        lambda spec: [f"generalization-{f}" for f in spec.factors], _generalization,
        _table("generalization", "format_generalization"),
    ),
    "trajectory": Runner(lambda spec: ["trajectory"], _trajectory, _table("trajectory", "format_trajectory")),
    "robustness": Runner(lambda spec: ["robustness"], _robustness, _table("robustness", "format_robustness")),
    "confound": Runner(lambda spec: ["confound"], _confound, _table("confound", "format_confound")),
}


def output_stems(name: str, spec: BaseModel) -> list[str]:
    """The result files (without suffix) that analysis ``name`` writes under ``analyses/``."""
    if name not in RUNNERS:
        raise SimlabError(f"unknown analysis {name!r}; expected one of {', '.join(RUNNERS)}")
    return RUNNERS[name].stems(spec)


def run_analysis(
    run: RunDirectory, name: str, spec: BaseModel, force: bool = False, progress: bool = True,
    echo: Callable = print, n_jobs: int | None = None,
) -> list[Path]:
    """Compute analysis ``name`` on ``run`` and write its results and tables.

    Results that exist are kept (and echoed) unless ``force``; returns the NetCDF paths.
    """
    from simlab.analysis.identify import write_results

    stems = output_stems(name, spec)
    paths = [run.analysis(stem, "nc") for stem in stems]
    if all(p.exists() for p in paths) and not force:
        for p in paths:
            echo(f"analysis {p} exists, kept")
        return paths
    runner = RUNNERS[name]
    results = runner.compute(run, spec, progress, echo, n_jobs)
    for stem, path in zip(stems, paths):
        write_results(results[stem], path, force=True)
        table = runner.table(results[stem])
        write_text_atomic(run.analysis(stem, "txt"), table + "\n", force=True)
        run.log(f"analysis: {name} -> {path}")
        echo(table)
    return paths


def format_result(result: xr.Dataset) -> str | None:
    """The printed table of a run-analysis result, by its schema (None: not one of them)."""
    schema = str(result.attrs.get("schema", ""))
    for name, runner in RUNNERS.items():
        if name != "identify" and schema.startswith(f"simlab.{name}/"):
            return runner.table(result)
    return None


def load_result(path: str | Path) -> xr.Dataset:
    """An analysis result file, loaded into memory (the file is closed)."""
    path = Path(path)
    if not path.is_file():
        raise SimlabError(f"{path}: no such analysis result")
    with xr.open_dataset(path) as ds:
        return ds.load()
