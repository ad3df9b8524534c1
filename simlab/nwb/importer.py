"""Import NWB files (experimental recordings, or simlab's own exports) as a simlab recording.

What is read from each file (docs/nwb.md has the mapping and its options):

- presentations: the trials table (``/intervals/trials``) with a stimulus-identity column;
- sessions: the epochs (``/intervals/epochs``, optionally only those with given tags), each
  one session; or each file is one session (files of one ``subject_id`` ordered by
  ``session_start_time``);
- responses: a Units table with ``spike_times`` (each unit's rate in a window of each trial:
  spikes / window length / ``rate_gain``), or RoiResponseSeries (the mean of the samples in
  each trial's window); units (ROIs) are grouped into sites by electrode group, ``location``
  column or imaging plane;
- per session and site: the responses averaged over the trials of each stimulus, a
  [stimulus, unit] matrix, whose activation observables (:func:`simlab.recording.observables.
  activation_observables`: statistics over units per stimulus, then the mean over stimuli)
  are the recording's observation.

A file simlab exported carries its subject's description (``subject.description``, see
:mod:`simlab.nwb.export`), so its subject coordinates, sessions' training steps, sites'
unit counts and rig settings come back; in any other file the learning rule is "unknown".
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import yaml
from tqdm.auto import tqdm

from simlab.errors import SimlabError, parameter
from simlab.nwb import require_pynwb
from simlab.nwb.export import METADATA_KEY
from simlab.recording.contract import build_recording
from simlab.recording.observables import activation_observables, observables_for
from simlab.specs.rigs import DEFAULT_PERCENTILES, PERCENTILE_METHODS

SESSION_SOURCES = ("auto", "epochs", "files")
RESPONSE_SOURCES = ("auto", "units", "rois")
EXPERIMENT_STEPS = 1000
"""Training steps an experiment's sessions are placed on when no file says (``step`` then
counts thousandths of training; ``fraction`` is exactly the given or evenly spaced value)."""
SITE_COLUMNS = ("electrode_group", "location", "brain_area", "area")
"""Units-table columns that name a unit's site, the first present wins."""
UNKNOWN = "unknown"


@dataclass
class _Session:
    """One session of one subject: where it lies in time and its sites' responses."""

    start: float  # absolute, seconds since the epoch of session_start_time (orders files)
    step: int | None
    fraction: float | None
    sites: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (unit ids, [stimulus, unit] mean responses)
    n_trials: int


@dataclass
class _Subject:
    id: str
    metadata: dict | None
    files: list[str] = field(default_factory=list)
    sessions: list[_Session] = field(default_factory=list)
    site_order: list[str] = field(default_factory=list)
    protocol: str = ""
    species: str = ""


@dataclass(frozen=True)
class ImportSettings:
    """The mapping choices of :func:`import_files` (see its docstring)."""

    window: tuple[float, float] | None = None
    sessions: str = "auto"
    epoch_tags: tuple[str, ...] | None = None
    responses: str = "auto"
    units_where: tuple[tuple[str, str], ...] = ()
    min_units: int = 1
    stimulus_column: str = "stimulus"
    sites: tuple[str, ...] | None = None
    rate_gain: float | None = None
    fractions: tuple[float, ...] | None = None
    percentiles: str | None = None
    rig: Mapping | None = None

    def __post_init__(self):
        if self.window is not None:
            start, end = self.window
            if not end > start:
                raise SimlabError(f"{parameter('window', list(self.window))}: expected START < END seconds after "
                                  "each trial's start")
        if self.sessions not in SESSION_SOURCES:
            raise SimlabError(f"{parameter('sessions', self.sessions)}: expected one of {', '.join(SESSION_SOURCES)}")
        if self.responses not in RESPONSE_SOURCES:
            raise SimlabError(f"{parameter('responses', self.responses)}: expected one of {', '.join(RESPONSE_SOURCES)}")
        if self.min_units < 1:
            raise SimlabError(f"{parameter('min_units', self.min_units)}: expected at least 1")
        if self.rate_gain is not None and not self.rate_gain > 0:
            raise SimlabError(f"{parameter('rate_gain', self.rate_gain)}: expected a positive rate (Hz per unit)")
        if self.percentiles is not None and self.percentiles not in PERCENTILE_METHODS:
            raise SimlabError(f"{parameter('percentiles', self.percentiles)}: expected one of "
                              f"{', '.join(PERCENTILE_METHODS)}")
        if self.fractions is not None:
            f = np.asarray(self.fractions, dtype=float)
            if f.ndim != 1 or (f < 0).any() or (f > 1).any() or (np.diff(f) <= 0).any():
                raise SimlabError(f"{parameter('fractions', list(self.fractions))}: expected increasing training "
                                  "fractions in [0, 1], one per session")


