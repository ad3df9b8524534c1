"""The snapshot store: one file per population with everything training left behind.

A shard holds parameters and feedback kernels at every session (leading axes [replicate,
session]) plus each subject's training curve, health metric per session (``test_accuracy``:
the test accuracy of its outputs, or of a linear probe on its representation; which one is
``health_metric``) and status. Rigs read
shards, never retrain. A shard is written atomically, so an existing shard is a finished
population (a rerun can skip it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simlab.fileio import atomic_path
from simlab.training.population import PopulationResult

SEPARATOR = "/"


def _flatten(tree: dict, prefix: str) -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{SEPARATOR}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = np.asarray(value)
    return flat


def _unflatten(flat: dict[str, np.ndarray], prefix: str) -> dict:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        parts = name.split(SEPARATOR)
        if parts[0] != prefix:
            continue
        node = tree
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


@dataclass
class Shard:
    """One population's snapshots and training results, as read back from the store."""

    population: str
    subject_ids: list[str]
    session_steps: np.ndarray
    params: dict
    state: dict
    losses: np.ndarray
    test_accuracy: np.ndarray
    status: list[str]
    health_metric: str = "test_accuracy"
    diverged_step: list[int] | None = None  # per replicate, -1 where it did not diverge


def write_shard(path: Path, population: str, subject_ids, session_steps, result: PopulationResult, force=False):
    arrays = {**_flatten(result.params, "params"), **_flatten(result.state, "state")}
    meta = {
        "population": population,
        "subject_ids": list(subject_ids),
        "status": list(result.status),
        "health_metric": result.health_metric,
        "diverged_step": [int(step) for step in result.diverged_step] if result.diverged_step is not None else None,
    }
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                session_steps=np.asarray(session_steps),
                losses=result.losses.astype(np.float32),
                test_accuracy=result.test_accuracy.astype(np.float32),
                **arrays,
            )


def read_shard(path: Path) -> Shard:
    with np.load(path) as data:
        flat = {name: data[name] for name in data.files}
    meta = json.loads(str(flat.pop("meta")))
    return Shard(
        population=meta["population"],
        subject_ids=meta["subject_ids"],
        session_steps=flat.pop("session_steps"),
        params=_unflatten(flat, "params"),
        state=_unflatten(flat, "state"),
        losses=flat.pop("losses"),
        test_accuracy=flat.pop("test_accuracy"),
        status=meta["status"],
        health_metric=meta.get("health_metric", "test_accuracy"),  # shards written before it existed
        diverged_step=meta.get("diverged_step"),
    )
