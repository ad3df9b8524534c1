"""Export a recording with kept unit responses as NWB files, one per subject.

The encoding (docs/nwb.md says why each choice):

- Time. Session ``s`` is an epoch that starts at ``step_s * seconds_per_step`` seconds after
  ``session_start_time`` (the recording's ``created`` time); in it the stimuli are shown one
  per trial, each for the rig's ``count_window`` seconds, one every ``2 * count_window``.
  ``seconds_per_step`` is the smallest whole number of seconds that keeps the epochs apart.
  The epochs table holds each session's ``session``, ``step`` and ``fraction``; the trials
  table each presentation's ``stimulus`` (index in the rig's stimulus set) and ``session``.
- Responses. A Poisson rig counts spikes, so its units are a Units table: per unit its
  ``electrode_group`` (one per site, named after the layer), ``unit_index`` (in the layer's
  output), ``obs_intervals`` (the sessions it was recorded in: all of them for chronic
  sampling, one for acute) and ``spike_times``: the count n of each presentation as n spikes
  spread evenly over the presentation (only the counts carry information). Any other noise
  model measures continuous values, stored as one ``RoiResponseSeries`` per site in the
  ``ophys`` processing module (one sample per presentation, at its start, [presentation,
  unit]; NaN where an acute rig did not record the unit), its ROIs in a PlaneSegmentation
  of one ImagingPlane per site, one pixel per unit (x = ``unit_index``).
- Subject. NWB's Subject has no fields for a network, and lab metadata would need an
  extension (which readers must have to open the file), so simlab's description of the
  subject (every subject coordinate of the recording: architecture, task, learning rule and
  its ``rule_settings``, seed, ...), its sites and the rig's settings are one JSON object in
  ``subject.description``; ``genotype`` repeats the learning rule and ``strain`` the
  architecture for people browsing the file. ``species`` is NCBI's taxon for synthetic
  constructs, age P0D (the network at step 0), sex "O" (other). The protocol's YAML text is
  ``NWBFile.protocol``, the rig's settings also ``data_collection``.
- Synapses. A synapse rig's kept weights are a processed table per site (a DynamicTable in
  the ``synapses`` processing module): one row per recorded synapse, its ``synapse_index``
  in the flattened kernel and its ``weight`` at each session ([synapse, session], NaN where
  an acute rig did not record it that session); the sessions are the epochs, as above, and
  there are no trials (a synapse rig shows no stimuli).
"""

from __future__ import annotations

import datetime
import json
import math
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import yaml
from tqdm.auto import tqdm

from simlab._version import __version__
from simlab.errors import SimlabError, parameter
from simlab.fileio import atomic_path, refuse_overwrite
from simlab.nwb import require_pynwb

SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_32630"  # NCBI taxonomy: "synthetic construct"
METADATA_KEY = "simlab"
"""The key of simlab's JSON object in ``subject.description`` (the importer reads it back)."""
SPIKE_RESOLUTION = 1e-6  # seconds: exported spike times are exact float64 positions in a window


def _rig(recording: xr.Dataset, where: str) -> dict:
    text = recording.attrs.get("rig", "")
    rig = yaml.safe_load(str(text)) if text else None
    if isinstance(rig, list):
        raise SimlabError(f"{where}: a combined recording of {len(rig)} rigs; export one rig's recording (the one "
                          "recorded with keep_units)")
    if not isinstance(rig, dict):
        raise SimlabError(f"{where}: no 'rig' attribute; export a recording made by simlab record")
    return rig


def check_exportable(recording: xr.Dataset, where: str) -> dict:
    """The rig settings of a recording that can be exported, or a SimlabError naming what is missing."""
    rig = _rig(recording, where)
    if "unit_response" not in recording.data_vars:
        raise SimlabError(
            f"{where}: no unit responses (variable 'unit_response'); record them with "
            f"simlab record RUN --rig {rig.get('name', 'electrophysiology')} --keep-units"
        )
    dims = recording["unit_response"].dims[3:]
    exportable = {"activation": ("stimulus", "unit"), "weight": ("unit",)}
    if exportable.get(rig.get("measure")) != dims:
        raise SimlabError(
            f"{where}: the {rig.get('type')} rig's kept values ({', '.join(dims)}) are neither unit responses to "
            "stimuli nor synapse weights; NWB export is for an electrophysiology rig (activation) or a synapse rig"
        )
    return rig