def _simlab_metadata(nwb) -> dict | None:
    subject = nwb.subject
    if subject is None or not subject.description:
        return None
    try:
        value = json.loads(subject.description)
    except ValueError:
        return None
    return value if isinstance(value, dict) and METADATA_KEY in value else None


def _trials(nwb, path: str, settings: ImportSettings):
    """(start, stop, stimulus) arrays of the trials table, or a SimlabError naming what is missing."""
    column = settings.stimulus_column
    if nwb.trials is None or len(nwb.trials) == 0:
        raise SimlabError(f"{path}: no trials (/intervals/trials is missing or empty); simlab needs the stimulus "
                          f"presentations: a trials table with start_time, stop_time and a '{column}' column")
    names = list(nwb.trials.colnames)
    if column not in names:
        raise SimlabError(f"{path}: the trials table has no column '{column}' (its columns: {', '.join(names)}); "
                          f"name the stimulus-identity column with {parameter('stimulus_column')}")
    start = np.asarray(nwb.trials["start_time"].data[:], dtype=np.float64)
    stop = np.asarray(nwb.trials["stop_time"].data[:], dtype=np.float64)
    stimulus = np.asarray(nwb.trials[column].data[:])
    return start, stop, stimulus.astype(str)


def _epochs(nwb, path: str, settings: ImportSettings, trial_start: np.ndarray) -> list[dict]:
    """The sessions of a file: [{start, stop, step, fraction}] in time order."""
    epochs = nwb.epochs
    has_epochs = epochs is not None and len(epochs) > 0
    if settings.sessions == "epochs" and not has_epochs:
        raise SimlabError(f"{path}: no sessions: the file has no epochs (/intervals/epochs); give each session's "
                          f"epochs, or make each file one session with {parameter('sessions', 'files')}")
    if settings.sessions == "files" or not has_epochs:
        return [{"start": float(trial_start.min()), "stop": np.inf, "step": None, "fraction": None}]
    table = epochs.to_dataframe()
    if settings.epoch_tags is not None:
        wanted = set(settings.epoch_tags)
        keep = [bool(wanted & set(tags)) for tags in table["tags"]]
        if not any(keep):
            found = sorted({t for tags in table["tags"] for t in tags})
            raise SimlabError(f"{path}: no sessions: no epoch has a tag in {sorted(wanted)} "
                              f"({parameter('epoch_tags')}); the epochs' tags: {', '.join(found) or 'none'}")
        table = table[keep]
    table = table.sort_values("start_time")
    return [
        {
            "start": float(row.start_time),
            "stop": float(row.stop_time),
            "step": int(row.step) if "step" in table.columns else None,
            "fraction": float(row.fraction) if "fraction" in table.columns else None,
        }
        for row in table.itertuples()
    ]


def _where_mask(table, path: str, what: str, settings: ImportSettings, n: int) -> np.ndarray:
    """Which rows of a units / ROI table ``units_where`` keeps (all when it is empty)."""
    keep = np.ones(n, bool)
    for column, value in settings.units_where:
        if column not in table.colnames:
            raise SimlabError(f"{path}: {parameter('units_where')} names column '{column}', which the {what} "
                              f"lacks (its columns: {', '.join(table.colnames)})")
        keep &= np.array([str(v) == value for v in table[column].data[:]])
    return keep


@dataclass
class _Responses:
    """Per site: unit ids, each unit's response to each trial [trial, unit], and which
    epochs it was observed in [epoch, unit]."""

    sites: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    order: list[str]  # the sites in order of first appearance
    kind: str  # "units" or "rois"


def _windows(start, stop, settings: ImportSettings):
    if settings.window is None:
        return start, stop
    return start + settings.window[0], start + settings.window[1]


