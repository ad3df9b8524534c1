"""Self-supervised contrastive subjects: NT-Xent, augmentations, the linear probe, the projection
head, protocols that declare contrastive tasks, and a mixed cohort through ``simlab run``.

References are independent: NT-Xent by explicit loops in numpy and a closed-form identity,
augmentations by numpy indexing, the probe by scikit-learn's Ridge.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import Ridge

from simlab.protocol import ProtocolError, parse_protocol
from simlab.recording.contract import open_recording, problems
from simlab.specs.rules import RULE_HYPERPARAMETERS
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network, ProjectionHead
from simlab.specs.subjects import (
    PRESET_TASKS,
    CIFAR10Spec,
    Conv1DSpec,
    ImageAugmentSpec,
    MLPSpec,
    SignalAugmentSpec,
    TeacherSpec,
)
from simlab.subjects.tasks import load_task
from simlab.training.augment import augment_images, augment_signals, crop_and_resize, shift_signal
from simlab.training.objectives import CROSS_ENTROPY, nt_xent, task_objective
from simlab.training.population import train_population
from simlab.training.probe import probe_accuracy, probe_subsample, ridge_probe
from simlab.training.snapshots import read_shard


# --------------------------------------------------------------------------- NT-Xent


def nt_xent_by_hand(z: np.ndarray, temperature: float) -> float:
    """NT-Xent written out term by term: anchor i, positive (i + N) mod 2N, all k != i."""
    two_n = len(z)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(two_n):
        positive = (i + two_n // 2) % two_n
        numerator = np.exp(unit[i] @ unit[positive] / temperature)
        denominator = sum(np.exp(unit[i] @ unit[k] / temperature) for k in range(two_n) if k != i)
        total += -np.log(numerator / denominator)
    return total / two_n


def test_nt_xent_matches_the_loss_written_out_by_hand():
    z = np.array([[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0], [0.9, 2.2, 0.1], [-0.5, 0.1, 1.0]])  # N = 2
    for temperature in (0.1, 0.5, 1.0):
        assert float(nt_xent(jnp.asarray(z, jnp.float32), temperature)) == pytest.approx(
            nt_xent_by_hand(z, temperature), rel=1e-5, abs=1e-6
        )


def test_nt_xent_ignores_the_norm_of_projections():
    z = np.random.default_rng(0).standard_normal((6, 4))
    scales = np.array([[1.0], [3.0], [0.2], [5.0], [1.5], [0.7]])
    assert float(nt_xent(jnp.asarray(z * scales), 0.3)) == pytest.approx(float(nt_xent(jnp.asarray(z), 0.3)), rel=1e-5)


def test_nt_xent_has_finite_gradients_at_a_zero_projection():
    # a ReLU head can map an example to exactly zero; its similarities are then 0
    z = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32).at[1].set(0.0)
    value, gradient = jax.value_and_grad(lambda z: nt_xent(z, 0.5))(z)
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(gradient)).all()
    np.testing.assert_array_equal(gradient[1], 0.0)  # no direction to move it in
    # the loss with the zero row's similarities set to 0 (its unit vector taken as 0)
    unit = np.asarray(z) / np.maximum(np.linalg.norm(np.asarray(z), axis=1, keepdims=True), 1e-30)
    logits = unit @ unit.T / 0.5
    np.fill_diagonal(logits, -np.inf)
    by_hand = np.mean([np.log(np.exp(logits[i]).sum()) - logits[i, (i + 2) % 4] for i in range(4)])
    assert float(value) == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("n, temperature", [(3, 0.5), (4, 0.25)])
def test_nt_xent_of_aligned_views_with_orthogonal_negatives(n, temperature):
    # views equal, all other examples orthogonal: s = 1 for the positive, 0 for 2N - 2 negatives
    # -> loss = -1/t + log(exp(1/t) + 2N - 2)
    basis = np.eye(n)
    z = np.concatenate([basis, basis]) * 2.5
    expected = -1.0 / temperature + np.log(np.exp(1.0 / temperature) + 2 * n - 2)
    assert float(nt_xent(jnp.asarray(z, jnp.float32), temperature)) == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- augmentations


def only(spec_type, **settings):
    """An augmentation spec with everything off except ``settings``."""
    off = {
        SignalAugmentSpec: dict(crop=1.0, shift=0, scale=[1.0, 1.0], noise=0.0, mask=0.0),
        ImageAugmentSpec: dict(crop_padding=0, flip=False, brightness=0.0, contrast=0.0, noise=0.0),
    }[spec_type]
    return spec_type(**{**off, **settings})


SIGNALS = np.random.default_rng(1).standard_normal((64, 20, 2)).astype(np.float32)
IMAGES = np.random.default_rng(2).standard_normal((64, 6, 5, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "augment, spec, x",
    [
        (augment_signals, SignalAugmentSpec(crop=0.7, mask=0.2), SIGNALS),
        (augment_images, ImageAugmentSpec(), IMAGES),
    ],
)
def test_augmentations_keep_shapes_are_deterministic_per_key_and_differ_per_example(augment, spec, x):
    key = jax.random.key(3)
    compiled = jax.jit(lambda k, a: augment(spec, k, a))
    view = np.asarray(compiled(key, x))
    assert view.shape == x.shape and view.dtype == np.float32
    np.testing.assert_array_equal(view, np.asarray(compiled(key, x)))
    np.testing.assert_allclose(view, np.asarray(augment(spec, key, x)), atol=1e-5)  # jit or not
    assert not np.array_equal(view, np.asarray(compiled(jax.random.key(4), x)))
    # one example repeated: each copy gets its own draws
    views = np.asarray(compiled(key, np.repeat(x[:1], len(x), axis=0)))
    assert len({v.tobytes() for v in views}) == len(x)


def test_shift_is_a_roll_or_a_zero_filled_move():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    for shift in (-4, -1, 0, 2, 5):
        np.testing.assert_array_equal(np.asarray(shift_signal(jnp.asarray(x), shift, True)), np.roll(x, shift, axis=0))
        expected = np.zeros_like(x)
        if shift >= 0:
            expected[shift:] = x[: len(x) - shift]
        else:
            expected[:shift] = x[-shift:]
        np.testing.assert_array_equal(np.asarray(shift_signal(jnp.asarray(x), shift, False)), expected)


def test_random_shifts_stay_within_the_range():
    x = SIGNALS[:1].repeat(32, axis=0)
    views = np.asarray(augment_signals(only(SignalAugmentSpec, shift=3, shift_mode="circular"), jax.random.key(0), x))
    shifts = []
    for view in views:
        matches = [s for s in range(-3, 4) if np.array_equal(view, np.roll(x[0], s, axis=0))]
        assert len(matches) == 1
        shifts += matches
    assert len(set(shifts)) > 3


def test_crop_and_resize_of_the_whole_signal_is_the_identity_and_of_half_a_stretch():
    x = np.sin(np.linspace(0, 3, 16))[:, None].astype(np.float32)
    np.testing.assert_allclose(np.asarray(crop_and_resize(jnp.asarray(x), 0.0, 16.0)), x, atol=1e-6)
    # the second half stretched x2: output sample j sits at position 8 + (j + 0.5) / 2 - 0.5
    position = 8 + (np.arange(16) + 0.5) / 2 - 0.5
    expected = np.interp(position, np.arange(16), x[:, 0])[:, None]
    np.testing.assert_allclose(np.asarray(crop_and_resize(jnp.asarray(x), 8.0, 8.0)), expected, atol=1e-6)


def test_scaling_and_masking_of_signals():
    views = np.asarray(augment_signals(only(SignalAugmentSpec, scale=[0.5, 2.0]), jax.random.key(0), SIGNALS))
    ratio = views / SIGNALS
    assert np.allclose(ratio, ratio[:, :1, :1], rtol=1e-5)  # one factor per example
    assert ratio.min() >= 0.5 and ratio.max() <= 2.0 and ratio[:, 0, 0].std() > 0.1

    views = np.asarray(augment_signals(only(SignalAugmentSpec, mask=0.25), jax.random.key(0), SIGNALS))
    for view, x in zip(views, SIGNALS):
        zeroed = np.flatnonzero((view == 0).all(axis=1))
        assert len(zeroed) == 5 and np.all(np.diff(zeroed) == 1)  # one block of round(0.25 * 20)
        kept = np.setdiff1d(np.arange(20), zeroed)
        np.testing.assert_array_equal(view[kept], x[kept])


def test_flip_mirrors_about_half_of_the_images_and_leaves_the_others():
    views = np.asarray(augment_images(only(ImageAugmentSpec, flip=True), jax.random.key(0), IMAGES))
    flipped = [np.array_equal(v, x[:, ::-1]) for v, x in zip(views, IMAGES)]
    kept = [np.array_equal(v, x) for v, x in zip(views, IMAGES)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_crop_with_padding_is_a_window_of_the_zero_padded_image():
    views = np.asarray(augment_images(only(ImageAugmentSpec, crop_padding=2), jax.random.key(0), IMAGES))
    offsets = set()
    for view, x in zip(views, IMAGES):
        padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
        found = [(t, l) for t in range(5) for l in range(5) if np.array_equal(view, padded[t : t + 6, l : l + 5])]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 10


def test_brightness_and_contrast_are_affine_per_image():
    spec = only(ImageAugmentSpec, brightness=0.5, contrast=0.3)
    views = np.asarray(augment_images(spec, jax.random.key(0), IMAGES))
    for view, x in zip(views, IMAGES):
        slope, offset = np.polyfit(x.ravel(), view.ravel(), 1)
        np.testing.assert_allclose(view, slope * x + offset, atol=1e-4)
        assert 0.7 - 1e-5 <= slope <= 1.3 + 1e-5
        # view = f (x + b - m') + m' with m' = mean(x) + b: offset = (1 - f) mean(x) + b
        brightness = offset - (1 - slope) * x.mean()
        assert abs(brightness) <= 0.5 + 1e-4


# --------------------------------------------------------------------------- linear probe


@pytest.mark.parametrize("n_train, n_features", [(120, 7), (30, 50)])  # primal and dual forms
def test_probe_agrees_with_scikit_learn_ridge_on_standardized_features(n_train, n_features):
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((4, n_features)) * 1.5
    labels = rng.integers(0, 4, n_train + 80)
    features = (centres[labels] + rng.standard_normal((n_train + 80, n_features))) * rng.uniform(0.1, 10, n_features)
    features[:, 0] = 3.0  # a constant feature: centred only
    train, test = slice(0, n_train), slice(n_train, None)
    ridge = 0.05
    mean, std = features[train].mean(0), features[train].std(0)
    std[std == 0] = 1.0
    reference = Ridge(alpha=ridge * n_train).fit((features[train] - mean) / std, np.eye(4)[labels[train]])
    expected = reference.predict((features[test] - mean) / std).argmax(1)

    f32 = features.astype(np.float32)
    predict = ridge_probe(jnp.asarray(f32[train]), jnp.asarray(labels[train]), 4, ridge)
    np.testing.assert_array_equal(np.asarray(predict(jnp.asarray(f32[test]))), expected)
    accuracy = probe_accuracy(f32[train], labels[train], f32[test], labels[test], 4, ridge)
    assert float(accuracy) == pytest.approx(np.mean(expected == labels[test]))


def test_probe_subsample_is_fixed_and_only_when_needed():
    np.testing.assert_array_equal(probe_subsample(50, 100), np.arange(50))
    chosen = probe_subsample(1000, 200)
    assert len(np.unique(chosen)) == 200 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, probe_subsample(1000, 200))


# --------------------------------------------------------------------------- network and objective


@pytest.mark.parametrize("credit", ["backprop", "feedback"])
def test_projection_head_replaces_the_readout_and_every_layer_learns(credit):
    head = ProjectionHead(hidden=6, dim=4)
    network = Network(Conv1DSpec(channels=[3], kernel_size=3, stride=2, hidden=[5]), 10, credit, head)
    assert network.site_names == ("conv_0", "dense_0", "projection_0", "projection_1")
    x = jnp.asarray(SIGNALS[:8, :, :1])
    params, state = network.init(jax.random.key(0), x)
    outputs, sites = network.apply(params, state, x)
    assert outputs.shape == (8, 4) and sites["projection_1"].output is outputs
    np.testing.assert_array_equal(network.representation(params, state, x), sites["dense_0"].output)
    views = jnp.concatenate([x, x + 0.1])
    grads = jax.grad(lambda p: nt_xent(network.apply(p, state, views)[0], 0.5))(params)
    assert all(float(jnp.abs(grads[name]["w"]).sum()) > 0 for name in network.site_names)


@pytest.mark.parametrize("rule_name", list(RULE_HYPERPARAMETERS))
def test_every_learning_rule_trains_a_contrastive_subject(rule_name):
    spec = PRESET_TASKS["digits_simclr"]
    rule = make_rule(rule_name, RULE_HYPERPARAMETERS[rule_name]())
    network = Network(MLPSpec(hidden=[6]), 10, rule.credit, ProjectionHead(5, 3))
    result = train_population(network, rule, load_task(spec), 8, 6, [0, 3, 6], [0], objective=task_objective(spec))
    assert result.status == ["ok"] and np.isfinite(result.losses).all()
    assert result.test_accuracy.shape == (1, 3) and np.isfinite(result.test_accuracy).all()
    # the parameters moved, the head included
    for site in network.site_names:
        assert not np.array_equal(result.params[site]["w"][0, 0], result.params[site]["w"][0, -1]), site


def test_a_task_objective_is_cross_entropy_unless_the_task_is_contrastive():
    assert task_objective(PRESET_TASKS["mnist1d"]) is CROSS_ENTROPY
    objective = task_objective(PRESET_TASKS["mnist1d_simclr"])
    assert (objective.family, objective.health_metric) == ("self_supervised", "probe_accuracy")
    x, y = jnp.asarray(SIGNALS[:5, :, :1]), jnp.arange(5)
    inputs, targets = objective.prepare(jax.random.key(0), x, y)
    assert inputs.shape == (10, 20, 1)
    np.testing.assert_array_equal(targets, np.concatenate([np.arange(5)] * 2))
    assert not np.array_equal(inputs[:5], inputs[5:])  # two different views

    # images (a user's cifar10 spec, the image teacher): views by the image augmentations
    cifar = CIFAR10Spec(path="anywhere", objective="contrastive")
    assert task_objective(cifar).family == "self_supervised"
    images = jnp.asarray(IMAGES[:4])
    views, _ = task_objective(PRESET_TASKS["teacher_image_simclr"]).prepare(jax.random.key(0), images, jnp.arange(4))
    assert views.shape == (8, 6, 5, 3) and not np.array_equal(views[:4], views[4:])


def test_contrastive_training_raises_probe_accuracy_on_mnist1d():
    spec = PRESET_TASKS["mnist1d_simclr"].model_copy(
        update={"contrastive": PRESET_TASKS["mnist1d_simclr"].contrastive.model_copy(update={"probe_examples": 2000})}
    )
    rule = make_rule("adam", RULE_HYPERPARAMETERS["adam"]())
    head = ProjectionHead(spec.contrastive.projection_hidden, spec.contrastive.projection_dim)
    network = Network(Conv1DSpec(channels=[16, 32], hidden=[64]), 10, rule.credit, head)
    result = train_population(
        network, rule, load_task(spec), 128, 800, [0, 800], [0], objective=task_objective(spec)
    )
    assert result.health_metric == "probe_accuracy" and result.status == ["ok"]
    before, after = result.test_accuracy[0]
    assert after > before + 0.05, (before, after)


# --------------------------------------------------------------------------- protocols


def parse(text: str):
    return parse_protocol(textwrap.dedent(text))


BASE = """\
name: contrastive
cohort: {architecture: mlp, task: mine, learning_rule: sgdm, batch_size: 8}
"""


def test_a_protocol_declares_a_contrastive_task_with_defaults_or_settings():
    protocol = parse(BASE + "tasks:\n  mine: {type: digits, objective: contrastive}\n")
    spec = protocol.task_spec("mine")
    assert spec.objective == "contrastive" and spec.contrastive.temperature > 0
    protocol = parse(
        BASE + "tasks:\n  mine: {type: digits, objective: contrastive, contrastive: "
        "{temperature: 0.2, projection_dim: 8, signal_augment: {shift: 2, mask: 0.1}}}\n"
    )
    settings = protocol.task_spec("mine").contrastive
    assert (settings.temperature, settings.projection_dim, settings.signal_augment.mask) == (0.2, 8, 0.1)
    assert parse(protocol.to_yaml()) == protocol
    # a supervised task is written as before the objective existed (runs keep their protocol text)
    supervised = parse(BASE + "tasks:\n  mine: {type: digits}\n")
    assert "objective" not in supervised.to_yaml() and parse(supervised.to_yaml()) == supervised
    image = parse(BASE.replace("mine", "teacher_image_simclr").replace("mlp", "knet")).task_spec("teacher_image_simclr")
    assert isinstance(image, TeacherSpec) and image.image_shape == [16, 16, 3] and image.objective == "contrastive"


@pytest.mark.parametrize(
    "task, location, words",
    [
        ("{type: digits, contrastive: {temperature: 0.2}}", "tasks.mine.contrastive", "objective: contrastive"),
        ("{type: digits, objective: simclr}", "tasks.mine.objective", "supervised"),
        ("{type: mnist1d, objective: contrastive, contrastive: {temperature: 0}}",
         "tasks.mine.contrastive.temperature", "positive"),
        ("{type: mnist1d, objective: contrastive, contrastive: {signal_augment: {scale: [2, 1]}}}",
         "tasks.mine.contrastive.signal_augment.scale", "low <= high"),
        ("{type: digits, objective: contrastive, contrastive: {image_augment: {flip: false}}}",
         "tasks.mine.contrastive.image_augment", "1-D signals"),
        ("{type: teacher, image_shape: [8, 8, 1], objective: contrastive, contrastive: {signal_augment: {shift: 1}}}",
         "tasks.mine.contrastive.signal_augment", "images"),
    ],
)
def test_invalid_contrastive_settings_name_the_field(task, location, words):
    with pytest.raises(ProtocolError) as info:
        parse(BASE + f"tasks:\n  mine: {task}\n")
    found = {p.location: p.message for p in info.value.problems}
    assert location in found and words in found[location], found


# --------------------------------------------------------------------------- a mixed cohort end to end

MIXED = """\
name: mixed
seed: 0
cohort:
  architecture: [small]
  task: [digits, simclr]
  learning_rule: [sgdm, feedback_alignment]
  batch_size: [16]
  replicates: 2
