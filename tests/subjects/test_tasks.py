"""Tasks: array layout, dtypes, splits, global random state, stimulus sets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from simlab.subjects import tasks
from simlab.specs.subjects import DigitsSpec, MNIST1DSpec
from simlab.subjects.tasks import TaskData, load_task, stimulus_set

SMALL_MNIST1D = MNIST1DSpec(num_samples=300, data_seed=3)


def _check_layout(task: TaskData, length: int, n_total: int):
    assert task.n_classes == 10
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.ndim == 3 and x.shape[1:] == (length, 1)
        assert y.shape == (x.shape[0],)
        assert y.min() >= 0 and y.max() <= 9
        assert np.isfinite(x).all()
    assert len(task.y_train) + len(task.y_test) == n_total
    assert len(task.y_train) > 0 and len(task.y_test) > 0
    assert task.input_shape == (length, 1)
    assert set(np.unique(task.y_train)) == set(range(10))


def _rows(x):
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_mnist1d_layout():
    task = load_task(SMALL_MNIST1D)
    _check_layout(task, 40, 300)
    assert len(task.y_train) == 240  # mnist1d's train split is 0.8
    assert not _rows(task.x_train) & _rows(task.x_test)
    assert load_task(SMALL_MNIST1D) is task  # cached


def test_digits_layout():
    task = load_task(DigitsSpec())
    _check_layout(task, 64, 1797)
    assert len(task.y_test) == round(0.25 * 1797)
    # normalized as a whole
    x = np.concatenate([task.x_train, task.x_test])
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, rel=1e-4)
    # a different data seed, a different split of the same examples
    other = load_task(DigitsSpec(data_seed=1))
    assert not np.array_equal(other.y_test, task.y_test)
    assert sorted(_rows(other.x_train) | _rows(other.x_test)) == sorted(_rows(task.x_train) | _rows(task.x_test))


def test_digits_as_images_are_the_digits_pixel_for_pixel():
    """layout: image gives the same examples and split as [8, 8, 1] images: scikit-learn's
    ``images`` (upright 8x8, not transposed), normalized as the signals are."""
    from sklearn.datasets import load_digits

    signal, image = load_task(DigitsSpec()), load_task(DigitsSpec(layout="image"))
    assert image.x_train.shape[1:] == (8, 8, 1) and image.x_test.shape[1:] == (8, 8, 1)
    np.testing.assert_array_equal(image.y_test, signal.y_test)
    np.testing.assert_array_equal(image.x_test.reshape(len(image.x_test), 64), signal.x_test[..., 0])
    raw = load_digits()
    scaled = raw.images / 16.0
    reference = (scaled - scaled.mean()) / scaled.std()
    x = np.concatenate([image.x_train, image.x_test])[..., 0]

    def rows(images):
        return sorted(np.round(one, 4).astype(np.float32).tobytes() for one in images)

    assert rows(x) == rows(reference)
    assert rows(x) != rows(reference.transpose(0, 2, 1))


def _same_numpy_state(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def test_mnist1d_generation_leaves_global_random_state_alone():
    saved_numpy, saved_python = np.random.get_state(), random.getstate()
    try:
        np.random.seed(12345)
        random.seed(12345)
        numpy_before, python_before = np.random.get_state(), random.getstate()
        # bypass the cache so that mnist1d really generates
        task = tasks._mnist1d.__wrapped__(100, 7)
        assert len(task.y_train) == 80
        assert _same_numpy_state(np.random.get_state(), numpy_before)
        assert random.getstate() == python_before

        # the guard matters: mnist1d itself reseeds the global generators
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples, args.seed = 100, 7
        make_dataset(args)
        assert not _same_numpy_state(np.random.get_state(), numpy_before)
    finally:
        np.random.set_state(saved_numpy)
        random.setstate(saved_python)


def test_preserving_global_random_state_restores_on_error():
    numpy_before, python_before = np.random.get_state(), random.getstate()

    def make():
        np.random.seed(0)
        random.seed(0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        tasks._preserving_global_random_state(make)
    assert _same_numpy_state(np.random.get_state(), numpy_before)
    assert random.getstate() == python_before


def test_stimulus_set():
    task = load_task(DigitsSpec())
    x, y = stimulus_set(task, 50, seed=4)
    assert x.shape == (50, 64, 1) and y.shape == (50,)
    assert x.dtype == np.float32 and y.dtype == np.int32
    # deterministic
    x2, y2 = stimulus_set(task, 50, seed=4)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # a different seed, a different set
    x3, _ = stimulus_set(task, 50, seed=5)
    assert not np.array_equal(x, x3)
    # a subset of the test split, without repeats, labels kept with their inputs
    flat_test = task.x_test.reshape(len(task.x_test), -1)
    for row, label in zip(x.reshape(50, -1), y):
        matches = np.flatnonzero((flat_test == row).all(axis=1))
        assert len(matches) >= 1 and label in task.y_test[matches]
    assert len(_rows(x)) == 50
    # the whole test split is allowed, one more is not
    n_test = len(task.y_test)
    assert stimulus_set(task, n_test, seed=0)[0].shape[0] == n_test
    with pytest.raises(ValueError):
        stimulus_set(task, n_test + 1, seed=0)
