"""CIFAR-10 from a local directory, the teacher task, MLP depth/width, and the protocol-level
check that architectures and tasks agree on their input layout."""

from __future__ import annotations

import pickle

import jax
import numpy as np
import pytest
from pydantic import ValidationError

from simlab.errors import SimlabError
from simlab.specs.protocol import Protocol
from simlab.specs.rules import Adam
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.specs.subjects import CIFAR10Spec, MLPSpec, TeacherSpec, input_layout_conflict
from simlab.subjects import tasks
from simlab.subjects.tasks import load_task
from simlab.training.population import train_population

PER_BATCH = 6


def _write_cifar(root, per_batch=PER_BATCH, seed=0):
    """A tiny directory in CIFAR-10's python format; returns the images [n, 32, 32, 3] and labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f)
        written[name] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels))
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f)
    return written


def test_cifar10_reads_the_python_format(tmp_path):
    written = _write_cifar(tmp_path / "cifar")
    task = load_task(CIFAR10Spec(path=str(tmp_path / "cifar")))
    assert task.n_classes == 10 and task.input_shape == (32, 32, 3)
    assert task.x_train.shape == (5 * PER_BATCH, 32, 32, 3) and task.x_test.shape == (PER_BATCH, 32, 32, 3)
    assert task.x_train.dtype == np.float32 and task.y_train.dtype == np.int32
    np.testing.assert_array_equal(task.y_train, np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)]))
    np.testing.assert_array_equal(task.y_test, written["test_batch"][1])
    # normalized per channel with the training split's statistics; pixel layout HWC, rows R, G, B
    np.testing.assert_allclose(task.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(task.x_train.std(axis=(0, 1, 2)), 1.0, rtol=1e-3)
    raw = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).astype(np.float64)
    corr = np.corrcoef(raw[..., 1].ravel(), task.x_train[..., 1].ravel())[0, 1]
    assert corr > 0.9999


def test_cifar10_max_train_max_test_and_resolution(tmp_path):
    _write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_5").write_bytes(b"not read when max_train needs 2 batches")
    task = load_task(CIFAR10Spec(path=str(tmp_path / "cifar"), max_train=PER_BATCH + 2, max_test=4, resolution=16))
    assert task.x_train.shape == (PER_BATCH + 2, 16, 16, 3) and task.x_test.shape == (4, 16, 16, 3)


def test_cifar10_accepts_the_archive_directory(tmp_path):
    _write_cifar(tmp_path / "download" / "cifar-10-batches-py")
    assert load_task(CIFAR10Spec(path=str(tmp_path / "download"))).x_test.shape == (PER_BATCH, 32, 32, 3)


def test_cifar10_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SimlabError, match=f"cifar10: no directory {missing}"):
        load_task(CIFAR10Spec(path=str(missing)))
    root = tmp_path / "cifar"
    _write_cifar(root)
    (root / "data_batch_3").unlink()
    with pytest.raises(SimlabError, match=f"{root} lacks data_batch_3"):
        load_task(CIFAR10Spec(path=str(root)))
    _write_cifar(root)
    (root / "test_batch").write_bytes(b"\x00garbage")
    with pytest.raises(SimlabError, match=f"cannot read {root / 'test_batch'}"):
        load_task(CIFAR10Spec(path=str(root), max_test=3))
    _write_cifar(root)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(SimlabError, match=rf"{root / 'data_batch_1'}: expected b'data' of uint8 \[n, 3072\]"):
        load_task(CIFAR10Spec(path=str(root), max_train=5))
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, f)
    with pytest.raises(SimlabError, match="expected b'labels', 2 integers in 0..9"):
        load_task(CIFAR10Spec(path=str(root), max_train=1, max_test=2))


def test_teacher_task_is_deterministic_and_balanced():
    spec = TeacherSpec(input_dim=16, n_train=500, n_test=200, teacher_hidden=[32], data_seed=3)
    task = load_task(spec)
    assert task.x_train.shape == (500, 16, 1) and task.x_test.shape == (200, 16, 1)
    assert task.x_train.dtype == np.float32 and task.y_train.dtype == np.int32
    tasks._teacher.cache_clear()
    again = load_task(spec)
    assert again is not task
    np.testing.assert_array_equal(again.x_train, task.x_train)
    np.testing.assert_array_equal(again.y_test, task.y_test)
    other = load_task(spec.model_copy(update={"data_seed": 4}))
    assert not np.array_equal(other.y_train, task.y_train)
    counts = np.bincount(task.y_train, minlength=10)
    assert counts.min() > 0 and counts.max() < 4 * 50  # centered teacher outputs: no class dominates
    image = load_task(TeacherSpec(image_shape=[8, 8, 2], n_train=50, n_test=10))
    assert image.input_shape == (8, 8, 2) and image.n_classes == 10
    with pytest.raises(ValidationError):
        TeacherSpec(image_shape=[8, 8, 2], input_dim=100)
    with pytest.raises(ValidationError):
        TeacherSpec(image_shape=[6, 6, 2], teacher_resolution=4)


def test_teacher_task_is_learnable_by_a_small_mlp():
    task = load_task(TeacherSpec(input_dim=16, n_train=2000, n_test=500, teacher_hidden=[32], data_seed=1))
    rule = make_rule("adam", Adam(learning_rate=3e-3))
    network = Network(MLPSpec(hidden=[64]), task.n_classes, rule.credit)
    result = train_population(network, rule, task, 64, 400, [0, 400], [0])
    assert result.test_accuracy[0, -1] > 0.4  # chance 0.1


def test_mlp_depth_and_width():
    assert MLPSpec(depth=3, width=16).hidden == [16, 16, 16]
    assert MLPSpec(hidden=[4, 4], depth=2, width=4).hidden == [4, 4]
    assert MLPSpec(hidden=[7]) == MLPSpec(hidden=[7])  # the old form still works
    spec = MLPSpec(depth=2, width=8)
    assert MLPSpec.model_validate(spec.model_dump()) == spec
    for bad in ({"hidden": [3], "depth": 2, "width": 4}, {"depth": 2}, {"width": 0, "depth": 1}):
        with pytest.raises(ValidationError):
            MLPSpec.model_validate(bad)


def _protocol(architecture, task, tasks=None):
    data = {
        "name": "p",
        "cohort": {"architecture": architecture, "task": task, "learning_rule": ["sgdm"], "batch_size": [8]},
    }
    if tasks:
        data["tasks"] = tasks
    return data


def test_protocol_refuses_image_nets_on_signals_and_back():
    with pytest.raises(ValidationError) as info:
        Protocol.model_validate(_protocol(["mlp", "knet", "conv1d"], ["digits", "teacher_image"]))
    messages = {tuple(e["loc"]): e["msg"] for e in info.value.errors()}
    assert set(messages) == {("cohort", "architecture", 1), ("cohort", "architecture", 2)}
    assert "'knet' cannot be trained on task 'digits': it needs images" in messages[("cohort", "architecture", 1)]
    assert "'conv1d' cannot be trained on task 'teacher_image'" in messages[("cohort", "architecture", 2)]
    with pytest.raises(ValidationError, match="'conv1d' cannot be trained on task 'digits_image'"):
        Protocol.model_validate(_protocol(["knet", "conv1d"], ["digits_image"]))
    assert Protocol.model_validate(_protocol(["knet", "resnet18", "mlp"], ["digits_image", "digits_image_simclr"]))
    cifar = {"cifar": {"type": "cifar10", "path": "/data/cifar", "resolution": 16}}
    protocol = Protocol.model_validate(_protocol(["mlp", "resnet18v2", "alexnet_lrn"], ["cifar"], cifar))
    assert protocol.task_spec("cifar").resolution == 16
    assert input_layout_conflict(protocol.architecture_spec("resnet18v2"), protocol.task_spec("cifar")) is None
