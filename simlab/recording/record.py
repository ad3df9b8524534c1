"""Record a whole trained cohort with one rig, from the snapshot store (never retraining)."""

from __future__ import annotations

import datetime
import shlex
import sys

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.protocol import plan_cohort
from simlab.recording.contract import build_recording
from simlab.recording.rigs import Rig
from simlab.recording.specs import RigSpec
from simlab.rundir import RunDirectory
from simlab.subjects.architectures import Network
from simlab.subjects.tasks import load_task
from simlab.training.cohort import subject_coords
from simlab.training.snapshots import read_shard


def record_cohort(run: RunDirectory, name: str, spec: RigSpec, progress: bool = True) -> xr.Dataset:
    """One recording of every subject of the run with rig ``spec`` (called ``name``)."""
    protocol = run.protocol()
    plan = plan_cohort(protocol)
    subjects = xr.open_dataset(run.subjects_file).load()
    rig = Rig(spec)
    session_steps = protocol.session_steps()
    networks: dict[tuple[str, str], Network] = {}

    def network_for(architecture: str, task: str) -> Network:
        # Recording uses the true input-output derivatives (credit "backprop"), whatever rule
        # trained the subject: a paired rig measures the network, not its learning rule.
        if (architecture, task) not in networks:
            n_classes = load_task(protocol.task_spec(task)).n_classes
            networks[architecture, task] = Network(protocol.architecture_spec(architecture), n_classes, "backprop")
        return networks[architecture, task]

    n_layers = max(len(network_for(s.architecture, s.task).site_names) for s in plan.subjects)
    shape = (len(plan), n_layers)
    observation = np.full((*shape, len(session_steps), len(rig.observables)), np.nan, np.float32)
    layer_name = np.full(shape, "", dtype=object)
    n_units = np.zeros(shape, np.int64)
    n_recorded = np.zeros(shape, np.int64)

    bar = tqdm(total=len(plan), desc=f"recording {name}", unit="subject", disable=not progress)
    for pop in plan.populations:
        shard = read_shard(run.shard(pop.id))
        network = network_for(pop.architecture, pop.task)
        stimuli = run.stimuli(pop.task)
        sites = len(network.site_names)
        indices = [subject.index for subject in pop.subjects]
        result = rig.record(network, shard.params, stimuli, indices)
        observation[indices, :sites] = result.observation
        layer_name[indices, :sites] = network.site_names
        n_units[indices, :sites] = result.n_units
        n_recorded[indices, :sites] = result.n_recorded
        bar.update(len(indices))
    bar.close()

    coords = subject_coords(plan, subjects["final_accuracy"].values, subjects["status"].values)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return build_recording(
        observation,
        subject_ids=[s.id for s in plan.subjects],
        subject_coords={key: values for key, (_, values) in coords.items()},
        layer_coords={"layer_name": layer_name.astype(str), "n_units": n_units, "n_recorded": n_recorded},
        steps=session_steps,
        total_steps=protocol.training.steps,
        observables=rig.observables,
        protocol_text=run.protocol_text(),
        rig_settings={"name": name, "measure": rig.measure, **spec.model_dump()},
        title=f"{protocol.name}: {name} recording ({rig.measure})",
        history=f"{created} {shlex.join(['simlab', *sys.argv[1:]])}",
    )
