"""simlab's Python API: the whole flow from a notebook or a script, in xarray objects.

    >>> import simlab
    >>> run = simlab.run("protocols/quickstart.yaml", out="runs/quickstart")   # doctest: +SKIP
    >>> ephys = simlab.record(run, "electrophysiology", units=20, noise=0.5)   # doctest: +SKIP
    >>> result = simlab.identify(ephys)                                        # doctest: +SKIP
    >>> print(simlab.summary(result))                                          # doctest: +SKIP

Every function takes keyword settings named as in a protocol file; a bad setting raises
:class:`simlab.SimlabError` naming the parameter. Results are returned, never written, unless
a function is asked to write them (``simlab.run`` writes its run directory; ``simlab.record``
writes with ``write=True``; :func:`save` writes any result).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import xarray as xr
from pydantic import BaseModel, ValidationError

from simlab.errors import SimlabError, parameter
from simlab.registry import unknown_name_message
from simlab.protocol import Protocol, describe, load_protocol as _load_protocol, plan_cohort
from simlab.rundir import RunDirectory
from simlab.specs.classifiers import allowing_imports
from simlab.specs.analyses import ConfoundSpec, FitSpec, GeneralizationSpec, IdentifySpec, RobustnessSpec, TrajectorySpec

__all__ = [
    "Run",
    "allowing_imports",
    "calibrate",
    "combine",
    "confound",
    "export_nwb",
    "fit",
    "generalize",
    "identify",
    "import_nwb",
    "importance",
    "load_protocol",
    "matched_control",
    "open_identifier",
    "open_recording",
    "open_run",
    "plan",
    "predict",
    "record",
    "robustness",
    "run",
    "save",
    "summary",
    "trajectory",
    "transfer_table",
    "validate",
]

# --------------------------------------------------------------------------- protocols


def load_protocol(protocol: str | Path | Protocol, *, allow_imports: bool = False) -> Protocol:
    """Read and validate a protocol file.

    Parameters
    ----------
    protocol : str, Path or Protocol
        A YAML protocol file (a Protocol is returned as it is).
    allow_imports : bool
        Let the protocol name classifiers by import paths outside sklearn (importing runs
        their code: docs/trust.md).

    Returns
    -------
    Protocol
        The validated protocol, defaults filled in (``protocol.to_yaml()`` writes it out).

    Raises
    ------
    simlab.ProtocolError
        Every problem of the file at once, each with its line and field.

    Examples
    --------
    >>> protocol = simlab.load_protocol("protocols/quickstart.yaml")   # doctest: +SKIP
    >>> protocol.training.steps                                          # doctest: +SKIP
    1500
    """
    if isinstance(protocol, Protocol):
        return protocol
    return _load_protocol(protocol, allow_imports=allow_imports)


def validate(protocol: str | Path | Protocol, *, allow_imports: bool = False) -> str:
    """The cohort a protocol describes, as ``simlab validate`` prints it.

    Parameters
    ----------
    protocol : str, Path or Protocol
    allow_imports : bool
        Let the protocol name classifiers by import paths outside sklearn (importing runs
        their code: docs/trust.md).

    Returns
    -------
    str
        Blocks, populations and subjects, and every setting that differs from the defaults.

    Examples
    --------
    >>> print(simlab.validate("protocols/tiny.yaml"))   # doctest: +SKIP
    """
    protocol = load_protocol(protocol, allow_imports=allow_imports)
    return describe(protocol, plan_cohort(protocol))


# --------------------------------------------------------------------------- runs


class Run(RunDirectory):
    """A run directory, as a notebook reads it.

    Attributes
    ----------
    path : Path
    protocol : Protocol
        The protocol as run.
    subjects : xarray.Dataset
        The subject table: factors, training curves, final accuracy, status.
    recordings : Mapping[str, xarray.Dataset]
        Every recording in ``recordings/`` by name (the protocol's rigs are named after them),
        opened when first asked for.
    analyses : Mapping[str, xarray.Dataset]
        Every analysis result in ``analyses/`` by name.
    snapshots : Mapping[str, Path]
        The snapshot shard of every trained population, by population id.

    Examples
    --------
    >>> run = simlab.open_run("runs/quickstart")                # doctest: +SKIP
    >>> run.subjects["final_accuracy"].groupby("learning_rule").mean()   # doctest: +SKIP
    >>> run.recordings["synapse"].observation.sel(observable="weight_raw_median")   # doctest: +SKIP
    """

    @property
    def subjects(self) -> xr.Dataset:
        if not self.subjects_file.is_file():
            raise SimlabError(f"{self.subjects_file}: no subject table (the run has not trained yet)")
        with xr.open_dataset(self.subjects_file) as table:
            return table.load()

    @property
    def recordings(self) -> Mapping[str, xr.Dataset]:
        from simlab.recording.contract import open_recording as _open

        return _Files(self.recording_files, _open, "recording", self.recordings_dir)

    @property
    def analyses(self) -> Mapping[str, xr.Dataset]:
        from simlab.analysis.analyses import load_result

        return _Files(self.analysis_files, load_result, "analysis result", self.analyses_dir)

    @property
    def snapshots(self) -> Mapping[str, Path]:
        return self.shard_files()

    def analyze(self, name: str, *, force: bool = False, progress: bool = True,
                echo: Callable[[str], Any] | None = None, n_jobs: int | None = None, **settings: Any) -> list[Path]:
        """Compute an analysis of this run and write it under ``analyses/``, as ``simlab run``
        does for a protocol's ``analyses:`` entry (and the analysis commands do).

        Parameters
        ----------
        name : str
            A registered analysis: ``identify``, ``generalization``, ``trajectory``,
            ``robustness``, ``confound``, or one a user registered.
        force : bool
            Recompute and overwrite existing results (else they are kept).
        progress : bool
        echo : callable, optional
            Where the printed tables go (default ``print``).
        n_jobs : int, optional
        **settings
            Settings of the analysis (and identification settings) over the protocol's entry
            of that name.

        Returns
        -------
        list of Path
            The result files (``analyses/<name>.nc``; each with its table in ``.txt``).

        Examples
        --------
        >>> run.analyze("generalization", factors=["task"], splits=5)   # doctest: +SKIP
        """
        from simlab.analysis.analyses import run_analysis
        from simlab.specs.analyses import ANALYSES

        if name not in ANALYSES:
            raise SimlabError(unknown_name_message("analysis", name, ANALYSES))
        model = ANALYSES[name]
        nested = "identify" if "identify" in model.model_fields else None
        spec = settings_model(model, settings, nested=nested, base=self.protocol.analyses.get(name))
        return run_analysis(self, name, spec, force=force, progress=progress,
                            echo=print if echo is None else echo, n_jobs=n_jobs)

    def __repr__(self) -> str:
        parts = [f"simlab.Run({str(self.path)!r})"]
        if self.protocol_file.is_file():
            parts.append(f"  protocol: {self.protocol.name}")
        parts.append(f"  recordings: {', '.join(self.recording_files()) or 'none'}")
        parts.append(f"  analyses: {', '.join(self.analysis_files()) or 'none'}")
        return "\n".join(parts)


class _Files(Mapping):
    """name -> dataset of the files a listing finds, each opened when asked for."""

    def __init__(self, listing: Callable[[], dict[str, Path]], opener: Callable, what: str, folder: Path):
        self._listing, self._opener, self._what, self._folder = listing, opener, what, folder

    def __getitem__(self, name: str) -> xr.Dataset:
        files = self._listing()
        if name not in files:
            raise KeyError(f"no {self._what} {name!r} in {self._folder} (it has: {', '.join(files) or 'none'})")
        return self._opener(files[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._listing())

    def __len__(self) -> int:
        return len(self._listing())

    def __repr__(self) -> str:
        return f"<{self._what}s in {self._folder}: {', '.join(self) or 'none'}>"


def open_run(path: str | Path | RunDirectory) -> Run:
    """Open a run directory that ``simlab run`` made.

    Parameters
    ----------
    path : str or Path
        The run directory (relative paths are relative to the current directory).

    Returns
    -------
    Run
        Its protocol, subject table, recordings, analyses and snapshots.

    Examples
    --------
    >>> run = simlab.open_run("runs/quickstart")   # doctest: +SKIP
    >>> sorted(run.recordings)                      # doctest: +SKIP
    ['electrophysiology', 'paired', 'synapse']
    """
    if isinstance(path, Run):
        return path
    existing = RunDirectory.existing(path.path if isinstance(path, RunDirectory) else path)
    return Run(existing.path)


def run(
    protocol: str | Path | Protocol,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    cluster: str | None = None,
    scheduler: str | None = None,
    echo: Callable[[str], Any] | None = None,
    allow_imports: bool = False,
) -> Run:
    """Train, record and analyze the cohort of a protocol: ``simlab run``.

    Outputs that exist are kept, so a rerun resumes where an interrupted one stopped.

    Parameters
    ----------
    protocol : str, Path or Protocol
        A protocol file, or a protocol object (:func:`load_protocol`).
    out : str or Path, optional
        The run directory (default ``runs/<protocol name>``).
    force : bool
        Redo and overwrite existing outputs (and replace a run of another protocol).
    progress : bool
        Show progress bars.
    cluster : str, optional
        ``"local:N"`` (or ``"local:N:T"``): train populations on a local Dask cluster of N
        worker processes (T CPUs each).
    scheduler : str, optional
        The address of a running Dask scheduler to train on instead.
    echo : callable, optional
        Where the printed tables go (default ``print``; ``lambda *a: None`` for silence).
    allow_imports : bool
        Let the protocol name classifiers by import paths outside sklearn (importing runs
        their code: docs/trust.md).

    Returns
    -------
    Run

    Examples
    --------
    >>> run = simlab.run("protocols/tiny.yaml", out="runs/tiny", progress=False)   # doctest: +SKIP
    >>> run.subjects.final_accuracy.values                                          # doctest: +SKIP
    """
    from simlab.pipeline import run_protocol

    with allowing_imports(allow_imports):
        done = run_protocol(protocol, out, force=force, progress=progress, echo=print if echo is None else echo,
                            cluster=cluster, scheduler=scheduler)
    return Run(done.path)


def calibrate(
    protocol: str | Path | Protocol,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
    allow_imports: bool = False,
    **settings: Any,
) -> xr.Dataset:
    """Search each population's learning rates before training: ``simlab calibrate``.

    For every population a log-spaced grid around its rate (then around its feedback-pathway
    or Hebbian rate) trains on seeds no subject has, judged on a held-out part of the
    training split; a setting under which a seed diverges or ends no better than its
    untrained network is rejected. Results are cached in the run directory per population
    (``simlab run`` of a protocol with ``training.calibrate`` reuses them).

    Parameters
    ----------
    protocol : str, Path or Protocol
        A protocol file or object.
    out : str or Path, optional
        The run directory holding the cache (default ``runs/<protocol name>``).
    force : bool
        Search again even where a population's result is cached.
    progress : bool
        Show a progress bar.
    echo : callable, optional
        Where the printed table goes (default ``print``).
    allow_imports : bool
        Let the protocol name classifiers by import paths outside sklearn (docs/trust.md).
    **settings
        Settings of ``training.calibrate`` (``steps``, ``seeds``, ``points``, ``span``,
        ``rates``, ``validation_fraction``, ``min_gain``, ``keep``), over the protocol's.

    Returns
    -------
    xarray.Dataset
        Every setting tried [trial, seed]: ``score`` and ``untrained`` (the health metric on
        held-out data), ``diverged``, ``accepted``, the rates as coordinates; the choices per
        population in ``attrs["choices"]`` and the calibrated protocol in ``attrs["protocol"]``.

    Examples
    --------
    >>> table = simlab.calibrate("protocols/tiny.yaml", out="runs/tiny", points=3)   # doctest: +SKIP
    >>> table.attrs["choices"]                                                       # doctest: +SKIP
    """
    from simlab.pipeline import calibrate_protocol
    from simlab.specs.protocol import Calibrate
    from simlab.training.calibration import combined_table

    protocol = load_protocol(protocol, allow_imports=allow_imports)
    base = protocol.training.calibrate or Calibrate()
    spec = settings_model(Calibrate, settings, base=base)
    _, pinned, tables = calibrate_protocol(protocol, out, force=force, progress=progress,
                                           echo=print if echo is None else echo, settings=spec)
    table = combined_table(tables.values())
    table.attrs["protocol"] = pinned.to_yaml()
    return table


# --------------------------------------------------------------------------- recording


def record(
    run: str | Path | RunDirectory,
    rig: str | Path | BaseModel,
    *,
    write: bool = False,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    **settings: Any,
) -> xr.Dataset:
    """Record a trained cohort again with a rig (never retraining): ``simlab record``.

    Parameters
    ----------
    run : str, Path or Run
        A run directory.
    rig : str, Path or RigSpec
        A rig of the run's protocol, a rig type (``"synapse"``, ``"electrophysiology"``,
        ``"paired"``), a rig YAML file, or rig settings.
    write : bool
        Also write the recording, to ``out`` or to the run's ``recordings/``: as
        ``<rig>.nc`` when no setting differs from the rig's (the file ``simlab run`` wrote), else
        as ``<rig>-<setting><value>-...nc``, each setting that differs in turn
        (:func:`simlab.rundir.recording_name`: ``units=20, noise=0.5`` ->
        ``electrophysiology-units20-noise0.5.nc``).
    out : str or Path, optional
        Where to write it (implies ``write``).
    force : bool
        Overwrite an existing file.
    progress : bool
        Show a progress bar.
    **settings
        Rig settings that override the rig's: ``units``, ``sampling``, ``noise_model``,
        ``noise``, ``rate_gain``, ``count_window``, ``seed``, ``schedule`` (a mapping:
        ``window``, ``every``, ``count``, ``spacing``), ``stimuli`` (``source``, ``size``,
        ``seed``), ``keep_units``, ``max_unit_bytes``.

    Returns
    -------
    xarray.Dataset
        The recording (the NetCDF data contract: docs/recording-contract.md). When written,
        ``recording.encoding["source"]`` is the file.

    Examples
    --------
    >>> ephys = simlab.record("runs/quickstart", "electrophysiology", units=20, noise=0.5)   # doctest: +SKIP
    >>> ephys.observation.sel(observable="activation_raw_mean")                              # doctest: +SKIP
    """
    from simlab.fileio import refuse_overwrite
    from simlab.recording.contract import write_recording
    from simlab.recording.record import record_cohort

    directory = open_run(run)
    name, spec = _rig(directory, rig, settings)
    path = None
    if write or out is not None:
        path = Path(out) if out is not None else directory.recording_for(name, spec, _rig(directory, rig, {})[1])
        refuse_overwrite(path, force)  # before recording: fail fast, lose nothing
    recording = record_cohort(directory, name, spec, progress=progress, echo=lambda *a, **k: None)
    if path is not None:
        write_recording(recording, path, force=force)
        directory.log(f"record: {name} {spec.model_dump(mode='json')} -> {path}")
        recording.encoding["source"] = str(path)
    return recording


def _rig(run: RunDirectory, rig, settings: Mapping[str, Any]):
    from simlab.recording.rigfiles import resolve_rig
    from simlab.specs.rigs import RigSpec

    if isinstance(rig, RigSpec):
        return rig.type, settings_model(RigSpec, settings, base=rig)
    return resolve_rig(str(rig), run.protocol, dict(settings))


def open_recording(path: str | Path) -> xr.Dataset:
    """Open a recording file into memory, checking that it is a simlab recording.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> synapse = simlab.open_recording("runs/quickstart/recordings/synapse.nc")   # doctest: +SKIP
    """
    from simlab.recording.contract import open_recording as _open

    return _open(path)


def combine(recordings: Sequence[xr.Dataset | str | Path]) -> xr.Dataset:
    """Several rigs' recordings of one cohort as one, concatenated along ``observable``.

    Parameters
    ----------
    recordings : sequence of Dataset or paths

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> both = simlab.combine([run.recordings["synapse"], run.recordings["electrophysiology"]])   # doctest: +SKIP
    """
    from simlab.recording.contract import combine_recordings

    datasets = [r if isinstance(r, xr.Dataset) else open_recording(r) for r in recordings]
    if not datasets:
        raise SimlabError(f"{parameter('recordings')}: expected at least one recording")
    return datasets[0] if len(datasets) == 1 else combine_recordings(datasets)


def _recording(recordings, rigs: Sequence[str] | None = None) -> xr.Dataset:
    """One recording from what a user may pass: a Dataset, a file, several, or a run (the
    recordings of its protocol's rigs, or of ``rigs``, combined)."""
    if isinstance(recordings, xr.Dataset):
        return recordings
    if isinstance(recordings, RunDirectory) or (isinstance(recordings, (str, Path)) and Path(recordings).is_dir()):
        from simlab.analysis.common import open_run_recordings

        return open_run_recordings(open_run(recordings), rigs)
    if isinstance(recordings, (str, Path)):
        return open_recording(recordings)
    return combine(list(recordings))


# --------------------------------------------------------------------------- NWB


def export_nwb(recording, out: str | Path, *, rig: str | None = None, force: bool = False,
               progress: bool = True) -> list[Path]:
    """Write a recording's kept unit responses as NWB files, one per subject: ``simlab export --nwb``.

    Needs pynwb (``pip install 'simlab[nwb]'``). The encoding is in docs/nwb.md: subject
    description as JSON in ``Subject.description``, one epoch per session, the presentations
    as trials, a Units table of spike times (Poisson rigs) or RoiResponseSeries (other noise).

    Parameters
    ----------
    recording : Dataset, path or Run
        A recording made with ``keep_units=True`` (an electrophysiology rig), its file, or a
        run directory (its recording named ``rig``, else the only one with kept unit responses).
    out : str or Path
        The directory of the files (``<subject>.nwb``).
    rig : str, optional
        With a run directory: the recording's name in ``recordings/`` (its file's stem).
    force : bool
        Overwrite existing files.
    progress : bool

    Returns
    -------
    list of Path
        The files written, in the recording's subject order.

    Examples
    --------
    >>> simlab.export_nwb("runs/quickstart", "runs/quickstart/nwb", rig="electrophysiology-keep_units")   # doctest: +SKIP
    """
    from simlab.nwb.export import export_recording, exportable_recording

    dataset, where = exportable_recording(recording, rig)
    return export_recording(dataset, out, force=force, progress=progress, where=where)


def import_nwb(files, *, out: str | Path | None = None, force: bool = False, progress: bool = False,
               **settings: Any) -> xr.Dataset:
    """Read NWB files (spike times or ROI responses, with trials) as a recording: ``simlab import-nwb``.

    Per session (an epoch or a file) and site (electrode group, units-table ``location`` or
    imaging plane), each unit's response to each trial is averaged over the trials of each
    stimulus; the activation observables of that [stimulus, unit] matrix are the recording's.
    Files with the same ``subject_id`` are one subject. The learning rule is "unknown" unless
    a file is a simlab export. Needs pynwb (``pip install 'simlab[nwb]'``).

    Parameters
    ----------
    files : path or sequence of paths
        NWB files, or directories of ``.nwb`` files.
    out : str or Path, optional
        Also write the recording there (NetCDF).
    force : bool
    progress : bool
    **settings
        ``window`` (START, END seconds after each trial's start; default the trial),
        ``sessions`` (``"auto"``, ``"epochs"``, ``"files"``), ``epoch_tags`` (only epochs with
        one of these tags), ``responses`` (``"auto"``, ``"units"``, ``"rois"``),
        ``units_where`` (a mapping column -> value units must have), ``min_units`` (sites with
        fewer units in a session are left out; default 1), ``stimulus_column`` (default
        ``"stimulus"``), ``sites`` (the sites to keep, nearest the input first),
        ``rate_gain`` (Hz per activation unit; default a simlab export's, else 1),
        ``fractions`` (training fraction of each session), ``percentiles``, ``rig`` (rig
        settings, a mapping or a rig YAML file, the recording is taken to match).

    Returns
    -------
    xarray.Dataset
        A recording (docs/recording-contract.md) of activation observables.

    Examples
    --------
    >>> recording = simlab.import_nwb("experiment/", out="experiment.nc", window=(0.05, 0.55))   # doctest: +SKIP
    """
    from simlab.nwb.importer import import_files, settings_from

    recording = import_files(_nwb_files(files), settings_from(settings), progress=progress)
    if out is not None:
        from simlab.recording.contract import write_recording

        write_recording(recording, out, force=force)
        recording.encoding["source"] = str(out)
    return recording


def _nwb_files(files) -> list[Path]:
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    out = []
    for path in paths:
        out.extend(sorted(path.glob("*.nwb")) if path.is_dir() else [path])
    return out


# --------------------------------------------------------------------------- analyses


def settings_model(model: type[BaseModel], settings: Mapping[str, Any], nested: str | None = None,
                   base: BaseModel | None = None) -> BaseModel:
    """``model`` from keyword settings (over ``base``'s), errors naming the parameter.

    With ``nested`` (``"identify"``), settings that are not the model's own go into that
    nested model, so ``generalize(ds, splits=5)`` sets ``identify.splits``.
    """
    data = base.model_dump() if base is not None else {}
    inner = dict(data.get(nested) or {}) if nested else {}
    for key, value in settings.items():
        if nested and key == nested:  # the nested settings themselves, as a mapping
            inner.update(value.model_dump() if isinstance(value, BaseModel) else dict(value))
        elif key in model.model_fields:
            data[key] = value
        elif nested and key in IdentifySpec.model_fields:
            inner[key] = value
        else:
            known = sorted({*model.model_fields, *(IdentifySpec.model_fields if nested else ())} - {nested or ""})
            raise SimlabError(f"{parameter(key)}: not a setting here; expected one of {', '.join(known)}")
    if nested:
        data[nested] = inner
    try:
        return model(**data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            if nested and loc and loc[0] == nested:
                loc = loc[1:]
            name = loc[0] if loc else model.__name__
            where = parameter(name, settings[name]) if name in settings else parameter(name)
            rest = "".join(f"[{part}]" for part in loc[1:])
            problems.append(f"{where}{rest}: {error['msg'].removeprefix('Value error, ')}")
        raise SimlabError("; ".join(problems)) from None


def identify(recordings, *, rigs: Sequence[str] | None = None, progress: bool = False,
             n_jobs: int | None = None, allow_imports: bool = False, **settings: Any) -> xr.Dataset:
    """Name the learning rule (or any subject coordinate) of each recorded site: ``simlab identify``.

    Classifiers are trained on the sites' session trajectories over repeated
    category-balanced train/test splits grouped by subject.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
        One recording, several rigs' recordings of one cohort (combined), or a run (all its
        rigs' recordings, or those of ``rigs``).
    rigs : list of str, optional
        With a run: the rigs whose recordings to use.
    progress : bool
    n_jobs : int, optional
        Worker processes (default: one per CPU); results do not depend on it.
    allow_imports : bool
        Let ``classifiers`` (or a run's protocol) name import paths outside sklearn
        (importing runs their code: docs/trust.md).
    **settings
        Identification settings (``analyses.identify`` of a protocol): ``target``
        (default ``"learning_rule"``), ``classifiers``, ``preset``, ``features``, ``splits``,
        ``test_fraction``, ``group_by``, ``seed``, ``health`` (``{"min_gain": G}``: leave out the
        subjects whose final accuracy is less than G above their untrained value; without it,
        who learned by 0.05 is only reported), ``matched_control`` (and ``matched_caliper``) and
        ``report_transfer``: the controls of :func:`matched_control` and :func:`transfer_table`,
        stored in the same results and printed after the table.

    Returns
    -------
    xarray.Dataset
        Accuracy per classifier, feature set and split, per-site predictions, confusion
        matrices, per-class precision/recall/F1, and per learning rule the subjects that
        learned and were excluded (``subjects_*`` over ``health_rule``; ``simlab.summary``
        prints it).

    Examples
    --------
    >>> result = simlab.identify(run, splits=5, classifiers=["random_forest"])   # doctest: +SKIP
    >>> result.accuracy.mean("split")                                           # doctest: +SKIP
    """
    from simlab.analysis.controls import identify_with_controls

    with allowing_imports(allow_imports):
        spec = settings_model(IdentifySpec, settings)
        return identify_with_controls(_recording(recordings, rigs), spec, progress=progress, n_jobs=n_jobs)


def importance(recordings, *, rigs: Sequence[str] | None = None, progress: bool = False,
               n_jobs: int | None = None, **settings: Any) -> xr.Dataset:
    """Which observables the classifiers rely on: impurity and permutation importance.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
    rigs : list of str, optional
    progress : bool
    n_jobs : int, optional
    **settings
        Identification settings, as for :func:`identify`.

    Returns
    -------
    xarray.Dataset
        Importance by observable, measure, function and statistic.

    Examples
    --------
    >>> ranked = simlab.importance(run, splits=3)   # doctest: +SKIP
    """
    from simlab.analysis.importance import importance_for

    spec = settings_model(IdentifySpec, settings)
    return importance_for(_recording(recordings, rigs), spec, progress=progress, n_jobs=n_jobs)


def matched_control(recordings, *, caliper: float | None = None, rigs: Sequence[str] | None = None,
                    progress: bool = False, n_jobs: int | None = None, **settings: Any) -> xr.Dataset:
    """Is the rule named by its recordings or by its learning rate? Each pair of classes
    identified on subjects matched one-to-one on learning rate: ``simlab identify --matched-control``.

    Subjects of rule A are matched with subjects of rule B of the same architecture, task and
    batch size whose learning rates differ by at most the ratio ``caliper`` (greedy nearest
    on the log rate); a pair with fewer than 3 matches per class is reported, not identified.
    On the matched subjects, A vs B is identified with identify's settings, and the learning
    rate alone (with batch size) is classified on the same splits: near 0.5 when matching
    removed the rate cue.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
        As for :func:`identify`; the subjects need a ``learning_rate`` coordinate.
    caliper : float, optional
        Largest rate ratio of a matched pair (default 1.5, the ``matched_caliper`` setting).
    rigs : list of str, optional
    progress : bool
    n_jobs : int, optional
    **settings
        Identification settings, as for :func:`identify`.

    Returns
    -------
    xarray.Dataset
        Per ``pair``: matched subjects, accuracy with subject bootstrap intervals per
        classifier and feature set, the rate-only accuracy on the same splits and before
        matching (``simlab.summary`` prints it).

    Examples
    --------
    >>> control = simlab.matched_control(run, classifiers=["random_forest"])   # doctest: +SKIP
    >>> print(simlab.summary(control))                                          # doctest: +SKIP
    """
    from simlab.analysis.matched import matched_control as _matched

    spec = settings_model(IdentifySpec, settings)
    return _matched(_recording(recordings, rigs), spec, caliper, progress=progress, n_jobs=n_jobs)


def transfer_table(recordings, transforms: Sequence[Any] | None = None, *,
                   factors: Sequence[str] = ("architecture", "task"), bins: int = 3,
                   bin_per_class: bool = False, rigs: Sequence[str] | None = None, progress: bool = False,
                   n_jobs: int | None = None, **settings: Any) -> xr.Dataset:
    """Within-cohort and held-out accuracy per transform and classifier:
    ``simlab identify --report-transfer``.

    Each row (transform x classifier) holds accuracy within the cohort on splits grouped by
    subject and by population, and on each held-out level of ``factors`` (leave one level
    out, pooled over levels, as :func:`generalize`), each with its subject bootstrap 95%
    interval; a factor with one level has no column.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
    transforms : list, optional
        Transform settings to compare: names (``"diff"``) or lists of names used together
        (``["raw", "diff"]``); default: the ``transform`` setting.
    factors : sequence of str
        Held-out factors (``learning_rate`` is held out by ``bins`` quantile bins).
    bins : int
    bin_per_class : bool
        Bin ``learning_rate`` within each rule, so every held-out band holds every rule.
    rigs : list of str, optional
    progress : bool
    n_jobs : int, optional
    **settings
        Identification settings, as for :func:`identify`.

    Returns
    -------
    xarray.Dataset
        ``transfer_accuracy`` and ``transfer_boot_ci`` over (transfer_transform, classifier,
        feature_set, evaluation) (``simlab.summary`` prints the table).

    Examples
    --------
    >>> table = simlab.transfer_table(run, ["raw", "diff", ["raw", "diff"]], classifiers=["random_forest"])  # doctest: +SKIP
    >>> print(simlab.summary(table))                                                                      # doctest: +SKIP
    """
    from simlab.analysis.transfer import transfer_table as _transfer

    spec = settings_model(IdentifySpec, settings)
    return _transfer(_recording(recordings, rigs), spec, transforms, factors, progress=progress, n_jobs=n_jobs,
                     bins=bins, bin_per_class=bin_per_class)


def generalize(recordings, factor: str = "architecture", *, matrix: bool = True, rigs: Sequence[str] | None = None,
               progress: bool = False, n_jobs: int | None = None, **settings: Any) -> xr.Dataset:
    """Identify on held-out levels of a factor (leave one level out): ``simlab generalize``.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
    factor : str
        A subject coordinate: ``architecture``, ``task``, ``batch_size``, a hyperparameter
        (``learning_rate``: held out by quantile bins, ``bins=3`` by default).
    matrix : bool
        Also train on each single level and test on each other one.
    rigs : list of str, optional
    progress : bool
    n_jobs : int, optional
    **settings
        ``bins`` and ``bin_per_class`` (of a real-valued factor), and identification settings,
        as for :func:`identify`.

    Returns
    -------
    xarray.Dataset
        Accuracy per held-out level (and the train-level x test-level matrix).

    Examples
    --------
    >>> held_out = simlab.generalize(run, "architecture", splits=3)   # doctest: +SKIP
    """
    from simlab.analysis.generalization import generalization

    spec = settings_model(GeneralizationSpec, {"factors": [factor], "matrix": matrix, **settings}, nested="identify")
    return generalization(_recording(recordings, rigs), factor, spec.identify, spec.matrix, progress, n_jobs, spec.bins,
                          spec.bin_per_class)


def trajectory(recordings, schedules: Mapping[str, Any] | None = None, *, rigs: Sequence[str] | None = None,
               progress: bool = False, n_jobs: int | None = None, **settings: Any) -> xr.Dataset:
    """Identify from part of the training trajectory: ``simlab trajectory``.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
    schedules : mapping, optional
        Access pattern name -> sessions to keep (``window``, ``every``, ``count``,
        ``spacing``: a rig schedule), e.g. ``{"first_20pct": {"window": (0, 0.2)}}``
        (default: the first and last fifth, every 4th session, 3 sessions, all).
    rigs : list of str, optional
    progress : bool
    n_jobs : int, optional
    **settings
        Identification settings, as for :func:`identify`.

    Returns
    -------
    xarray.Dataset
        Accuracy per access pattern.

    Examples
    --------
    >>> early = simlab.trajectory(run, {"early": {"window": (0, 0.25)}})   # doctest: +SKIP
    """
    from simlab.analysis.trajectory import trajectory_access

    given = {} if schedules is None else {"schedules": schedules}
    spec = settings_model(TrajectorySpec, {**given, **settings}, nested="identify")
    return trajectory_access(_recording(recordings, rigs), spec.schedules, spec.identify, progress, n_jobs)


def robustness(run: str | Path | RunDirectory, *, progress: bool = False, n_jobs: int | None = None,
               echo: Callable[[str], Any] | None = None, **settings: Any) -> xr.Dataset:
    """Identification over a grid of units x noise, re-recording the snapshots: ``simlab robustness``.

    Parameters
    ----------
    run : str, Path or Run
        The grid re-records the run's snapshots (cached under ``recordings/robustness/``).
    progress : bool
    n_jobs : int, optional
    echo : callable, optional
        Where to report each re-recording (default: nowhere).
    **settings
        ``rigs``, ``units`` (counts, fractions or "all"), ``noise`` (levels), ``sessions``
        (counts to sweep), ``seed`` (one rig seed for all), and identification settings.

    Returns
    -------
    xarray.Dataset
        Accuracy per rig, unit setting, noise level and classifier, the session sweep, and
        the paired comparison of the first two rigs (Holm-corrected).

    Examples
    --------
    >>> grid = simlab.robustness(run, units=[16, "all"], noise=[0, 1], sessions=[])   # doctest: +SKIP
    """
    from simlab.analysis.robustness import robustness as _robustness

    directory = open_run(run)
    spec = settings_model(RobustnessSpec, settings, nested="identify", base=directory.protocol.analyses.get("robustness"))
    return _robustness(directory, spec, progress, echo or (lambda *a, **k: None), n_jobs)


def confound(run: str | Path | RunDirectory, *, rigs: Sequence[str] | None = None, progress: bool = False,
             n_jobs: int | None = None, **settings: Any) -> xr.Dataset:
    """Identification among performance-matched subjects, and from performance alone: ``simlab confound``.

    Parameters
    ----------
    run : str, Path or Run
        Matching reads the run's subject table (final accuracy, training curves).
    rigs : list of str, optional
    progress : bool
    n_jobs : int, optional
    **settings
        ``matching`` ("nearest" or "bins"), ``caliper``, ``bins``, ``curve_points``, and
        identification settings.

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> matched = simlab.confound(run, caliper=0.05)   # doctest: +SKIP
    """
    from simlab.analysis.confound import confound as _confound

    directory = open_run(run)
    spec = settings_model(ConfoundSpec, settings, nested="identify")
    return _confound(_recording(directory, rigs), directory.subjects, spec.identify, spec.matching, spec.caliper,
                     spec.bins, spec.curve_points, progress, n_jobs)


def plan(grid: xr.Dataset | str | Path | RunDirectory, target: float = 0.9, *, rigs: Sequence[str] | None = None,
         classifier: str | None = None, criterion: str = "wilson") -> list:
    """The fewest units and sessions and the most noise that still identify: ``simlab plan``.

    Parameters
    ----------
    grid : Dataset, path or Run
        A robustness result (:func:`robustness`), its file, or a run that has one.
    target : float
        Accuracy to reach, in (0, 1].
    rigs : list of str, optional
        Rigs of the grid (default: all).
    classifier : str, optional
        Classifier of the grid (default: per rig, the best on average).
    criterion : {"wilson", "bootstrap", "split", "mean"}
        Which lower bound of the accuracy must reach the target.

    Returns
    -------
    list of RigPlan
        One plan per rig (``simlab.analysis.plan.format_plan`` prints them).

    Examples
    --------
    >>> plans = simlab.plan(run, target=0.8)   # doctest: +SKIP
    """
    from simlab.analysis.analyses import load_result
    from simlab.analysis.plan import plan_design

    if isinstance(grid, RunDirectory) or (isinstance(grid, (str, Path)) and Path(grid).is_dir()):
        grid = open_run(grid).analysis("robustness", "nc")
    if not isinstance(grid, xr.Dataset):
        grid = load_result(grid)
    return plan_design(grid, target, list(rigs) if rigs else None, classifier, criterion)


# --------------------------------------------------------------------------- results


# --------------------------------------------------------------------------- fitted identifiers


def fit(recordings, *, out: str | Path | None = None, rigs: Sequence[str] | None = None, force: bool = False,
        **settings: Any):
    """Train one calibrated classifier on every usable site of a cohort, to apply to new
    recordings: ``simlab fit``.

    Parameters
    ----------
    recordings : Dataset, path, sequence of them, or Run
        As for :func:`identify` (a run: all its rigs' recordings, or those of ``rigs``).
    out : str or Path, optional
        Also save it: a directory (``model.skops`` and ``manifest.json`` in it) or a
        ``.skops`` file (the manifest beside it as ``.json``).
    rigs : list of str, optional
    force : bool
        Overwrite an existing identifier.
    **settings
        :class:`simlab.specs.analyses.FitSpec`: ``classifier`` (default ``random_forest``),
        ``observables`` (``["all"]``, measures or observable names), ``transform``, ``target``,
        ``preset``, ``group_by``, ``calibration``, ``folds``, ``ood_quantile``,
        ``ood_threshold``, ``seed``, ``health``.

    Returns
    -------
    simlab.analysis.identifier.Identifier
        ``.manifest`` says what it was fitted on and how it applies.

    Examples
    --------
    >>> identifier = simlab.fit("runs/transfer_fit", transform="diff", out="runs/transfer_fit/identifier")   # doctest: +SKIP
    """
    from simlab.analysis.identifier import fit_identifier, save_identifier

    spec = settings_model(FitSpec, settings)
    if out is not None:
        from simlab.fileio import refuse_overwrite

        for path in _identifier_paths(out):
            refuse_overwrite(path, force)  # before fitting: fail fast, lose nothing
    source = str(recordings.path if isinstance(recordings, RunDirectory) else recordings) \
        if not isinstance(recordings, xr.Dataset) else str(recordings.encoding.get("source", ""))
    identifier = fit_identifier(_recording(recordings, rigs), spec, source=source)
    if out is not None:
        save_identifier(identifier, out, force=force)
    return identifier


def _identifier_paths(out) -> tuple[Path, Path]:
    from simlab.analysis.identifier import _paths

    return _paths(out)


def open_identifier(path: str | Path, *, trust: bool = False):
    """Load an identifier saved by :func:`fit`, checking its model file's sha256; a model
    holding types simlab's identifiers do not contain is refused unless ``trust``.

    Parameters
    ----------
    path : str, Path or Identifier
        A directory made by :func:`fit`, its ``manifest.json`` or its ``.skops`` file.
    trust : bool
        Load types that simlab's identifiers do not contain (their code runs on loading).

    Returns
    -------
    simlab.analysis.identifier.Identifier

    Examples
    --------
    >>> identifier = simlab.open_identifier("runs/transfer_fit/identifier")   # doctest: +SKIP
    >>> identifier.manifest["classes"]                                         # doctest: +SKIP
    """
    from simlab.analysis.identifier import Identifier, load_identifier

    return path if isinstance(path, Identifier) else load_identifier(path, trust=trust)


def predict(identifier, recordings, *, rigs: Sequence[str] | None = None, trust: bool = False) -> xr.Dataset:
    """Name the class of each site and subject of a new recording: ``simlab predict``.

    Parameters
    ----------
    identifier : Identifier or path
        From :func:`fit` or a saved one (a directory, its ``manifest.json`` or ``.skops`` file).
    recordings : Dataset, path, sequence of them, or Run
        Recorded by the identifier's rigs at its sessions (else a SimlabError says what
        differs and how to re-record).
    rigs : list of str, optional
    trust : bool
        Load a model file that holds types simlab's identifiers do not contain.

    Returns
    -------
    xarray.Dataset
        Per site ``probability`` (site, class), ``predicted``, ``ood_score`` and
        ``out_of_distribution``; per subject the pooled ``subject_probability`` (the product of
        its sites' probabilities, renormalized) and ``subject_sites``; with known labels,
        accuracy (attrs), ``confusion``, shares and reliability.

    Examples
    --------
    >>> result = simlab.predict("runs/transfer_fit/identifier", "runs/transfer_test")   # doctest: +SKIP
    >>> print(simlab.summary(result))                                                  # doctest: +SKIP
    """
    from simlab.analysis.identifier import predict_recording

    model = open_identifier(identifier, trust=trust)
    source = "" if isinstance(recordings, xr.Dataset) else str(getattr(recordings, "path", recordings))
    return predict_recording(model, _recording(recordings, rigs), source=source)


def summary(result: xr.Dataset) -> str:
    """The printed table of any simlab result: identification, an analysis, a recording, a
    subject table (what ``simlab info`` prints for its file).

    Examples
    --------
    >>> print(simlab.summary(simlab.identify(run)))   # doctest: +SKIP
    """
    from simlab.info import describe_dataset

    return describe_dataset(result)


def save(result: xr.Dataset, path: str | Path, *, force: bool = False) -> Path:
    """Write a recording or a result as NetCDF, atomically; an existing file needs ``force``.

    Examples
    --------
    >>> simlab.save(result, "runs/quickstart/analyses/my-identify.nc")   # doctest: +SKIP
    """
    from simlab.analysis.identify import write_results
    from simlab.recording.contract import write_recording

    if str(result.attrs.get("schema", "")).startswith("simlab.recording"):
        return write_recording(result, path, force=force)
    return write_results(result, path, force=force)
