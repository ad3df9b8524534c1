"""The run directory: one per protocol run, laid out along the flow of data.

    protocol.yaml                the protocol as run (defaults filled in)
    stimuli.npz                  the stimulus set of each task (inputs and labels)
    stimuli/<task>-<source>-n<size>-seed<seed>.npz   a rig's own stimulus set
    calibration/<population>.nc  a population's calibration trials (a cache, keyed by its inputs)
    calibration.nc, .txt         every population's trials and choices, and their table
    protocol.calibrated.yaml     ``simlab calibrate``: the protocol with the chosen rates pinned
    snapshots/<population>.npz   parameters and feedback kernels at every session
    subjects.nc                  the subject table: factors, training curves, accuracy, status
    recordings/<name>.nc         one recording per rig (the NetCDF data contract)
    recordings/robustness/       the re-recordings of the robustness grid
    analyses/<name>.nc, .txt     analysis results and their printed tables
    figures/<name>.png, .svg, .pdf   figures of the analyses
    report.html                  every figure and table on one page
    log.txt                      what was done, when

:class:`RunDirectory` is the one place that knows these paths; every stage asks it.
"""

from __future__ import annotations

import datetime
import functools
import re
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from simlab.errors import SimlabError
from simlab.fileio import atomic_path
from simlab.protocol import Protocol, parse_protocol
from simlab.specs.classifiers import imports_allowed

PROTOCOL_FILE = "protocol.yaml"


@functools.lru_cache(maxsize=16)
def _parsed(text: str, source: str, imports_allowed: bool) -> Protocol:
    """A protocol text is validated once per process (and per consent to imports: an accepted
    import path must not outlive the consent), however many stages read it."""
    return parse_protocol(text, source=source)


def recording_name(name: str, settings: BaseModel, base: BaseModel | None = None) -> str:
    """The rig's name, then every setting that differs from ``base``, in the order of the
    settings model's fields (nested ones by their own field names): ``units=20, noise=0.5`` on
    a protocol rig ``electrophysiology`` gives ``electrophysiology-units20-noise0.5``;
    ``schedule: {count: 6, spacing: log}`` gives ``...-count6-spacinglog``. A setting switched
    on is its name alone (``keep_units`` -> ``keep_units``), a pair joins its values with
    ``_`` (``window: [0, 0.2]`` -> ``window0.0_0.2``); a float always has a point (``units=1.0``,
all units as a fraction, is ``units1.0``; one unit is ``units1``). No difference: the name alone."""
    changed = _differences(settings.model_dump(mode="json"), base.model_dump(mode="json") if base else {})
    parts = [name, *changed]
    return "-".join(re.sub(r"[^A-Za-z0-9._]", "_", part) for part in parts)


def _differences(values: dict, base: dict) -> list[str]:
    parts = []
    for field, value in values.items():
        old = base.get(field)
        if isinstance(value, dict):
            parts += _differences(value, old if isinstance(old, dict) else {})
        elif value != old:
            parts.append(field if value is True else f"{field}{_spelled(value)}")
    return parts


def _spelled(value) -> str:
    if isinstance(value, (list, tuple)):
        return "_".join(_spelled(v) for v in value)
    if isinstance(value, float):  # always with a point: the fraction 1.0 is not the count 1
        text = f"{value:g}"
        return text if any(c in text for c in ".en") else f"{text}.0"
    return str(value)


class RunDirectory:
    """The files of one run, by what they hold (see the module docstring for the layout)."""

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
        return self.snapshots_dir / f"{population}.npz"

    @property
    def snapshots_dir(self) -> Path:
        return self.path / "snapshots"

    def shard_files(self) -> dict[str, Path]:
        """population id -> its snapshot shard, for the populations trained so far."""
        return {path.stem: path for path in sorted(self.snapshots_dir.glob("*.npz"))}

    @property
    def calibration_dir(self) -> Path:
        return self.path / "calibration"

    def calibration(self, population: str) -> Path:
        return self.calibration_dir / f"{population}.nc"

    def calibration_table(self, suffix: str = "nc") -> Path:
        return self.path / f"calibration.{suffix}"

    @property
    def calibrated_protocol_file(self) -> Path:
        return self.path / "protocol.calibrated.yaml"

    def rig_stimuli(self, task: str, source: str, size: int, seed: int) -> Path:
        """Where a rig's own stimulus set for ``task`` is kept (generated once per run)."""
        return self.path / "stimuli" / f"{task}-{source}-n{size}-seed{seed}.npz"

    @property
    def recordings_dir(self) -> Path:
        return self.path / "recordings"

    def recording(self, name: str) -> Path:
        return self.recordings_dir / f"{name}.nc"

    def recording_for(self, name: str, settings: BaseModel, base: BaseModel | None = None) -> Path:
        """Where a rig's recording goes: ``recordings/<name>.nc`` for the rig as ``base`` has it
        (the file ``simlab run`` writes for a protocol's rig), else the name followed by each
        setting that differs from ``base`` (:func:`recording_name`)."""
        return self.recording(recording_name(name, settings, base))

    def recording_files(self) -> dict[str, Path]:
        """name -> file of every recording in ``recordings/`` (the rigs' and ``simlab record``'s)."""
        return {path.stem: path for path in sorted(self.recordings_dir.glob("*.nc"))}

    def robustness_recording(self, name: str) -> Path:
        """A re-recording of the robustness grid (a cache: the grid reuses what it has)."""
        return self.recordings_dir / "robustness" / f"{name}.nc"

    @property
    def analyses_dir(self) -> Path:
        return self.path / "analyses"

    def analysis(self, name: str, suffix: str) -> Path:
        return self.analyses_dir / f"{name}.{suffix}"

    def analysis_files(self, suffix: str = "nc") -> dict[str, Path]:
        """name -> file of every analysis result (``suffix`` "txt": their printed tables)."""
        return {path.stem: path for path in sorted(self.analyses_dir.glob(f"*.{suffix}"))}

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    @property
    def protocol(self) -> Protocol:
        """The protocol as run (parsed once per process for a given text)."""
        return _parsed(self.protocol_text(), str(self.protocol_file), imports_allowed())

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