def _unit_responses(nwb, path, settings, start, stop, epochs, rate_gain) -> _Responses:
    units = nwb.units
    n = len(units)
    keep = _where_mask(units, path, "units table", settings, n)
    column = next((c for c in SITE_COLUMNS if c in units.colnames), None)
    if column is None:
        site_of = np.array(["units"] * n)
    else:
        values = units[column].data[:]
        site_of = np.array([v.name if hasattr(v, "name") else str(v) for v in values])
    ids = np.asarray(units["unit_index"].data[:] if "unit_index" in units.colnames else units.id.data[:])
    spikes = units["spike_times"]
    flat = np.asarray(spikes.target.data[:], dtype=np.float64)
    ends = np.asarray(spikes.data[:], dtype=np.int64)
    begins = np.concatenate([[0], ends[:-1]])
    a, b = _windows(start, stop, settings)
    observed = np.ones((len(epochs), n), bool)
    if "obs_intervals" in units.colnames:
        for j in range(n):
            intervals = np.asarray(units["obs_intervals"][j], dtype=np.float64).reshape(-1, 2)
            for e, epoch in enumerate(epochs):
                observed[e, j] = bool(((intervals[:, 0] < epoch["stop"]) & (intervals[:, 1] > epoch["start"])).any())
    rates = np.empty((len(start), n))
    for j in range(n):
        times = np.sort(flat[begins[j]:ends[j]])
        counts = np.searchsorted(times, b, "left") - np.searchsorted(times, a, "left")
        rates[:, j] = counts / ((b - a) * rate_gain)  # one division: n / (g T), as the Poisson rig reports
    order = list(dict.fromkeys(site_of[keep]))
    sites = {s: (ids[keep & (site_of == s)], rates[:, keep & (site_of == s)], observed[:, keep & (site_of == s)])
             for s in order}
    return _Responses(sites, order, "units")


def _roi_responses(nwb, path, settings, start, stop, epochs) -> _Responses:
    from pynwb.ophys import RoiResponseSeries

    series = [obj for obj in nwb.objects.values() if isinstance(obj, RoiResponseSeries)]
    series.sort(key=lambda s: s.name)
    by_site: dict[str, list] = {}
    for s in series:
        plane = getattr(s.rois.table, "imaging_plane", None)
        by_site.setdefault(plane.name if plane is not None else s.name, []).append(s)
    a, b = _windows(start, stop, settings)
    sites = {}
    for site, found in by_site.items():
        if len(found) > 1:
            raise SimlabError(f"{path}: imaging plane '{site}' has {len(found)} ROI response series "
                              f"({', '.join(s.name for s in found)}); keep one per plane")
        s = found[0]
        table = s.rois.table
        rows = np.asarray(s.rois.data[:], dtype=np.int64)
        keep = _where_mask(table, path, f"plane segmentation {table.name}", settings, len(table))[rows]
        ids_all = np.asarray(table["unit_index"].data[:] if "unit_index" in table.colnames else table.id.data[:])
        data = np.asarray(s.data[:], dtype=np.float64)
        data = data[:, None] if data.ndim == 1 else data
        times = np.asarray(s.timestamps[:], dtype=np.float64) if s.timestamps is not None else \
            s.starting_time + np.arange(len(data)) / s.rate
        order = np.argsort(times, kind="stable")
        times, data = times[order], data[order][:, keep]
        lo, hi = np.searchsorted(times, a, "left"), np.searchsorted(times, b, "left")
        cumulative = np.concatenate([np.zeros((1, data.shape[1])), np.nancumsum(data, axis=0)])
        finite = np.concatenate([np.zeros((1, data.shape[1])), np.cumsum(np.isfinite(data), axis=0)])
        with np.errstate(invalid="ignore", divide="ignore"):
            values = (cumulative[hi] - cumulative[lo]) / (finite[hi] - finite[lo])
        observed = np.ones((len(epochs), keep.sum()), bool)  # a unit not recorded in an epoch is NaN there
        sites[site] = (ids_all[rows][keep], values, observed)
    return _Responses(sites, list(sites), "rois")


