"""The run directory: one per protocol run, laid out along the flow of data.

    protocol.yaml            the protocol as run (defaults filled in)
    stimuli.npz              the stimulus set of each task (inputs and labels)
    snapshots/<population>.npz   parameters and feedback kernels at every session
    subjects.nc              the subject table: factors, training curves, accuracy, status
    recordings/<rig>.nc      one recording per rig (the NetCDF data contract)
    analyses/<name>.nc/.txt  analysis results and their printed tables
    log.txt                  what was done, when
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from simlab.errors import SimlabError
from simlab.fileio import atomic_path
from simlab.protocol import Protocol, parse_protocol

PROTOCOL_FILE = "protocol.yaml"


class RunDirectory:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def existing(cls, path: str | Path) -> "RunDirectory":
        """A run directory that ``simlab run`` made, or a clear error."""
        run = cls(path)
        if not run.path.is_dir():
            raise SimlabError(f"{path}: no such run directory")
        if not run.protocol_file.is_file():
            raise SimlabError(f"{path}: not a simlab run directory (it has no {PROTOCOL_FILE})")
        return run

    @property
    def protocol_file(self) -> Path:
        return self.path / PROTOCOL_FILE

    @property
    def stimuli_file(self) -> Path:
        return self.path / "stimuli.npz"

    @property
    def subjects_file(self) -> Path:
        return self.path / "subjects.nc"

    @property
    def log_file(self) -> Path:
        return self.path / "log.txt"

    def shard(self, population: str) -> Path:
        return self.path / "snapshots" / f"{population}.npz"

    def recording(self, name: str) -> Path:
        return self.path / "recordings" / f"{name}.nc"

    def analysis(self, name: str, suffix: str) -> Path:
        return self.path / "analyses" / f"{name}.{suffix}"

    def protocol(self) -> Protocol:
        return parse_protocol(self.protocol_file.read_text(), source=str(self.protocol_file))

    def protocol_text(self) -> str:
        return self.protocol_file.read_text()

    def write_stimuli(self, stimuli: dict[str, tuple[np.ndarray, np.ndarray]], force: bool = False) -> None:
        arrays = {}
        for task, (inputs, labels) in stimuli.items():
            arrays[f"{task}/inputs"], arrays[f"{task}/labels"] = inputs, labels
        with atomic_path(self.stimuli_file, force) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

    def stimuli(self, task: str) -> np.ndarray:
        """The inputs of a task's stimulus set, exactly as shown during ``simlab run``."""
        with np.load(self.stimuli_file) as data:
            if f"{task}/inputs" not in data.files:
                raise SimlabError(f"{self.stimuli_file}: no stimulus set for task {task!r}")
            return data[f"{task}/inputs"]

    def stimulus_labels(self, task: str) -> np.ndarray:
        """The labels of a task's stimulus set (aligned with :meth:`stimuli`)."""
        with np.load(self.stimuli_file) as data:
            if f"{task}/labels" not in data.files:
                raise SimlabError(f"{self.stimuli_file}: no stimulus labels for task {task!r}")
            return data[f"{task}/labels"]

    def log(self, message: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(self.log_file, "a") as handle:
            handle.write(f"{stamp} {message}\n")
