"""Record a whole trained cohort with one rig, from the snapshot store (never retraining).

A recording's subjects are the run's subject table (``subjects.nc``), in its order and with
its subject coordinates, copied as they are; the cohort plan says only which snapshot shard
holds which subjects and what network they are.
"""

from __future__ import annotations

import datetime
import math
import shlex
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.errors import SimlabError
from simlab.protocol import CohortPlan, Protocol, plan_cohort
from simlab.recording.contract import build_recording
from simlab.recording.rigs import PopulationRecording, Rig, units_to_record
from simlab.recording.schedule import select_sessions
from simlab.recording.stimuli import stimuli_for
from simlab.rundir import RunDirectory
from simlab.specs.rigs import RigSpec
from simlab.subjects.architectures import Network
from simlab.training.cohort import by_compile_group, subject_network
from simlab.training.snapshots import read_shard

TABLE_ONLY_COORDS = ("population",)
"""Subject coordinates of the subject table that are the run's bookkeeping (which snapshot
shard holds the subject), not a description of the subject: recordings leave them out."""


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
    subject_coords = subject_table_coords(run, plan)
    rig = Rig(spec)
    sessions = select_sessions(protocol.session_steps(), protocol.training.steps, spec.schedule)
    inputs = _CohortInputs(run, protocol, spec)
    layout = _Layout.of(plan, rig, inputs)
    if spec.keep_units:
        _check_unit_bytes(name, rig, layout, len(sessions), echo)
    arrays = _CohortArrays.empty(layout, rig, len(sessions), keep_units=spec.keep_units)

    bar = tqdm(total=len(plan), desc=f"recording {name}", unit="subject", disable=not progress)
    for pop in by_compile_group(plan.populations):
        shard = read_shard(run.shard(pop.id))
        network = inputs.network(pop.architecture, pop.task)
        params = {site: {k: v[:, sessions] for k, v in leaves.items()} for site, leaves in shard.params.items()}
        indices = [subject.index for subject in pop.subjects]
        arrays.add(indices, network.site_names, rig.record(network, params, inputs.stimuli(pop.task), indices, sessions))
        bar.update(len(indices))
    bar.close()

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    recording = build_recording(
        arrays.observation,
        subject_ids=[s.id for s in plan.subjects],
        subject_coords=subject_coords,
        layer_coords={
            "layer_name": arrays.layer_name.astype(str),
            "n_units": arrays.n_units,
            "n_recorded": arrays.n_recorded,
        },
        steps=protocol.session_steps()[sessions],
        total_steps=protocol.training.steps,
        observables=rig.observables,
        protocol_text=run.protocol_text(),
        rig_settings={
            "name": name,
            "measure": rig.measure,
            **spec.model_dump(mode="json"),
            "stimulus_sets": inputs.stimulus_sets() if rig.shows_stimuli else {},
        },
        title=f"{protocol.name}: {name} recording ({rig.measure})",
        history=f"{created} {shlex.join(['simlab', *sys.argv[1:]])}",
    )
    recording = recording.assign_coords(session=("session", sessions.astype(np.int64)))
    return _with_unit_traces(recording, rig, arrays)


def subject_table_coords(run: RunDirectory, plan: CohortPlan) -> dict[str, np.ndarray]:
    """The subject coordinates of the run's subject table, in its order, after checking that
    it lists the cohort's subjects in the plan's order (the order of every recording)."""
    with xr.open_dataset(run.subjects_file) as table:
        table.load()
    expected = [s.id for s in plan.subjects]
    found = [str(s) for s in table["subject"].values]
    if found != expected:
        raise SimlabError(
            f"{run.subjects_file}: its subjects are not the protocol's cohort in the cohort's order "
            f"({len(found)} subjects, first {found[:2]}; the protocol plans {len(expected)}, first "
            f"{expected[:2]}); the subject table belongs to another protocol"
        )
    return {
        name: coord.values
        for name, coord in table.coords.items()
        if coord.dims == ("subject",) and name != "subject" and name not in TABLE_ONLY_COORDS
    }


class _CohortInputs:
    """The networks and stimulus sets of the cohort, each built once.

    Recording uses the true input-output derivatives (credit "backprop"), whatever rule
    trained the subject: a paired rig measures the network, not its learning rule.
    """

    def __init__(self, run: RunDirectory, protocol: Protocol, spec: RigSpec):
        self._run, self._protocol, self._spec = run, protocol, spec
        self._networks: dict[tuple[str, str], Network] = {}
        self._stimuli: dict[str, tuple[np.ndarray, str]] = {}

    def network(self, architecture: str, task: str) -> Network:
        if (architecture, task) not in self._networks:
            self._networks[architecture, task] = subject_network(self._protocol, architecture, task, "backprop")
        return self._networks[architecture, task]

    def stimuli(self, task: str) -> np.ndarray:
        if task not in self._stimuli:
            self._stimuli[task] = stimuli_for(self._run, self._protocol, task, self._spec.stimuli)
        return self._stimuli[task][0]

    def stimulus_sets(self) -> dict[str, str]:
        """Task -> where its stimulus set is described (for the recording's ``rig`` attribute)."""
        return {task: description for task, (_, description) in sorted(self._stimuli.items())}


