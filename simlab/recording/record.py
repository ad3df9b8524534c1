"""Record a whole trained cohort with one rig, from the snapshot store (never retraining)."""

from __future__ import annotations

import datetime
import shlex
import sys
from typing import Callable

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.errors import SimlabError
from simlab.protocol import plan_cohort
from simlab.recording.contract import build_recording
from simlab.recording.rigs import Rig, units_to_record
from simlab.recording.schedule import select_sessions
from simlab.specs.rigs import RigSpec
from simlab.recording.stimuli import stimuli_for
from simlab.rundir import RunDirectory
from simlab.subjects.architectures import Network
from simlab.training.cohort import by_compile_group, subject_coords, subject_network
from simlab.training.snapshots import read_shard


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024


def record_cohort(
    run: RunDirectory, name: str, spec: RigSpec, progress: bool = True, echo: Callable = print
) -> xr.Dataset:
    """One recording of every subject of the run with rig ``spec`` (called ``name``)."""
    protocol = run.protocol
    plan = plan_cohort(protocol)
    subjects = xr.open_dataset(run.subjects_file).load()
    rig = Rig(spec)
    sessions = select_sessions(protocol.session_steps(), protocol.training.steps, spec.schedule)
    networks: dict[tuple[str, str], Network] = {}
    stimuli: dict[str, tuple[np.ndarray, str]] = {}

    def network_for(architecture: str, task: str) -> Network:
        # Recording uses the true input-output derivatives (credit "backprop"), whatever rule
        # trained the subject: a paired rig measures the network, not its learning rule.
        if (architecture, task) not in networks:
            networks[architecture, task] = subject_network(protocol, architecture, task, "backprop")
        return networks[architecture, task]

    def stimuli_of(task: str) -> np.ndarray:
        if task not in stimuli:
            stimuli[task] = stimuli_for(run, protocol, task, spec.stimuli)
        return stimuli[task][0]

    # the recorded units of every site, known before recording: sizes and padding
    counts = {}
    for pop in plan.populations:
        network = network_for(pop.architecture, pop.task)
        available = rig.available_units(network, stimuli_of(pop.task).shape[1:])
        counts[pop.id] = [
            (units_to_record(available[site][0], spec.units), units_to_record(available[site][1], spec.units))
            for site in network.site_names
        ]
    n_layers = max(len(c) for c in counts.values())
    max_units = max(post for c in counts.values() for post, _ in c)
    max_inputs = max(pre for c in counts.values() for _, pre in c)
    max_stimuli = max(len(stimuli_of(task)) for task in set(p.task for p in plan.populations))
    if spec.keep_units:
        per_site = max_units if spec.type == "synapse" else max_stimuli * (max_units if spec.type != "paired" else 1)
        n_bytes = 4.0 * len(plan) * n_layers * len(sessions) * per_site
        echo(f"{name}: keeping unit responses, {_size(n_bytes)} in the recording")
        if n_bytes > spec.max_unit_bytes:
            raise SimlabError(
                f"{name}: unit responses would take {_size(n_bytes)}, over the limit of "
                f"{_size(spec.max_unit_bytes)}; record fewer units or sessions, or raise max_unit_bytes"
            )

    shape = (len(plan), n_layers)
    observation = np.full((*shape, len(sessions), len(rig.observables)), np.nan, np.float32)
    layer_name = np.full(shape, "", dtype=object)
    n_units = np.zeros(shape, np.int64)
    n_recorded = np.zeros(shape, np.int64)
    unit_index = np.full((*shape, len(sessions), max_units), -1, np.int32)
    input_index = np.full((*shape, len(sessions), max_inputs), -1, np.int32)
    responses = None
    if spec.keep_units:
        trailing = {"synapse": (max_units,), "electrophysiology": (max_stimuli, max_units), "paired": (max_stimuli,)}
        responses = np.full((*shape, len(sessions), *trailing[spec.type]), np.nan, np.float32)

    bar = tqdm(total=len(plan), desc=f"recording {name}", unit="subject", disable=not progress)
    for pop in by_compile_group(plan.populations):
        shard = read_shard(run.shard(pop.id))
        network = network_for(pop.architecture, pop.task)
        params = {site: {k: v[:, sessions] for k, v in leaves.items()} for site, leaves in shard.params.items()}
        indices = [subject.index for subject in pop.subjects]
        result = rig.record(network, params, stimuli_of(pop.task), indices, sessions)
        for layer, site in enumerate(network.site_names):
            k = result.units[site].shape[-1]
            unit_index[indices, layer, :, :k] = result.units[site]
            if result.inputs:
                input_index[indices, layer, :, : result.inputs[site].shape[-1]] = result.inputs[site]
            if responses is not None:
                measured = result.responses[site]
                responses[(indices, layer, slice(None), *(slice(0, n) for n in measured.shape[2:]))] = measured
        sites = len(network.site_names)
        observation[indices, :sites] = result.observation
        layer_name[indices, :sites] = network.site_names
        n_units[indices, :sites] = result.n_units
        n_recorded[indices, :sites] = result.n_recorded
        bar.update(len(indices))
    bar.close()

    coords = subject_coords(protocol, plan, subjects["final_accuracy"].values, subjects["status"].values)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    stimulus_sets = {task: description for task, (_, description) in sorted(stimuli.items())}
    recording = build_recording(
        observation,
        subject_ids=[s.id for s in plan.subjects],
        subject_coords={key: values for key, (_, values) in coords.items()},
        layer_coords={"layer_name": layer_name.astype(str), "n_units": n_units, "n_recorded": n_recorded},
        steps=protocol.session_steps()[sessions],
        total_steps=protocol.training.steps,
        observables=rig.observables,
        protocol_text=run.protocol_text(),
        rig_settings={
            "name": name,
            "measure": rig.measure,
            **spec.model_dump(mode="json"),
            "stimulus_sets": stimulus_sets if spec.type != "synapse" else {},
        },
        title=f"{protocol.name}: {name} recording ({rig.measure})",
        history=f"{created} {shlex.join(['simlab', *sys.argv[1:]])}",
    )
    recording = recording.assign_coords(session=("session", sessions.astype(np.int64)))
    return _with_unit_traces(recording, spec, unit_index, input_index, responses)


