"""Supervised classification tasks: data generated locally, shipped, or read from a local directory.

A task gives float32 inputs and int32 labels, split into train and test, in one of two
layouts: 1-D signals ``[examples, length, channels]`` (mnist1d, digits, the vector teacher
task) or images ``[examples, height, width, channels]`` (cifar10, digits as images, the image
teacher task; normalized). Architectures read these layouts directly, so a task is just data; which
architecture reads which layout is checked when a protocol is validated
(:func:`simlab.specs.subjects.input_layout_conflict`). Nothing is ever downloaded: CIFAR-10 is
read from a directory the protocol names.
"""

from __future__ import annotations

import codecs
import functools
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simlab.errors import SimlabError
from simlab.specs.subjects import CIFAR10Spec, DigitsSpec, MNIST1DSpec, TeacherSpec


@dataclass(frozen=True, eq=False)
class TaskData:
    """Arrays of one task. ``x_*``: [n, *input_shape] float32 (signals [length, channels] or
    images [height, width, channels]); ``y_*``: [n] int32."""

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
def _digits(test_fraction: float, data_seed: int, layout: str = "signal") -> TaskData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x = (x - x.mean()) / x.std()
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(data_seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    x = x.reshape(-1, 8, 8, 1) if layout == "image" else x[..., None]
    return TaskData(
        name="digits",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        n_classes=10,
    )


CIFAR10_FILES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR10_HINT = (
    "expected CIFAR-10's python version (the cifar-10-batches-py directory of "
    "cifar-10-python.tar.gz: data_batch_1 .. data_batch_5, test_batch, batches.meta)"
)


def _cifar10_root(path: str) -> Path:
    root = Path(path).expanduser()
    if root.is_dir() and not (root / "test_batch").exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"  # the directory the archive unpacks to
    if not root.is_dir():
        raise SimlabError(f"cifar10: no directory {root}; {_CIFAR10_HINT}")
    missing = [name for name in CIFAR10_FILES if not (root / name).is_file()]
    if missing:
        raise SimlabError(f"cifar10: {root} lacks {', '.join(missing)}; {_CIFAR10_HINT}")
    return root


def _numpy_function(module: str, name: str):
    """numpy's own array-rebuilding function, from numpy 2's ``numpy._core`` or numpy 1's
    ``numpy.core`` (where a pickle names either)."""
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{prefix}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


class _Cifar10Unpickler(pickle.Unpickler):
    """Reads only what CIFAR-10's python files hold: dicts of numpy arrays, bytes, lists and
    numbers. A pickle names the callables it runs; every name but the three that rebuild an
    array is refused, so a crafted file cannot run code (``os.system`` and the like)."""

    _ALLOWED = {
        # an array as Python 2 pickled it (the official files), or Python 3 at protocol 2
        **{(f"{p}.multiarray", "_reconstruct"): lambda: _numpy_function("multiarray", "_reconstruct")
           for p in ("numpy.core", "numpy._core")},
        # an array at protocol 5 (a copy re-saved by Python 3)
        **{(f"{p}.numeric", "_frombuffer"): lambda: _numpy_function("numeric", "_frombuffer")
           for p in ("numpy.core", "numpy._core")},
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: codecs.encode,  # bytes as Python 3 writes them at protocol 2
    }

    def find_class(self, module: str, name: str):
        make = self._ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refused {module}.{name}: not part of CIFAR-10's format")
        return make()


def _unpickle(file: Path) -> dict:
    try:
        with open(file, "rb") as handle:
            content = _Cifar10Unpickler(handle, encoding="bytes").load()
    except Exception as exc:  # any unreadable pickle is the user's file to fix
        raise SimlabError(f"cifar10: cannot read {file} as a python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict):
        raise SimlabError(f"cifar10: {file} holds a {type(content).__name__}, expected a dict")
    return content


def _cifar10_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 32, 32, 3] uint8 and labels [n] of one batch file, checked."""
    batch = _unpickle(file)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise SimlabError(f"cifar10: {file}: expected b'data' of uint8 [n, 3072], got {got}")
    try:
        labels = np.asarray(labels, np.int64)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise SimlabError(f"cifar10: {file}: expected b'labels', {len(data)} integers in 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


@functools.lru_cache(maxsize=4)
def _cifar10(path: str, max_train: int | None, max_test: int | None, resolution: int) -> TaskData:
    root = _cifar10_root(path)
    _unpickle(root / "batches.meta")
    images, labels, kept = [], [], 0
    for i in range(1, 6):  # read only as many batches as max_train needs
        x, y = _cifar10_batch(root / f"data_batch_{i}")
        images.append(x)
        labels.append(y)
        kept += len(y)
        if max_train is not None and kept >= max_train:
            break
    x_train, y_train = np.concatenate(images)[:max_train], np.concatenate(labels)[:max_train]
    x_test, y_test = _cifar10_batch(root / "test_batch")
    x_test, y_test = x_test[:max_test], y_test[:max_test]

    def prepare(x):
        x = x.astype(np.float32) / 255.0
        block = 32 // resolution
        return x.reshape(len(x), resolution, block, resolution, block, 3).mean(axis=(2, 4))

    x_train, x_test = prepare(x_train), prepare(x_test)
    mean, std = x_train.mean(axis=(0, 1, 2)), x_train.std(axis=(0, 1, 2)) + 1e-6
    return TaskData(
        name="cifar10",
        x_train=((x_train - mean) / std).astype(np.float32),
        y_train=y_train.astype(np.int32),
        x_test=((x_test - mean) / std).astype(np.float32),
        y_test=y_test.astype(np.int32),
        n_classes=10,
    )


@functools.lru_cache(maxsize=8)
def _teacher(
    n_classes: int, dim: int, image_shape: tuple[int, ...] | None, n_train: int, n_test: int,
    hidden: tuple[int, ...], teacher_resolution: int, pixel_noise: float, data_seed: int,
) -> TaskData:
    rng = np.random.default_rng([data_seed, 2020])
    if image_shape is None:
        x = h = rng.standard_normal((n_train + n_test, dim))
    else:  # a coarse Gaussian image that the teacher reads, upsampled, plus pixel noise
        height, width, channels = image_shape
        side = teacher_resolution
        h = rng.standard_normal((n_train + n_test, side * side * channels))
        coarse = h.reshape(-1, side, 1, side, 1, channels)
        blocks = np.broadcast_to(coarse, (len(h), side, height // side, side, width // side, channels))
        x = blocks.reshape(len(h), dim) + pixel_noise * rng.standard_normal((len(h), dim))
    for width in hidden:  # a random ReLU teacher, He-initialized, with small biases
        h = np.maximum(h @ rng.standard_normal((h.shape[1], width)) * np.sqrt(2.0 / h.shape[1])
                       + 0.1 * rng.standard_normal(width), 0.0)
    logits = h @ rng.standard_normal((h.shape[1], n_classes)) / np.sqrt(h.shape[1])
    # centered per class over the drawn inputs, so that every class is about as frequent
    y = np.argmax(logits - logits.mean(axis=0), axis=1).astype(np.int32)
    shape = (dim, 1) if image_shape is None else image_shape
    x = x.astype(np.float32).reshape(len(x), *shape)
    return TaskData(
        name="teacher",
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train:],
        y_test=y[n_train:],
        n_classes=n_classes,
    )


def load_task(spec) -> TaskData:
    """The arrays of a task (cached per settings: generating mnist1d takes about a second).

    Raises :class:`SimlabError` naming the path when a CIFAR-10 directory is missing or
    malformed.
    """
    if isinstance(spec, MNIST1DSpec):
        return _mnist1d(spec.num_samples, spec.data_seed)
    if isinstance(spec, DigitsSpec):
        return _digits(spec.test_fraction, spec.data_seed, spec.layout)
    if isinstance(spec, CIFAR10Spec):
        return _cifar10(spec.path, spec.max_train, spec.max_test, spec.resolution)
    if isinstance(spec, TeacherSpec):
        image_shape = None if spec.image_shape is None else tuple(spec.image_shape)
        return _teacher(
            spec.n_classes, spec.dim, image_shape, spec.n_train, spec.n_test, tuple(spec.teacher_hidden),
            spec.teacher_resolution, spec.pixel_noise, spec.data_seed,
        )
    raise TypeError(f"unknown task spec {spec!r}")


def stimulus_set(task: TaskData, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded subset of held-out (test) inputs, shown at every session to every subject."""
    n = len(task.y_test)
    if size > n:
        raise ValueError(f"stimulus set of {size} asked, but task {task.name} has {n} test examples")
    chosen = np.sort(np.random.default_rng([seed, 7]).choice(n, size=size, replace=False))
    return task.x_test[chosen], task.y_test[chosen]
