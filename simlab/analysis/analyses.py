"""Every analysis of a run directory, registered once by the module that implements it.

An analysis is a function from xarray objects (the run's recordings, its subject table) and
its settings (a pydantic model: ``analyses: NAME: {...}`` in a protocol) to one or more xarray
Datasets, plus a function that prints a result as a table. Its module registers it at the
bottom with :func:`register_analysis`, which puts an :class:`AnalysisEntry` in
:data:`simlab.registry.ANALYSES`; the protocol schema checks ``analyses:`` entries against the
registry, and ``simlab run`` and the analysis subcommands both go through :func:`run_analysis`,
which writes each result as ``RUN/analyses/<stem>.nc`` with its table next to it
(``<stem>.txt``), so a protocol entry and a command give the same files.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import xarray as xr
from pydantic import BaseModel

from simlab.analysis.common import open_run_recordings
from simlab.errors import SimlabError
from simlab.fileio import atomic_path, write_text_atomic
from simlab.registry import ANALYSES
from simlab.rundir import RunDirectory

__all__ = [
    "OPTIONS",
    "READS",
    "AnalysisEntry",
    "compute_analysis",
    "format_result",
    "load_result",
    "output_stems",
    "register_analysis",
    "run_analysis",
    "write_result_and_table",
    "write_results",
]

# What an analysis may read from a run, passed to its compute function in the order it lists them.
READS = ("recording", "subjects", "run")
# Keywords a compute function receives when its signature names them.
OPTIONS = ("progress", "echo", "n_jobs")


@dataclass(frozen=True)
class AnalysisEntry:
    """A registered analysis (see :func:`register_analysis` for the meaning of each field)."""

    name: str
    spec: type[BaseModel]
    compute: Callable[..., xr.Dataset | Mapping[str, xr.Dataset]]
    table: Callable[[xr.Dataset], str]
    outputs: Callable[[BaseModel], list[str]]
    reads: tuple[str, ...] = ("recording",)
    options: tuple[str, ...] = ()  # the OPTIONS compute takes


def _options_taken(compute: Callable) -> tuple[str, ...]:
    """The OPTIONS that ``compute`` accepts as keywords (all of them with ``**kwargs``)."""
    parameters = inspect.signature(compute).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return OPTIONS
    named = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return tuple(option for option in OPTIONS if option in named)


def register_analysis(
    name: str,
    *,
    spec: type[BaseModel],
    compute: Callable[..., xr.Dataset | Mapping[str, xr.Dataset]],
    table: Callable[[xr.Dataset], str],
    outputs: Callable[[BaseModel], Sequence[str]] | None = None,
    reads: Sequence[str] = ("recording",),
    replace: bool = False,
) -> AnalysisEntry:
    """Make an analysis known by ``name`` to protocols (``analyses: {name: ...}``) and to
    :func:`run_analysis`.

    Parameters
    ----------
    name : str
        The analysis's name in a protocol; a Python identifier.
    spec : type of pydantic.BaseModel
        The model of its settings; the protocol schema validates the entry with it. A field
        ``rigs`` (a list of rig names, or None for all) chooses the recordings it reads.
    compute : callable
        ``compute(*inputs, spec, **options)``: the inputs named by ``reads`` in order, then the
        settings; ``options`` are those of ``progress``, ``echo`` and ``n_jobs`` that its
        signature names. Returns one Dataset, or a mapping from output stem to Dataset.
    table : callable
        ``table(result) -> str``: one result as the text written to ``<stem>.txt``.
    outputs : callable, optional
        ``outputs(spec) -> [stems]``: the result files it writes under ``analyses/``
        (default: one, called ``name``).
    reads : sequence of str
        What it reads from the run: ``recording`` (the recordings of the spec's ``rigs``, else
        of every rig of the protocol, combined along ``observable``), ``subjects`` (the subject
        table, ``subjects.nc``), ``run`` (the :class:`~simlab.rundir.RunDirectory` itself, for
        an analysis that re-records snapshots).
    replace : bool
        Replace an analysis of the same name instead of refusing it.

    Returns
    -------
    AnalysisEntry
        The entry stored in :data:`simlab.registry.ANALYSES`.

    Examples
    --------
    The mean of each observable over subjects, per session, as a protocol entry
    ``analyses: {means: {rigs: [synapse]}}``:

    >>> from pydantic import BaseModel
    >>> class MeansSpec(BaseModel):
    ...     rigs: list[str] | None = None
    >>> def means(recording, spec):
    ...     return recording[["observation"]].mean("subject")
    >>> entry = register_analysis("means", spec=MeansSpec, compute=means, table=str)
    """
    if not (isinstance(spec, type) and issubclass(spec, BaseModel)):
        raise SimlabError(f"analysis {name!r}: spec is a pydantic model class; got {spec!r}")
    functions = {"compute": compute, "table": table, **({} if outputs is None else {"outputs": outputs})}
    for what, function in functions.items():
        if not callable(function):
            raise SimlabError(f"analysis {name!r}: {what} must be callable; got {function!r}")
    reads = tuple(reads)
    unknown = [r for r in reads if r not in READS]
    if unknown or not reads:
        raise SimlabError(f"analysis {name!r}: reads is one or more of {', '.join(READS)}; got {list(reads)}")
    entry = AnalysisEntry(
        name=name,
        spec=spec,
        compute=compute,
        table=table,
        outputs=(lambda settings: [name]) if outputs is None else (lambda settings: list(outputs(settings))),
        reads=reads,
        options=_options_taken(compute),
    )
    return ANALYSES.register(name, entry, replace=replace)


def _settings(entry: AnalysisEntry, spec: BaseModel | Mapping | None) -> BaseModel:
    """The analysis's settings: a model instance as given, a mapping validated, None the defaults."""
    if spec is None:
        return entry.spec()
    if isinstance(spec, Mapping):
        return entry.spec.model_validate(spec)
    return spec