def _read_file(path: str, settings: ImportSettings) -> tuple[str, dict | None, list[_Session], _Responses, dict]:
    """One file's subject id, simlab metadata, sessions and what was read."""
    pynwb = require_pynwb()
    try:
        io = pynwb.NWBHDF5IO(path, "r", load_namespaces=True)
        nwb = io.read()
    except Exception as error:  # not HDF5, not NWB: say so in one line
        raise SimlabError(f"{path}: cannot read as an NWB file ({type(error).__name__}: {error})") from None
    try:
        metadata = _simlab_metadata(nwb)
        subject = nwb.subject.subject_id if nwb.subject is not None and nwb.subject.subject_id else nwb.identifier
        start, stop, stimulus = _trials(nwb, path, settings)
        epochs = _epochs(nwb, path, settings, start)
        rate_gain = settings.rate_gain or float((metadata or {}).get("rig", {}).get("rate_gain", 1.0))
        has_units = nwb.units is not None and len(nwb.units) > 0 and "spike_times" in nwb.units.colnames
        has_rois = any(type(obj).__name__ == "RoiResponseSeries" for obj in nwb.objects.values())
        want = settings.responses
        if want == "units" or (want == "auto" and has_units):
            if not has_units:
                raise SimlabError(f"{path}: no units: no Units table with spike_times (/units)")
            responses = _unit_responses(nwb, path, settings, start, stop, epochs, rate_gain)
        elif has_rois:
            responses = _roi_responses(nwb, path, settings, start, stop, epochs)
        else:
            raise SimlabError(f"{path}: no units: neither a Units table with spike_times (/units) nor ROI responses "
                              "(RoiResponseSeries under /processing)")
        if not responses.sites:
            raise SimlabError(f"{path}: no units left after {parameter('units_where')}")
        t0 = nwb.session_start_time.timestamp()
        sessions = []
        for e, epoch in enumerate(epochs):
            inside = (start >= epoch["start"]) & (start < epoch["stop"])
            if not inside.any():
                raise SimlabError(f"{path}: epoch {e} ({epoch['start']:g} to {epoch['stop']:g} s) holds no trials")
            sites = {}
            for name, (ids, values, observed) in responses.sites.items():
                recorded = observed[e] & np.isfinite(values[inside]).any(axis=0)
                stimuli, which = np.unique(stimulus[inside], return_inverse=True)
                per_trial = values[inside][:, recorded]
                sums = np.zeros((len(stimuli), per_trial.shape[1]))
                np.add.at(sums, which, per_trial)
                matrix = sums / np.bincount(which, minlength=len(stimuli))[:, None]
                sites[name] = (ids[recorded], matrix)
            sessions.append(_Session(t0 + epoch["start"], epoch["step"], epoch["fraction"], sites, int(inside.sum())))
        info = {"protocol": nwb.protocol or "", "species": (nwb.subject.species if nwb.subject else "") or "",
                "kind": responses.kind}
        return str(subject), metadata, sessions, responses, info
    finally:
        io.close()


def _site_order(subject: _Subject, found: list[str], settings: ImportSettings) -> list[str]:
    if settings.sites is not None:
        return [s for s in settings.sites if s in found]
    if subject.metadata is not None:
        named = [site["name"] for site in subject.metadata.get("sites", [])]
        return [s for s in named if s in found] + [s for s in found if s not in named]
    return found