@dataclass(frozen=True)
class _Layout:
    """The recording's padded sizes, known before recording from each site's unit counts."""

    n_subjects: int
    n_layers: int
    max_units: int  # recorded (post-synaptic) units or synapses of the widest site
    max_inputs: int  # recorded pre-synaptic units of the widest site
    max_stimuli: int

    @classmethod
    def of(cls, plan: CohortPlan, rig: Rig, inputs: _CohortInputs) -> "_Layout":
        units = rig.spec.units
        counts = []  # per population and site: (recorded units, recorded inputs)
        for pop in plan.populations:
            network = inputs.network(pop.architecture, pop.task)
            available = rig.available_units(network, inputs.stimuli(pop.task).shape[1:])
            counts.append(
                [(units_to_record(available[s][0], units), units_to_record(available[s][1], units)) for s in network.site_names]
            )
        return cls(
            n_subjects=len(plan),
            n_layers=max(len(sites) for sites in counts),
            max_units=max(post for sites in counts for post, _ in sites),
            max_inputs=max(pre for sites in counts for _, pre in sites),
            max_stimuli=max(len(inputs.stimuli(task)) for task in set(p.task for p in plan.populations)),
        )

    def unit_response_shape(self, rig: Rig) -> tuple[int, ...]:
        """The padded sizes of one site's kept unit responses in one session."""
        sizes = {"unit": self.max_units, "stimulus": self.max_stimuli}
        return tuple(sizes[dim] for dim in rig.unit_response_dims)


def _check_unit_bytes(name: str, rig: Rig, layout: _Layout, n_sessions: int, echo: Callable) -> None:
    """Say how large kept unit responses will be, and refuse them over ``max_unit_bytes``."""
    per_site = math.prod(layout.unit_response_shape(rig))
    n_bytes = 4.0 * layout.n_subjects * layout.n_layers * n_sessions * per_site
    echo(f"{name}: keeping unit responses, {_size(n_bytes)} in the recording")
    if n_bytes > rig.spec.max_unit_bytes:
        raise SimlabError(
            f"{name}: unit responses would take {_size(n_bytes)}, over the limit of "
            f"{_size(rig.spec.max_unit_bytes)}; record fewer units or sessions, or raise max_unit_bytes"
        )


@dataclass
class _CohortArrays:
    """The cohort's recording, filled population by population: [subject, layer, ...],
    padded (NaN, "", 0 or -1) where a subject has fewer layers or a site fewer units."""

    observation: np.ndarray  # [subject, layer, session, observable]
    layer_name: np.ndarray
    n_units: np.ndarray
    n_recorded: np.ndarray
    unit_index: np.ndarray  # [subject, layer, session, unit]
    input_index: np.ndarray  # [subject, layer, session, input_unit]
    responses: np.ndarray | None  # [subject, layer, session, *unit_response_dims]

    @classmethod
    def empty(cls, layout: _Layout, rig: Rig, n_sessions: int, keep_units: bool) -> "_CohortArrays":
        shape = (layout.n_subjects, layout.n_layers)
        return cls(
            observation=np.full((*shape, n_sessions, len(rig.observables)), np.nan, np.float32),
            layer_name=np.full(shape, "", dtype=object),
            n_units=np.zeros(shape, np.int64),
            n_recorded=np.zeros(shape, np.int64),
            unit_index=np.full((*shape, n_sessions, layout.max_units), -1, np.int32),
            input_index=np.full((*shape, n_sessions, layout.max_inputs), -1, np.int32),
            responses=(
                np.full((*shape, n_sessions, *layout.unit_response_shape(rig)), np.nan, np.float32)
                if keep_units
                else None
            ),
        )

    def add(self, indices: list[int], site_names, result: PopulationRecording) -> None:
        """The recording of one population, whose subjects are ``indices`` of the cohort."""
        for layer, site in enumerate(site_names):
            self.unit_index[indices, layer, :, : result.units[site].shape[-1]] = result.units[site]
            if result.inputs:
                self.input_index[indices, layer, :, : result.inputs[site].shape[-1]] = result.inputs[site]
            if self.responses is not None:
                measured = result.responses[site]
                self.responses[(indices, layer, slice(None), *(slice(0, n) for n in measured.shape[2:]))] = measured
        sites = len(site_names)
        self.observation[indices, :sites] = result.observation
        self.layer_name[indices, :sites] = site_names
        self.n_units[indices, :sites] = result.n_units
        self.n_recorded[indices, :sites] = result.n_recorded


def _with_unit_traces(recording: xr.Dataset, rig: Rig, arrays: _CohortArrays) -> xr.Dataset:
    """Add which units were recorded (when a rig subsamples) and, if kept, their responses.

    Chronic indices do not change across sessions and are stored without the session axis.
    """
    chronic = rig.spec.sampling == "chronic"

    def indices(values, unit_dim: str, what: str):
        values = values[:, :, 0] if chronic else values
        dims = ("subject", "layer", unit_dim) if chronic else ("subject", "layer", "session", unit_dim)
        return xr.Variable(dims, values, {"long_name": what, "units": "1", "missing_value_meaning": "-1: no unit"})

    if rig.spec.units != "all":
        recording["unit_index"] = indices(arrays.unit_index, "unit", rig.unit_index_meaning)
        if rig.samples_inputs:
            recording["input_unit_index"] = indices(
                arrays.input_index, "input_unit", "index of each recorded pre-synaptic unit in the flattened layer input"
            )
    if arrays.responses is not None:
        recording["unit_response"] = xr.Variable(
            ("subject", "layer", "session", *rig.unit_response_dims),
            arrays.responses,
            {"long_name": "measured value of each recorded unit (after sampling and noise)", "units": "1"},
        )
    return recording