def output_stems(name: str, spec: BaseModel | Mapping | None = None) -> list[str]:
    """The result files (without suffix) that analysis ``name`` writes under ``analyses/``."""
    entry = ANALYSES.get_entry(name)
    return entry.outputs(_settings(entry, spec))


def _read(run: RunDirectory, spec: BaseModel, what: str):
    if what == "recording":
        return open_run_recordings(run, getattr(spec, "rigs", None))
    if what == "subjects":
        with xr.open_dataset(run.subjects_file) as subjects:
            return subjects.load()
    return run


def _by_stem(entry: AnalysisEntry, results, stems: list[str]) -> dict[str, xr.Dataset]:
    """The results of one compute call keyed by output stem, each with a ``schema``
    (``simlab.<name>/1`` unless the analysis set one), by which :func:`format_result` knows it."""
    if isinstance(results, xr.Dataset):
        if len(stems) != 1:
            raise SimlabError(
                f"analysis {entry.name!r} returned one Dataset for outputs {', '.join(stems)}; "
                "return a mapping from output stem to Dataset"
            )
        results = {stems[0]: results}
    if not isinstance(results, Mapping) or sorted(results) != sorted(stems):
        got = ", ".join(results) if isinstance(results, Mapping) else type(results).__name__
        raise SimlabError(f"analysis {entry.name!r} returned {got}; its outputs are {', '.join(stems)}")
    return {
        stem: result if "schema" in result.attrs else result.assign_attrs(schema=f"simlab.{entry.name}/1")
        for stem, result in results.items()
    }


def compute_analysis(
    run: RunDirectory, name: str, spec: BaseModel | Mapping | None = None, progress: bool = False,
    echo: Callable = print, n_jobs: int | None = None,
) -> dict[str, xr.Dataset]:
    """The results of analysis ``name`` on ``run``, by output stem, computed now (nothing is written)."""
    entry = ANALYSES.get_entry(name)
    spec = _settings(entry, spec)
    inputs = [_read(run, spec, what) for what in entry.reads]
    options = {k: v for k, v in {"progress": progress, "echo": echo, "n_jobs": n_jobs}.items() if k in entry.options}
    return _by_stem(entry, entry.compute(*inputs, spec, **options), entry.outputs(spec))


def run_analysis(
    run: RunDirectory, name: str, spec: BaseModel | Mapping | None = None, force: bool = False,
    progress: bool = True, echo: Callable = print, n_jobs: int | None = None,
) -> list[Path]:
    """Compute analysis ``name`` on ``run`` and write its results and tables.

    Results that exist are kept (and echoed) unless ``force``; returns the NetCDF paths.
    """
    entry = ANALYSES.get_entry(name)
    spec = _settings(entry, spec)
    stems = entry.outputs(spec)
    paths = [run.analysis(stem, "nc") for stem in stems]
    if all(p.exists() for p in paths) and not force:
        for p in paths:
            echo(f"analysis {p} exists, kept")
        return paths
    results = compute_analysis(run, name, spec, progress, echo, n_jobs)
    for stem, path in zip(stems, paths):
        table = entry.table(results[stem])
        write_result_and_table(results[stem], table, path, force=True)
        run.log(f"analysis: {name} -> {path}")
        echo(table)
    return paths


def format_result(result: xr.Dataset) -> str | None:
    """The printed table of a run-analysis result, by its ``schema`` (None: not one of them).

    Identification results, which ``simlab identify`` also writes outside a run, are left to
    the caller, which names them as such.
    """
    schema = str(result.attrs.get("schema", ""))
    for name, entry in ANALYSES.items():
        if name != "identify" and schema.startswith(f"simlab.{name}/"):
            return entry.table(result)
    return None


def write_results(results: xr.Dataset, path, force: bool = False) -> Path:
    """Write results as NetCDF atomically; an existing file is kept unless ``force``."""
    path = Path(path)
    with atomic_path(path, force) as tmp:
        results.to_netcdf(tmp, format="NETCDF4")
    return path


def write_result_and_table(result: xr.Dataset, table: str, path, force: bool = False) -> Path:
    """A result as NetCDF at ``path`` and its printed table beside it (``.txt``), atomically."""
    path = write_results(result, path, force=force)
    write_text_atomic(path.with_suffix(".txt"), table + "\n", force=True)
    return path


def load_result(path: str | Path) -> xr.Dataset:
    """An analysis result file, loaded into memory (the file is closed)."""
    path = Path(path)
    if not path.is_file():
        raise SimlabError(f"{path}: no such analysis result")
    with xr.open_dataset(path) as ds:
        return ds.load()