def seconds_per_step(steps: np.ndarray, epoch_seconds: float) -> int:
    """The smallest whole number of seconds per training step that keeps sessions' epochs apart."""
    gaps = np.diff(np.asarray(steps, dtype=np.int64))
    if gaps.size == 0:
        return 1
    return max(1, math.ceil(epoch_seconds / int(gaps.min())))


def _created(recording: xr.Dataset) -> datetime.datetime:
    text = str(recording.attrs.get("created", ""))
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.datetime.now(datetime.timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _plain(value):
    """A coordinate value as JSON holds it (NaN as null)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def subject_metadata(recording: xr.Dataset, i: int, rig: dict, sites: list[dict]) -> dict:
    """simlab's description of subject ``i``: its coordinates, sites, rig and sessions."""
    coords = {
        name: _plain(coord.values[i])
        for name, coord in recording.coords.items()
        if coord.dims == ("subject",) and name != "subject"
    }
    rule_settings = coords.get("rule_settings")
    if isinstance(rule_settings, str):
        try:
            coords["rule_settings"] = json.loads(rule_settings)
        except ValueError:
            pass
    steps = recording["step"].values
    fraction = recording["fraction"].values
    total = int(round(steps[-1] / fraction[-1])) if fraction[-1] > 0 else int(steps[-1]) or 1
    return {
        METADATA_KEY: __version__,
        "subject": str(recording["subject"].values[i]),
        "coordinates": coords,
        "sites": sites,
        "rig": {k: v for k, v in rig.items() if k != "stimulus_sets"},
        "total_steps": total,
        "recording_title": str(recording.attrs.get("title", "")),
    }


def export_recording(recording: xr.Dataset, out_dir, *, force: bool = False, progress: bool = True,
                     where: str = "recording") -> list[Path]:
    """Write one NWB file per subject of ``recording`` into ``out_dir``; return their paths."""
    require_pynwb()
    rig = check_exportable(recording, where)
    out_dir = Path(out_dir)
    subjects = [str(s) for s in recording["subject"].values]
    paths = [out_dir / f"{subject}.nwb" for subject in subjects]
    for path in paths:
        refuse_overwrite(path, force)  # before writing any: fail fast, lose nothing
    recording = recording.load()
    for i, path in enumerate(tqdm(paths, desc="exporting NWB", unit="subject", disable=not progress)):
        nwbfile = subject_nwbfile(recording, i, rig)
        write_nwbfile(nwbfile, path, force=force)
    return paths


def write_nwbfile(nwbfile, path: Path, force: bool = False) -> Path:
    """Write an NWBFile atomically (a temporary name, renamed into place)."""
    pynwb = require_pynwb()
    with atomic_path(path, force) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'")  # the temporary name
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
    return path


def _unit_indices(recording: xr.Dataset, i: int, layer: int, n: int) -> np.ndarray:
    """[session, unit] index of each recorded unit in the layer's output (all units: 0..n-1)."""
    n_sessions = recording.sizes["session"]
    if "unit_index" not in recording.data_vars:
        return np.tile(np.arange(n), (n_sessions, 1))
    index = recording["unit_index"].isel(subject=i, layer=layer).values
    if index.ndim == 1:  # chronic: the same units every session
        index = np.tile(index, (n_sessions, 1))
    return index[:, :n].astype(np.int64)


def subject_nwbfile(recording: xr.Dataset, i: int, rig: dict):
    """The NWBFile of subject ``i`` (see the module docstring for the encoding)."""
    pynwb = require_pynwb()
    from pynwb.file import Subject

    subject = str(recording["subject"].values[i])
    names = recording["layer_name"].isel(subject=i).values.astype(str)
    layers = [k for k, name in enumerate(names) if name]
    sites = [
        {
            "layer": int(k),
            "name": str(names[k]),
            "n_units": int(recording["n_units"].values[i, k]),
            "n_recorded": int(recording["n_recorded"].values[i, k]),
        }
        for k in layers
    ]
    metadata = subject_metadata(recording, i, rig, sites)
    coords = metadata["coordinates"]
    synapses = rig.get("measure") == "weight"
    spikes = rig.get("noise_model") == "poisson" and not synapses
    window = float(rig.get("count_window", 0.5))
    n_stimuli = 0 if synapses else recording.sizes["stimulus"]
    steps = recording["step"].values.astype(np.int64)
    epoch_seconds = 1.0 if synapses else n_stimuli * 2 * window  # a synapse rig's session: one second
    per_step = seconds_per_step(steps, epoch_seconds)
    rig_text = yaml.safe_dump(metadata["rig"], sort_keys=False)
    nwbfile = pynwb.NWBFile(
        session_description=f"simlab subject {subject} ({coords.get('architecture')}, {coords.get('task')}, "
        f"{coords.get('learning_rule')}) recorded by the {rig.get('name', rig.get('type'))} rig at "
        f"{len(steps)} sessions during training",
        identifier=f"simlab-{subject}-{rig.get('name', rig.get('type'))}-{recording.attrs.get('created', '')}",
        session_start_time=_created(recording),
        experiment_description=str(recording.attrs.get("title", "simlab recording")),
        protocol=str(recording.attrs.get("protocol", "")),
        data_collection=rig_text,
        notes=str(recording.attrs.get("history", "")),
        keywords=["simlab", "simulation", "learning rule", str(coords.get("learning_rule"))],
        source_script=f"simlab {__version__}",
        source_script_file_name="simlab",
    )
    nwbfile.subject = Subject(
        subject_id=subject,
        description=json.dumps(metadata, sort_keys=False),
        species=SPECIES,
        sex="O",
        age="P0D",
        genotype=str(coords.get("learning_rule")),
        strain=str(coords.get("architecture")),
    )
    starts = steps * per_step
    nwbfile.add_epoch_column("session", "index of the simlab session (recording time point)")
    nwbfile.add_epoch_column("step", "training step of the session")
    nwbfile.add_epoch_column("fraction", "fraction of training steps done at the session")
    for s, (start, step, fraction) in enumerate(zip(starts, steps, recording["fraction"].values)):
        nwbfile.add_epoch(start_time=float(start), stop_time=float(start + epoch_seconds), tags=[f"session{s}"],
                          session=s, step=int(step), fraction=float(fraction))
    device = nwbfile.create_device(name="simlab_rig", description=f"simulated {rig.get('type')} rig: {rig_text}")
    if synapses:
        _add_synapses(nwbfile, recording, i, sites, rig)
        return nwbfile
    nwbfile.add_trial_column("stimulus", "index of the stimulus in the rig's stimulus set")
    nwbfile.add_trial_column("session", "index of the simlab session (epoch) of the presentation")
    trial_starts = starts[:, None] + 2 * window * np.arange(n_stimuli)[None, :]  # [session, stimulus]
    for s in range(len(steps)):
        for k in range(n_stimuli):
            nwbfile.add_trial(start_time=float(trial_starts[s, k]), stop_time=float(trial_starts[s, k] + window),
                              stimulus=k, session=s)
    responses = recording["unit_response"].isel(subject=i).transpose("layer", "session", "stimulus", "unit").values
    epochs = np.stack([starts, starts + epoch_seconds], axis=1)
    if spikes:
        _add_units(nwbfile, device, recording, i, sites, responses, trial_starts, window, epochs, rig)
    else:
        _add_rois(nwbfile, device, recording, i, sites, responses, trial_starts, rig)
    return nwbfile


def _add_units(nwbfile, device, recording, i, sites, responses, trial_starts, window, epochs, rig):
    """Spike counts as a Units table: n spikes spread evenly over each presentation.

    The columns are built as arrays, not row by row: ``add_unit`` keeps spike times as a
    Python list that pynwb converts value by value when writing (90 s for the 3.5 million
    spikes of one quickstart subject at 100 units per site, against about a second here).
    """
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.common import VectorData, VectorIndex
    from pynwb.misc import Units

    scale = float(rig["rate_gain"]) * window
    times, intervals, groups, unit_index = [], [], [], []
    for site in sites:
        group = nwbfile.create_electrode_group(
            name=site["name"], description=f"simlab site {site['layer']} ({site['name']}): {site['n_recorded']} of "
            f"{site['n_units']} units recorded", location=site["name"], device=device)
        n = site["n_recorded"]
        index = _unit_indices(recording, i, site["layer"], n)
        counts = np.rint(responses[site["layer"]][:, :, :n].astype(np.float64) * scale)  # [session, stimulus, unit]
        for unit in np.unique(index):
            sessions = np.flatnonzero((index == unit).any(axis=1))
            columns = [int(np.flatnonzero(index[s] == unit)[0]) for s in sessions]
            count = np.nan_to_num(counts[sessions, :, columns]).astype(np.int64).ravel()  # [session, stimulus]
            times.append(spread_spikes(trial_starts[sessions].ravel(), count, window))
            intervals.append(epochs[sessions])
            groups.append(group)
            unit_index.append(int(unit))
    spike_times = VectorData(name="spike_times", description="the spike times, in seconds",
                             data=H5DataIO(np.concatenate(times), compression="gzip"))
    obs_intervals = VectorData(name="obs_intervals", description="the sessions (epochs) the unit was recorded in",
                               data=np.concatenate(intervals))
    nwbfile.units = Units(
        name="units", id=np.arange(len(groups)), resolution=SPIKE_RESOLUTION,
        description="units recorded by the simulated electrophysiology rig; each presentation's spike count n is n "
        f"spikes spread evenly over the presentation (rate = n / {window:g} s; activation = rate / "
        f"{rig['rate_gain']:g} Hz)",
        columns=[
            spike_times,
            VectorIndex(name="spike_times_index", data=np.cumsum([len(t) for t in times]), target=spike_times),
            obs_intervals,
            VectorIndex(name="obs_intervals_index", data=np.cumsum([len(x) for x in intervals]), target=obs_intervals),
            VectorData(name="electrode_group", description="the electrode group (site) of each unit", data=groups),
            VectorData(name="unit_index", description="index of the unit in the layer's flattened output",
                       data=np.array(unit_index, np.int64)),
        ],
    )


def spread_spikes(starts: np.ndarray, counts: np.ndarray, window: float) -> np.ndarray:
    """Spike times for ``counts[k]`` spikes in each window [starts[k], starts[k] + window):
    evenly spread, at (j + 0.5) * window / n (sorted when the windows are)."""
    first = np.repeat(np.cumsum(counts) - counts, counts)
    j = np.arange(first.size) - first
    n = np.repeat(counts, counts)
    return np.repeat(starts, counts) + (j + 0.5) * (window / np.maximum(n, 1))


def _by_unit(index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct recorded units of a site and their values with the session axis in place:
    ``index`` [session, recorded] unit indices, ``values`` [session, ..., recorded] ->
    (units, [session, ..., unit]), NaN where a unit was not recorded in a session (acute)."""
    units = np.unique(index)
    out = np.full(values.shape[:-1] + (len(units),), np.nan, np.float32)
    for s in range(index.shape[0]):
        out[s][..., np.searchsorted(units, index[s])] = values[s]
    return units, out


def _add_synapses(nwbfile, recording, i, sites, rig):
    """Kept synapse weights as one DynamicTable per site in the ``synapses`` module."""
    from hdmf.common import DynamicTable, VectorData

    module = nwbfile.create_processing_module(
        name="synapses", description=f"synapse weights read by the simulated {rig.get('type')} rig (noise model "
        f"{rig.get('noise_model')}, {rig.get('noise')}), one table per site; sessions are the epochs")
    weights = recording["unit_response"].isel(subject=i).transpose("layer", "session", "unit").values
    for site in sites:
        n = site["n_recorded"]
        units, values = _by_unit(_unit_indices(recording, i, site["layer"], n), weights[site["layer"]][:, :n])
        module.add(DynamicTable(
            name=site["name"], id=np.arange(len(units)),
            description=f"simlab site {site['layer']} ({site['name']}): {n} of {site['n_units']} synapses recorded",
            columns=[
                VectorData(name="synapse_index", description="index of the synapse in the site's flattened kernel",
                           data=units.astype(np.int64)),
                VectorData(name="weight", description="the synapse's weight at each session (columns: the epochs, "
                           "in order); NaN where it was not recorded that session", data=values.T),
            ],
        ))


def _add_rois(nwbfile, device, recording, i, sites, responses, trial_starts, rig):
    """Continuous responses as one RoiResponseSeries per site in the ``ophys`` module."""
    from pynwb.ophys import ImageSegmentation, OpticalChannel, RoiResponseSeries

    module = nwbfile.create_processing_module(
        name="ophys", description=f"responses measured by the simulated {rig.get('type')} rig (noise model "
        f"{rig.get('noise_model')}, {rig.get('noise')}), one sample per stimulus presentation, in activation units")
    segmentation = ImageSegmentation(name="ImageSegmentation")
    module.add(segmentation)
    timestamps = trial_starts.ravel()
    for site in sites:
        channel = OpticalChannel(name="channel", description="simulated", emission_lambda=float("nan"))
        plane = nwbfile.create_imaging_plane(
            name=site["name"], optical_channel=channel, description=f"simlab site {site['layer']} ({site['name']}): "
            f"{site['n_recorded']} of {site['n_units']} units recorded", device=device,
            excitation_lambda=float("nan"), indicator="none (simulated)", location=site["name"])
        table = segmentation.create_plane_segmentation(
            name=site["name"], description=f"one ROI per recorded unit of {site['name']} (pixel x = unit index)",
            imaging_plane=plane)
        table.add_column("unit_index", "index of the unit in the layer's flattened output")
        n = site["n_recorded"]
        # [session, stimulus, unit]
        units, data = _by_unit(_unit_indices(recording, i, site["layer"], n), responses[site["layer"]][:, :, :n])
        for unit in units:
            table.add_roi(pixel_mask=[(int(unit), 0, 1.0)], unit_index=int(unit))
        region = table.create_roi_table_region(region=list(range(len(units))), description=f"the units of {site['name']}")
        module.add(RoiResponseSeries(name=site["name"], data=data.reshape(-1, len(units)), rois=region, unit="a.u.",
                                     timestamps=timestamps,
                                     description=f"response of each unit of {site['name']} to each presentation"))


def exportable_recording(source, rig: str | None = None) -> tuple[xr.Dataset, str]:
    """The recording to export and what to call it in messages: a Dataset, a recording file, or a
    run directory (its recording named ``rig``, else the only one with kept unit responses)."""
    from simlab.recording.contract import open_recording
    from simlab.rundir import RunDirectory

    if isinstance(source, xr.Dataset):
        if rig is not None:
            raise SimlabError(f"{parameter('rig', rig)} chooses a recording of a run directory; a recording was given")
        return source, str(source.encoding.get("source", "recording"))
    path = Path(source.path if isinstance(source, RunDirectory) else source)
    if path.is_dir():
        files = RunDirectory(path).recording_files()
        if rig is not None:
            if rig not in files:
                raise SimlabError(f"{parameter('rig', rig)}: {path} has no recording {rig}.nc (it has: "
                                  f"{', '.join(files) or 'none'})")
            chosen = files[rig]
        else:
            kept = [name for name, file in files.items() if _has_unit_responses(file)]
            if not kept:
                raise SimlabError(f"{path}: no recording with kept unit responses; record one with "
                                  "simlab record RUN --rig electrophysiology --keep-units")
            if len(kept) > 1:
                raise SimlabError(f"{path}: {len(kept)} recordings with kept unit responses ({', '.join(kept)}); "
                                  f"choose one with {parameter('rig')}")
            chosen = files[kept[0]]
        return open_recording(chosen), str(chosen)
    if not path.is_file():
        raise SimlabError(f"{path}: no such run directory or recording file")
    return open_recording(path), str(path)


def _has_unit_responses(path: Path) -> bool:
    with xr.open_dataset(path) as ds:
        return "unit_response" in ds.data_vars