def import_files(files: Sequence, settings: ImportSettings = ImportSettings(), progress: bool = False,
                 command: str | None = None) -> xr.Dataset:
    """The recording (the NetCDF contract) of NWB ``files``; see the module docstring."""
    require_pynwb()  # before anything else: a missing dependency is the first thing to fix
    paths = [str(Path(f)) for f in files]
    if not paths:
        raise SimlabError(f"{parameter('files')}: expected at least one NWB file")
    for path in paths:
        if not Path(path).is_file():
            raise SimlabError(f"{path}: no such file")
    subjects: dict[str, _Subject] = {}
    kinds = set()
    for path in tqdm(paths, desc="importing NWB", unit="file", disable=not progress):
        sid, metadata, sessions, responses, info = _read_file(path, settings)
        subject = subjects.setdefault(sid, _Subject(sid, metadata))
        subject.files.append(path)
        subject.sessions.extend(sessions)
        subject.site_order.extend(s for s in responses.order if s not in subject.site_order)
        subject.protocol, subject.species = subject.protocol or info["protocol"], subject.species or info["species"]
        kinds.add(info["kind"])
    for subject in subjects.values():
        subject.sessions.sort(key=lambda s: s.start)
    counts = {sid: len(s.sessions) for sid, s in subjects.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{sid}: {n}" for sid, n in counts.items())
        raise SimlabError(f"the subjects have different numbers of sessions ({listed}); every subject needs the same "
                          f"sessions: choose them with {parameter('epoch_tags')} or pass the same days' files")
    n_sessions = next(iter(counts.values()))
    return _assemble(list(subjects.values()), n_sessions, settings, kinds, paths, command)


def _sites_kept(subject: _Subject, settings: ImportSettings) -> tuple[list[str], list[str]]:
    """The subject's sites with at least ``min_units`` units in every session, and those dropped."""
    order = _site_order(subject, subject.site_order, settings)
    kept = [s for s in order
            if all(s in session.sites and len(session.sites[s][0]) >= settings.min_units for session in subject.sessions)]
    return kept, [s for s in order if s not in kept]


def _session_coords(subjects: list[_Subject], n: int, settings: ImportSettings) -> tuple[np.ndarray, np.ndarray, int]:
    """Steps, fractions and total steps of the sessions: as simlab's files say, else ``fractions``
    (default evenly spaced) on :data:`EXPERIMENT_STEPS`."""
    if settings.fractions is not None:
        if len(settings.fractions) != n:
            raise SimlabError(f"{parameter('fractions')}: {len(settings.fractions)} given, the files have {n} sessions")
        fraction = np.asarray(settings.fractions, dtype=np.float64)
    else:
        given = [[s.fraction for s in subject.sessions] for subject in subjects]
        steps = [[s.step for s in subject.sessions] for subject in subjects]
        totals = {int(s.metadata["total_steps"]) for s in subjects if s.metadata and "total_steps" in s.metadata}
        complete = all(f is not None for row in given for f in row) and all(x is not None for row in steps for x in row)
        if complete and all(row == given[0] for row in given) and all(row == steps[0] for row in steps) \
                and len(totals) == 1:
            return np.asarray(steps[0], np.int64), np.asarray(given[0], np.float64), totals.pop()
        fraction = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    step = np.rint(fraction * EXPERIMENT_STEPS).astype(np.int64)
    if n > 1 and (np.diff(step) <= 0).any():
        raise SimlabError(f"{parameter('fractions')}: sessions closer than 1/{EXPERIMENT_STEPS} of training")
    return step, fraction, EXPERIMENT_STEPS


def _subject_coords(subjects: list[_Subject]) -> dict[str, np.ndarray]:
    """Subject coordinates: a simlab file's own, else the learning rule (and the rest) unknown."""
    defaults = {"learning_rule": UNKNOWN, "architecture": UNKNOWN, "task": UNKNOWN, "batch_size": -1, "seed": -1,
                "final_accuracy": np.nan, "status": "ok"}
    rows = []
    for subject in subjects:
        coords = dict((subject.metadata or {}).get("coordinates", {}))
        if isinstance(coords.get("rule_settings"), dict):
            coords["rule_settings"] = json.dumps(coords["rule_settings"], sort_keys=True)
        row = {**defaults, **{k: v for k, v in coords.items() if v is not None or k not in defaults}}
        if not subject.metadata:
            row["species"] = subject.species or UNKNOWN
        row["nwb_file"] = subject.files[0]
        rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    out = {}
    for name in names:
        values = [row.get(name) for row in rows]
        numeric = [v for v in values if v is not None]
        if numeric and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numeric):
            floats = any(isinstance(v, float) for v in numeric) or any(v is None for v in values)
            out[name] = np.array([np.nan if v is None else v for v in values], np.float64 if floats else np.int64)
        else:
            out[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return out


def _rig_settings(subjects: list[_Subject], kinds: set, settings: ImportSettings, n_recorded: np.ndarray,
                  acute: bool, paths: list[str]) -> dict:
    """The rig of the recording: a simlab export's own, else what the files show; ``rig`` overrides."""
    rigs = [s.metadata.get("rig") for s in subjects if s.metadata]
    if len(rigs) == len(subjects) and all(r == rigs[0] for r in rigs) and rigs:
        rig = dict(rigs[0])
    else:
        spikes = kinds == {"units"}
        window = settings.window
        rig = {"name": "nwb", "type": "electrophysiology", "units": int(n_recorded.max(initial=0)),
               "sampling": "acute" if acute else "chronic", "noise_model": "poisson" if spikes else UNKNOWN}
        if spikes:
            rig["rate_gain"] = settings.rate_gain or 1.0
            if window is not None:
                rig["count_window"] = float(window[1] - window[0])
    rig.update(dict(settings.rig or {}))
    rig["measure"] = "activation"
    rig["nwb_import"] = {
        "files": paths,
        "window": list(settings.window) if settings.window is not None else "each trial",
        "sessions": settings.sessions,
        "epoch_tags": list(settings.epoch_tags) if settings.epoch_tags is not None else "all",
        "responses": sorted(kinds),
        "units_where": {k: v for k, v in settings.units_where},
        "min_units": settings.min_units,
        "stimulus_column": settings.stimulus_column,
    }
    return rig


def _assemble(subjects: list[_Subject], n_sessions: int, settings: ImportSettings, kinds: set, paths, command):
    sites = {}
    dropped = []
    for subject in subjects:
        kept, lost = _sites_kept(subject, settings)
        if not kept:
            raise SimlabError(f"subject {subject.id} ({subject.files[0]}): no site has {settings.min_units} or more "
                              f"units in every session ({parameter('min_units', settings.min_units)})")
        sites[subject.id] = kept
        dropped.extend(f"{subject.id}/{s}" for s in lost)
    n_layers = max(len(v) for v in sites.values())
    percentiles = settings.percentiles or next(
        (s.metadata["rig"].get("percentiles") for s in subjects if s.metadata and s.metadata.get("rig")),
        DEFAULT_PERCENTILES)
    observables = observables_for("activation")
    observation = np.full((len(subjects), n_layers, n_sessions, len(observables)), np.nan, np.float32)
    layer_name = np.full((len(subjects), n_layers), "", dtype=object)
    n_units = np.zeros((len(subjects), n_layers), np.int64)
    n_recorded = np.zeros((len(subjects), n_layers), np.int64)
    acute = False
    for i, subject in enumerate(subjects):
        available = {site["name"]: site["n_units"] for site in (subject.metadata or {}).get("sites", [])}
        for k, name in enumerate(sites[subject.id]):
            layer_name[i, k] = name
            unit_sets = [tuple(session.sites[name][0]) for session in subject.sessions]
            acute |= len(set(unit_sets)) > 1
            n_recorded[i, k] = max(len(u) for u in unit_sets)
            n_units[i, k] = available.get(name, len(set().union(*map(set, unit_sets))))
            for s, session in enumerate(subject.sessions):
                observation[i, k, s] = activation_observables(session.sites[name][1], xp=np, percentiles=percentiles)
    step, fraction, total = _session_coords(subjects, n_sessions, settings)
    protocols = {s.protocol for s in subjects}
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    history = f"{created} {command or shlex.join(['simlab', *sys.argv[1:]])}"
    if dropped:
        history += f" (sites with fewer than {settings.min_units} units in a session left out: {', '.join(dropped)})"
    recording = build_recording(
        observation,
        subject_ids=[s.id for s in subjects],
        subject_coords=_subject_coords(subjects),
        layer_coords={"layer_name": layer_name.astype(str), "n_units": n_units, "n_recorded": n_recorded},
        steps=step,
        total_steps=total,
        observables=observables,
        protocol_text=protocols.pop() if len(protocols) == 1 else "",
        rig_settings=_rig_settings(subjects, kinds, settings, n_recorded, acute, paths),
        title=f"NWB import of {len(paths)} file(s), {len(subjects)} subject(s), {n_sessions} session(s)",
        history=history,
    )
    return recording.assign_coords(fraction=("session", fraction, dict(recording["fraction"].attrs)))


def settings_from(settings: Mapping) -> ImportSettings:
    """:class:`ImportSettings` from keyword settings (as ``simlab.import_nwb`` takes them)."""
    known = set(ImportSettings.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SimlabError(f"{parameter(unknown[0])}: not an import setting; expected one of {', '.join(sorted(known))}")
    values = dict(settings)
    for name in ("epoch_tags", "sites", "fractions"):
        if values.get(name) is not None:
            items = [values[name]] if isinstance(values[name], (str, int, float)) else values[name]
            values[name] = tuple(float(v) for v in items) if name == "fractions" else tuple(str(v) for v in items)
    if values.get("window") is not None:
        try:
            start, end = (float(v) for v in values["window"])
        except (TypeError, ValueError):
            raise SimlabError(f"{parameter('window', values['window'])}: expected (START, END) seconds") from None
        values["window"] = (start, end)
    where = values.get("units_where")
    if where is not None:
        if not isinstance(where, Mapping):
            raise SimlabError(f"{parameter('units_where', where)}: expected a mapping column -> value")
        values["units_where"] = tuple((str(k), str(v)) for k, v in where.items())
    rig = values.get("rig")
    if rig is not None and not isinstance(rig, Mapping):
        path = Path(rig)
        if not path.is_file():
            raise SimlabError(f"{parameter('rig', str(rig))}: no such rig YAML file")
        loaded = yaml.safe_load(path.read_text())
        if not isinstance(loaded, dict):
            raise SimlabError(f"{path}: expected a rig's settings (a mapping), got {type(loaded).__name__}")
        values["rig"] = loaded
    return ImportSettings(**values)
