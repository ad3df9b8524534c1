"""Alignment diagnostics: angles by hand, gradient angles on a tiny MLP, the subject table."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import xarray as xr

from simlab.specs.rules import FeedbackAlignment, KolenPollack
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.specs.subjects import MLPSpec
from simlab.subjects.tasks import TaskData
from simlab.training.diagnostics import alignment_angles, alignment_fn, angle
from simlab.training.population import train_population

N_CLASSES = 3


def numpy_angle(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def tiny_task(n=64, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim, 1)).astype(np.float32)
    y = np.argmax(x.reshape(n, -1) @ rng.standard_normal((dim, N_CLASSES)), -1).astype(np.int32)
    return TaskData("tiny", x, y, x[:16], y[:16], N_CLASSES)


def networks(hidden=(6,)):
    spec = MLPSpec(hidden=list(hidden))
    return Network(spec, N_CLASSES, "feedback"), Network(spec, N_CLASSES, "backprop")


# --- angles by hand ------------------------------------------------------------------------------


def test_angle_identical_opposite_orthogonal():
    a = np.array([[1.0, 2.0], [-3.0, 0.5]], np.float32)
    assert float(angle(a, a)) == pytest.approx(0.0, abs=1e-4)
    assert float(angle(a, 3 * a)) == pytest.approx(0.0, abs=1e-4)
    assert float(angle(a, -a)) == pytest.approx(180.0, abs=1e-4)
    assert float(angle(np.array([1.0, 0.0]), np.array([0.0, 2.0]))) == pytest.approx(90.0, abs=1e-5)
    assert float(angle(np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, -1.0]]))) == pytest.approx(90.0)
    assert np.isnan(float(angle(a, np.zeros_like(a))))


def test_angle_matches_numpy_on_random_arrays():
    rng = np.random.default_rng(0)
    for shape in [(3,), (4, 5), (3, 2, 4)]:
        a, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        assert float(angle(a, b)) == pytest.approx(numpy_angle(a, b), abs=1e-3)


# --- gradient angles on a tiny MLP ---------------------------------------------------------------


def test_gradient_angle_is_zero_when_feedback_equals_weights():
    feedback, backprop = networks(hidden=(6, 4))
    task = tiny_task()
    params, state = feedback.init(jax.random.key(0), task.x_train[:1])
    fn = alignment_fn(feedback, backprop)
    # leading axes [replicate, session]: session 0 has B independent of W, session 1 has B == W
    mirrored = {site: {"feedback": params[site]["w"]} for site in state}
    stack = lambda *trees: jax.tree.map(lambda *a: np.stack(a)[None], *trees)  # noqa: E731
    fb, grad = alignment_angles(fn, stack(params, params), stack(state, mirrored), task.x_train, task.y_train)
    assert fb.shape == grad.shape == (1, 2, 3)
    np.testing.assert_allclose(fb[0, 1], 0.0, atol=1e-3)
    np.testing.assert_allclose(grad[0, 1], 0.0, atol=1e-2)
    # independent B: hidden layers disagree with backprop; the readout's gradient never does
    assert np.all(fb[0, 0] > 45)
    assert np.all(grad[0, 0, :2] > 1.0)
    np.testing.assert_allclose(grad[0, 0, 2], 0.0, atol=1e-2)
    # and the angles equal numpy's on the two gradients
    for site, b in state.items():
        assert fb[0, 0, list(state).index(site)] == pytest.approx(numpy_angle(b["feedback"], params[site]["w"]), abs=1e-3)


@pytest.fixture(scope="module")
def trained():
    """feedback_alignment and kolen_pollack, one tiny MLP each, 4 sessions."""
    task = tiny_task()
    results = {}
    for name, hyper in [
        ("feedback_alignment", FeedbackAlignment(learning_rate=0.05)),
        ("kolen_pollack", KolenPollack(learning_rate=0.05, weight_decay=0.02)),
    ]:
        rule = make_rule(name, hyper)
        network = Network(MLPSpec(hidden=[6]), N_CLASSES, rule.credit)
        result = train_population(network, rule, task, 8, 150, [0, 50, 100, 150], [0, 1], "vmap")
        fn = alignment_fn(*networks())
        results[name] = (result, alignment_angles(fn, result.params, result.state, task.x_test, task.y_test))
    return results


def test_feedback_alignment_keeps_B_fixed(trained):
    result, (fb, grad) = trained["feedback_alignment"]
    for site, value in result.state.items():
        B = value["feedback"]
        for s in range(1, B.shape[1]):
            np.testing.assert_array_equal(B[:, s], B[:, 0], err_msg=site)
    assert fb.shape == grad.shape == (2, 4, 2)
    assert np.all(np.isfinite(fb)) and np.all(np.isfinite(grad))
    assert result.status == ["ok", "ok"]


def test_kolen_pollack_feedback_angle_decreases(trained):
    _, (fb, grad) = trained["kolen_pollack"]
    for replicate in range(2):
        for layer in range(2):
            angles = fb[replicate, :, layer]
            assert angles[0] > 45 and np.all(np.diff(angles) < 0), (replicate, layer, angles)
    assert np.all(np.isfinite(grad))


# --- the subject table of a tiny run -------------------------------------------------------------


def test_subject_table_holds_alignment_angles(tiny_run):
    table = xr.open_dataset(tiny_run / "subjects.nc").load()
    for name in ("feedback_angle", "gradient_angle"):
        assert table[name].dims == ("subject", "layer", "session"), name
        assert table[name].attrs["units"] == "degree"
    assert table["layer_name"].dims == ("subject", "layer")
    assert table.sizes["layer"] == 3  # the deep MLP's sites
    for subject in table["subject"].values:
        row = table.sel(subject=subject)
        names = [str(n) for n in row["layer_name"].values]
        depth = 2 if row["architecture"].item() == "shallow" else 3
        assert names == (["dense_0", "readout", ""] if depth == 2 else ["dense_0", "dense_1", "readout"])
        for name in ("feedback_angle", "gradient_angle"):
            values = row[name].values
            if row["learning_rule"].item() == "sgdm":
                assert np.all(np.isnan(values)), (subject, name)
            else:
                assert np.all(np.isfinite(values[:depth])), (subject, name)
                assert np.all(np.isnan(values[depth:])), (subject, name)
                assert np.all((values[:depth] >= 0) & (values[:depth] <= 180))
        if row["learning_rule"].item() == "feedback_alignment":
            # the readout's gradient is backprop's (the error reaching it has passed no B)
            np.testing.assert_allclose(row["gradient_angle"].values[depth - 1], 0.0, atol=1e-2)


@pytest.mark.parametrize("name", ["direct_feedback_alignment", "node_perturbation", "hebbian"])
def test_gradient_angle_uses_the_rules_own_estimate(name):
    """Rules with their own estimate: the angle of that estimate (node perturbation: the
    noise of the fixed diagnostic key) to backprop's; no B of W's shape, so no feedback angle."""
    from simlab.training.diagnostics import DIAGNOSTIC_KEY
    from simlab.training.objectives import CROSS_ENTROPY, objective_loss

    task = tiny_task()
    x, y = jax.numpy.asarray(task.x_test), jax.numpy.asarray(task.y_test)
    rule = make_rule(name)
    spec = MLPSpec(hidden=[6, 4])
    network, backprop = Network(spec, N_CLASSES, rule.credit), Network(spec, N_CLASSES, "backprop")
    params, state = network.init(jax.random.key(0), x[:1])
    stack = lambda tree: jax.tree.map(lambda a: np.asarray(a)[None, None], tree)  # noqa: E731
    fb, grad = alignment_angles(alignment_fn(network, backprop, rule.estimate), stack(params), stack(state), x, y)
    assert np.all(np.isnan(fb))
    _, _, grads = rule.estimate(objective_loss(network, CROSS_ENTROPY), params, state, x, y,
                                key=jax.random.key(DIAGNOSTIC_KEY), network=network, objective=CROSS_ENTROPY)
    true = jax.grad(lambda p: objective_loss(backprop, CROSS_ENTROPY)(p, {}, x, y)[0])(params)
    expected = [numpy_angle(grads[site]["w"], true[site]["w"]) for site in network.site_names]
    np.testing.assert_allclose(grad[0, 0], expected, atol=1e-2)
    if name != "node_perturbation":  # the readout learns from the true error
        assert grad[0, 0, -1] == pytest.approx(0.0, abs=1e-2)
    assert np.all(grad[0, 0, :-1] > 1.0)
