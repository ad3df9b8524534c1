"""Stimulus sets of rigs: held-out task inputs or noise inputs, fixed per run.

The run's own stimulus set (``recording.stimuli`` of the protocol) lives in
``stimuli.npz``. A rig may ask for another set; it is generated once, saved under
``stimuli/`` in the run directory and reused, so every recording made with the same settings
saw exactly the same inputs.
"""

from __future__ import annotations

import numpy as np

from simlab.errors import SimlabError
from simlab.fileio import atomic_path
from simlab.protocol import Protocol
from simlab.specs.rigs import StimulusSpec
from simlab.rundir import RunDirectory
from simlab.subjects.tasks import load_task, stimulus_set


def stimuli_for(run: RunDirectory, protocol: Protocol, task_name: str, spec: StimulusSpec | None):
    """(inputs, description) of the stimulus set a rig shows subjects of one task."""
    if spec is None:
        return run.stimuli(task_name), f"{run.stimuli_file.name} (the run's stimulus set)"
    path = run.rig_stimuli(task_name, spec.source, spec.size, spec.seed)
    if not path.exists():
        task = load_task(protocol.task_spec(task_name))
        if spec.source == "heldout":
            if spec.size > len(task.y_test):
                raise SimlabError(
                    f"stimuli: a held-out set of {spec.size} asked, but task {task_name!r} has "
                    f"{len(task.y_test)} test examples"
                )
            inputs, _ = stimulus_set(task, spec.size, spec.seed)
        else:  # Gaussian inputs with the task's input shape, mean and standard deviation
            rng = np.random.default_rng([spec.seed, 11])
            shape = (spec.size, *task.input_shape)
            inputs = rng.normal(task.x_train.mean(), task.x_train.std(), size=shape).astype(np.float32)
        with atomic_path(path, force=True) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, inputs=inputs)
    with np.load(path) as data:
        return data["inputs"], str(path.relative_to(run.path))
