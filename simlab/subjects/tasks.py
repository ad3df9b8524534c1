"""Supervised classification tasks whose data need no download.

Every task gives 1-D signals shaped ``[examples, length, channels]`` (float32) and integer
labels, split into train and test. Architectures read that layout directly, so a task is
just data.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np

from simlab.subjects.specs import DigitsSpec, MNIST1DSpec


@dataclass(frozen=True, eq=False)
class TaskData:
    """Arrays of one task. ``x_*``: [n, length, channels] float32; ``y_*``: [n] int32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.x_train.shape[1:]


def _preserving_global_random_state(make):
    """Run ``make()`` without disturbing numpy's and Python's global random state.

    mnist1d seeds both global generators for its own reproducibility; a library must not
    reset its caller's random state as a side effect.
    """
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        return make()
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@functools.lru_cache(maxsize=8)
def _mnist1d(num_samples: int, data_seed: int) -> TaskData:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = data_seed
    data = _preserving_global_random_state(lambda: make_dataset(args))
    return TaskData(
        name="mnist1d",
        x_train=data["x"].astype(np.float32)[..., None],
        y_train=data["y"].astype(np.int32),
        x_test=data["x_test"].astype(np.float32)[..., None],
        y_test=data["y_test"].astype(np.int32),
        n_classes=10,
    )


@functools.lru_cache(maxsize=8)
def _digits(test_fraction: float, data_seed: int) -> TaskData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x = (x - x.mean()) / x.std()
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(data_seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return TaskData(
        name="digits",
        x_train=x[train][..., None],
        y_train=y[train],
        x_test=x[test][..., None],
        y_test=y[test],
        n_classes=10,
    )


def load_task(spec: MNIST1DSpec | DigitsSpec) -> TaskData:
    """The arrays of a task (cached per settings: generating mnist1d takes about a second)."""
    if isinstance(spec, MNIST1DSpec):
        return _mnist1d(spec.num_samples, spec.data_seed)
    if isinstance(spec, DigitsSpec):
        return _digits(spec.test_fraction, spec.data_seed)
    raise TypeError(f"unknown task spec {spec!r}")


def stimulus_set(task: TaskData, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded subset of held-out (test) inputs, shown at every session to every subject."""
    n = len(task.y_test)
    if size > n:
        raise ValueError(f"stimulus set of {size} asked, but task {task.name} has {n} test examples")
    chosen = np.sort(np.random.default_rng([seed, 7]).choice(n, size=size, replace=False))
    return task.x_test[chosen], task.y_test[chosen]