architectures:
  small: {type: mlp, hidden: [12]}
tasks:
  simclr: {type: digits, objective: contrastive, contrastive: {projection_hidden: 8, projection_dim: 4, probe_examples: 300}}
training:
  steps: 20
recording:
  sessions: 3
  stimuli: 16
analyses:
  identify: {splits: 2}
"""


def test_a_mixed_protocol_runs_end_to_end(tmp_path, capsys):
    from simlab.cli.main import main

    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "probe" in summary

    snapshots = tmp_path / "run" / "snapshots"
    assert read_shard(snapshots / "small-simclr-sgdm-b16.npz").health_metric == "probe_accuracy"
    assert read_shard(snapshots / "small-digits-sgdm-b16.npz").health_metric == "test_accuracy"
    table = xr.open_dataset(tmp_path / "run" / "subjects.nc").load()
    contrastive = table["task"].values == "simclr"
    assert list(table["task_family"].values[contrastive]) == ["self_supervised"] * 4
    assert list(table["task_family"].values[~contrastive]) == ["supervised"] * 4
    assert list(table["health_metric"].values[contrastive]) == ["probe_accuracy"] * 4
    assert list(table["health_metric"].values[~contrastive]) == ["test_accuracy"] * 4
    assert np.isfinite(table["test_accuracy"].values).all()
    # feedback alignment's diagnostics under the contrastive objective, head included
    fa = contrastive & (table["learning_rule"].values == "feedback_alignment")
    assert np.isfinite(table["gradient_angle"].values[fa][:, :3]).all()
    assert list(table["layer_name"].values[contrastive][0]) == ["dense_0", "projection_0", "projection_1"]

    for rig in ("synapse", "electrophysiology", "paired"):
        recording_path = tmp_path / "run" / "recordings" / f"{rig}.nc"
        assert problems(recording_path) == []
        recording = open_recording(recording_path)
        assert set(recording["task_family"].values) == {"supervised", "self_supervised"}
        assert set(recording["health_metric"].values) == {"test_accuracy", "probe_accuracy"}
        simclr = recording.isel(subject=np.flatnonzero(recording["task"].values == "simclr"))
        # the projection head counts as deep (the reference), the backbone's one layer early
        assert list(simclr["depth"].values[0]) == ["early", "deep", "deep"]
        finite = np.isfinite(simclr["observation"].values)  # [subject, layer, session, observable]
        assert finite.any(axis=(2, 3)).all()  # every site of every contrastive subject is recorded