def _with_unit_traces(recording: xr.Dataset, spec: RigSpec, unit_index, input_index, responses) -> xr.Dataset:
    """Add which units were recorded (when a rig subsamples) and, if kept, their responses.

    Chronic indices do not change across sessions and are stored without the session axis.
    """
    chronic = spec.sampling == "chronic"

    def indices(values, unit_dim: str, what: str):
        values = values[:, :, 0] if chronic else values
        dims = ("subject", "layer", unit_dim) if chronic else ("subject", "layer", "session", unit_dim)
        return xr.Variable(dims, values, {"long_name": what, "units": "1", "missing_value_meaning": "-1: no unit"})

    if spec.units != "all":
        what = "index of each recorded synapse in the flattened kernel" if spec.type == "synapse" else (
            "index of each recorded (post-synaptic) unit in the flattened layer output"
        )
        recording["unit_index"] = indices(unit_index, "unit", what)
        if spec.type == "paired":
            recording["input_unit_index"] = indices(
                input_index, "input_unit", "index of each recorded pre-synaptic unit in the flattened layer input"
            )
    if responses is not None:
        dims = {
            "synapse": ("subject", "layer", "session", "unit"),
            "electrophysiology": ("subject", "layer", "session", "stimulus", "unit"),
            "paired": ("subject", "layer", "session", "stimulus"),
        }[spec.type]
        recording["unit_response"] = xr.Variable(
            dims,
            responses,
            {"long_name": "measured value of each recorded unit (after sampling and noise)", "units": "1"},
        )
    return recording
