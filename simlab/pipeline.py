"""The whole flow for one protocol: validate, train, record with every rig, analyze.

Each stage reads only what the previous one wrote to the run directory. Outputs that exist
are kept (the run resumes) unless ``force``; a run directory holding another protocol is
refused unless ``force``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from simlab.analysis.analyses import run_analysis, write_result_and_table
from simlab.cluster import DaskExecutor, connect, parse_cluster
from simlab.errors import SimlabError, parameter
from simlab.fileio import write_text_atomic
from simlab.protocol import Protocol, describe, load_protocol, plan_cohort
from simlab.recording.contract import write_recording
from simlab.recording.record import record_cohort
from simlab.rundir import RunDirectory
from simlab.subjects.tasks import load_task, stimulus_set
from simlab.training.accelerators import enable_compilation_cache
from simlab.training.cohort import subject_table, train_cohort, write_subject_table


def _same_protocol(run: RunDirectory, protocol: Protocol) -> bool:
    """Whether the run directory holds this protocol. The stored one is read again, so a
    setting that a newer simlab added with its default (an analysis option) still matches;
    what calibration added to it (``training.calibrated``) is left out of the comparison."""
    if run.protocol_text() == protocol.to_yaml():
        return True
    try:
        return uncalibrated(run.protocol).to_yaml() == uncalibrated(protocol).to_yaml()
    except SimlabError:  # not readable by this simlab: another protocol
        return False


def uncalibrated(protocol: Protocol) -> Protocol:
    """A protocol that calibrates, without the rates its calibration chose."""
    if protocol.training.calibrate is None:
        return protocol
    return protocol.model_copy(update={"training": protocol.training.model_copy(update={"calibrated": {}})})


def prepare_run_directory(protocol: Protocol, out: Path | None, force: bool) -> RunDirectory:
    """Create (or reopen, for the same protocol) the run directory and write the protocol."""
    run = RunDirectory(out if out is not None else Path("runs") / protocol.name)
    exists = run.protocol_file.exists()
    same = exists and _same_protocol(run, protocol)
    if exists and not force and not same:
        raise SimlabError(
            f"{run.path} holds a run of another protocol; choose another {parameter('out')}, or pass "
            f"{parameter('force', True)} to replace it"
        )
    if not same:
        write_text_atomic(run.protocol_file, protocol.to_yaml(), force=True)
    return run


def calibrate_run(run: RunDirectory, protocol: Protocol, force: bool, progress: bool, echo: Callable) -> Protocol:
    """The calibration stage: every population's search (cached in the run directory), its
    tables written, and the protocol as run, with the chosen rates, stored and returned."""
    tables, calibrated, text = search_and_write_calibration(run, protocol, force, progress, echo)
    if not tables:
        return protocol
    write_text_atomic(run.protocol_file, calibrated.to_yaml(), force=True)
    echo(text)
    return calibrated


def search_and_write_calibration(run: RunDirectory, protocol: Protocol, force: bool, progress: bool, echo: Callable):
    """Every population's search (cached in the run directory) and its tables written
    (``calibration.nc``/``.txt``); returns the tables, the protocol with the choices and the
    printed table (no tables, nothing written, where no population has a rate to search)."""
    from simlab.training.calibration import calibrate_cohort, calibrated_protocol, combined_table, format_calibration

    tables = calibrate_cohort(run, protocol, force=force, progress=progress, echo=echo)
    if not tables:
        return tables, protocol, ""
    text = format_calibration(tables.values())
    write_result_and_table(combined_table(tables.values()), text, run.calibration_table("nc"), force=True)
    return tables, calibrated_protocol(protocol, tables), text


def write_stimuli(run: RunDirectory, protocol: Protocol, force: bool) -> None:
    if run.stimuli_file.exists() and not force:
        return
    tasks = sorted(protocol.levels("task"))
    run.write_stimuli(
        {
            task: stimulus_set(load_task(protocol.task_spec(task)), protocol.recording.stimuli, protocol.seed)
            for task in tasks
        },
        force=True,
    )


def record_rigs(run: RunDirectory, protocol: Protocol, force: bool, progress: bool, echo: Callable) -> list[Path]:
    paths = []
    for name, spec in protocol.rigs.items():
        path = run.recording(name)
        if path.exists() and not force:
            echo(f"recording {path} exists, kept")
        else:
            write_recording(record_cohort(run, name, spec, progress, echo), path, force=force)
            run.log(f"record: {name} -> {path}")
        paths.append(path)
    return paths


def write_importance(run, name, spec, force, progress, echo):
    """Feature importance of an identify analysis (``importance: true``), next to it, from the
    recordings of every rig of the protocol."""
    from simlab.analysis.common import open_run_recordings
    from simlab.analysis.importance import format_importance, importance_for

    nc = run.analysis(f"{name}.importance", "nc")
    if nc.exists() and not force:
        echo(f"analysis {nc} exists, kept")
        return
    importance = importance_for(open_run_recordings(run), spec, progress=progress)
    text = format_importance(importance)
    write_result_and_table(importance, text, nc, force=True)
    run.log(f"analysis: {name} importance -> {nc}")
    echo(text)


def run_protocol(
    path: str | Path | Protocol,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    echo: Callable = print,
    cluster: str | None = None,
    scheduler: str | None = None,
) -> RunDirectory:
    """``path``: a protocol file, or a validated protocol. ``cluster`` (``local:N``) or
    ``scheduler`` (a Dask scheduler's address): train the populations as tasks on a Dask
    cluster (:mod:`simlab.cluster`); the results are the same."""
    # refuses an invalid protocol before anything is trained
    protocol = path if isinstance(path, Protocol) else load_protocol(path)
    source = f"protocol {protocol.name}" if isinstance(path, Protocol) else path
    if cluster:
        parse_cluster(cluster)  # a bad value fails before anything is written
    plan = plan_cohort(protocol)
    echo(describe(protocol, plan))
    run = prepare_run_directory(protocol, Path(out) if out is not None else None, force)
    run.log(f"run: {source} -> {run.path} ({len(plan)} subjects)")
    write_stimuli(run, protocol, force)

    enable_compilation_cache()
    timings = StageTimings(run)
    if protocol.training.calibrate is not None:
        with timings.stage("calibrate"):
            protocol = calibrate_run(run, protocol, force, progress, echo)
        plan = plan_cohort(protocol)
    with timings.stage("train"), connect(cluster, scheduler) as client:
        executor = DaskExecutor(client) if client is not None else None
        trained = train_cohort(run, protocol, plan, force=force, progress=progress, executor=executor)
    with timings.stage("subject table"):
        if trained or force or not run.subjects_file.exists():
            write_subject_table(subject_table(run, protocol, plan), run.subjects_file, force=True)
    echo(training_summary(run))
    for warning in divergence_warnings(run, protocol):
        echo(warning)

    with timings.stage("record"):
        record_rigs(run, protocol, force, progress, echo)
    for name, spec in protocol.analyses.items():
        with timings.stage(f"analysis {name}"):
            run_analysis(run, name, spec, force=force, progress=progress, echo=echo)
            if getattr(spec, "importance", False):
                write_importance(run, name, spec, force, progress, echo)
    timings.log_total()
    echo(f"run directory: {run.path}")
    return run


def peak_memory_mib() -> float | None:
    """This process's peak resident memory so far (MiB), where the OS says (Linux, macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class StageTimings:
    """Wall time of each stage of a run, logged as it ends (``stage train: 64.8 s; peak
    memory 1402 MiB``) and in total, so a user sees where a run's time goes and
    benchmarks/run_all.py can read it. The peak is the process's so far: the stage that raised
    it is the first to show it."""

    def __init__(self, run: RunDirectory):
        self.run = run
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        peak = peak_memory_mib()
        memory = "" if peak is None else f"; peak memory {peak:.0f} MiB"
        self.run.log(f"stage {name}: {self.seconds[name]:.1f} s{memory}")

    def log_total(self) -> None:
        total = time.perf_counter() - self.started
        analyses = sum(v for k, v in self.seconds.items() if k.startswith("analysis "))
        self.run.log(f"stages: {total:.1f} s in all; analyses {analyses:.1f} s ({analyses / max(total, 1e-9):.0%})")


def training_summary(run: RunDirectory) -> str:
    """Final health per population (mean and each replicate), and diverged subjects: test
    accuracy, or, marked "probe", linear-probe accuracy for self-supervised populations."""
    import xarray as xr

    table = xr.open_dataset(run.subjects_file).load()
    probed = "health_metric" in table.coords and bool((table["health_metric"] == "probe_accuracy").any())
    lines = ["final test accuracy by population (replicates):"]
    if probed:
        lines[0] = lines[0][:-1] + "; probe: of a linear probe on the frozen representation (self-supervised)"
    for population, group in table.groupby("population", squeeze=False):
        accuracy = group["final_accuracy"].values
        diverged = int((group["status"].values == "diverged").sum())
        note = f"  {diverged} diverged" if diverged else ""
        tag = ""
        if probed:
            tag = "probe " if str(group["health_metric"].values[0]) == "probe_accuracy" else "test  "
        lines.append(
            f"  {population:<42s} {tag}{np.nanmean(accuracy):.3f}  ({', '.join(f'{a:.3f}' for a in accuracy)}){note}"
        )
    return "\n".join(lines)


def calibrate_protocol(
    path: str | Path | Protocol,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    echo: Callable = print,
    settings=None,
):
    """``simlab calibrate``: the calibration stage alone, on the protocol's run directory (its
    cache is the one ``simlab run`` of a protocol with ``training.calibrate`` reuses).
    ``settings``: a :class:`simlab.specs.protocol.Calibrate` in place of the protocol's. Writes
    ``calibration.nc``/``.txt`` and ``protocol.calibrated.yaml`` (the protocol with the chosen
    rates pinned in ``training.calibrated``, no search) into the run directory; returns the
    run directory, the calibrated protocol and the tables."""
    protocol = path if isinstance(path, Protocol) else load_protocol(path)
    spec = settings if settings is not None else protocol.training.calibrate
    searching = protocol.model_copy(update={"training": protocol.training.model_copy(update={"calibrate": spec})})
    run = RunDirectory(Path(out) if out is not None else Path("runs") / protocol.name)
    run.path.mkdir(parents=True, exist_ok=True)
    enable_compilation_cache()
    tables, pinned, text = search_and_write_calibration(run, searching, force, progress, echo)
    if not tables:
        raise SimlabError(f"protocol {protocol.name}: no population has a rate to calibrate")
    pinned = pinned.model_copy(update={"training": pinned.training.model_copy(update={"calibrate": None})})
    write_text_atomic(run.calibrated_protocol_file, pinned.to_yaml(), force=True)
    run.log(f"calibrate: {len(tables)} population(s) -> {run.calibration_table('nc')}")
    echo(text)
    return run, pinned, tables


def divergence_warnings(run: RunDirectory, protocol: Protocol) -> list[str]:
    """One warning per population with diverged subjects: when, at what rates, and what to try."""
    import xarray as xr

    table = xr.open_dataset(run.subjects_file).load()
    warnings = []
    for population, group in table.groupby("population", squeeze=False):
        diverged = group["status"].values == "diverged"
        if not diverged.any():
            continue
        steps = ", ".join(str(int(step)) for step in group["diverged_step"].values[diverged]) if "diverged_step" in group else "?"
        settings = json.loads(str(group["rule_settings"].values[np.argmax(diverged)])) if "rule_settings" in group.coords else {}
        rates = ", ".join(f"{k}={v:g}" for k, v in settings.items() if k.endswith("learning_rate"))
        if protocol.training.calibrate is not None and population in protocol.training.calibrated:
            fix = "its calibrated rates were healthy on the calibration seeds: try training.clip_grad_norm, or a larger calibrate budget"
        else:
            fix = "try `simlab calibrate` (or training.calibrate: in the protocol), or a smaller rate for it under training.rules"
        warnings.append(
            f"warning: {int(diverged.sum())} of {diverged.size} subjects of {population} diverged (at step {steps}; "
            f"{rates}); they stay in the run marked diverged; {fix}"
        )
    return warnings
