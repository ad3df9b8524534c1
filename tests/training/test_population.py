"""Population training: session slots, snapshots, determinism, vectorization, divergence.

Compiling a trainer dominates the runtime (about 2 s each on 2 cores), so runs are shared
between tests through a cache.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simlab.specs.rules import InformationAlignment, SGDMomentum
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.specs.subjects import MLPSpec
from simlab.subjects.tasks import TaskData
from simlab.training.population import make_trainer, session_slots, train_population

N_CLASSES, LENGTH, BATCH = 3, 6, 5


def _task():
    rng = np.random.default_rng(0)
    return TaskData(
        name="toy",
        x_train=rng.standard_normal((20, LENGTH, 1)).astype(np.float32),
        y_train=rng.integers(0, N_CLASSES, 20).astype(np.int32),
        x_test=rng.standard_normal((12, LENGTH, 1)).astype(np.float32),
        y_test=rng.integers(0, N_CLASSES, 12).astype(np.int32),
        n_classes=N_CLASSES,
    )


def _rule():
    return make_rule(
        "information_alignment",
        InformationAlignment(learning_rate=0.1, alpha=0.5, beta=0.3, gamma=0.2, feedback_learning_rate=0.05),
    )


def _network(rule):
    return Network(MLPSpec(hidden=[4]), N_CLASSES, rule.credit)


def leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


# --- session slots -------------------------------------------------------------------------------


def test_session_slots_by_hand():
    slots = session_slots([0, 5, 10], 10)
    expected = np.full(10, -1)
    expected[4], expected[9] = 1, 2
    np.testing.assert_array_equal(slots, expected)
    assert slots.dtype == np.int32
    np.testing.assert_array_equal(session_slots([0, 1, 3], 3), [1, -1, 2])
    np.testing.assert_array_equal(session_slots([0], 4), [-1, -1, -1, -1])


# --- snapshots -----------------------------------------------------------------------------------

STEPS, SESSIONS = 6, (0, 3, 6)


@functools.lru_cache(maxsize=None)
def _population(seeds, vectorize="loop", steps=STEPS, sessions=SESSIONS):
    """Cached: each call of train_population compiles a trainer (about 2 s on 2 cores)."""
    rule = _rule()
    return train_population(_network(rule), rule, _task(), BATCH, steps, list(sessions), list(seeds), vectorize)


def _python_loop_reference(rule, network, key, steps):
    """The same training written as a plain Python loop (no scan, no snapshot buffers)."""
    task = _task()
    x, y = jnp.asarray(task.x_train), jnp.asarray(task.y_train)
    init_key, data_key = jax.random.split(key)
    params, state = network.init(init_key, x[:1])
    opt_state = rule.optimizer.init(params)
    fb_state = rule.feedback_update.init(state)

    def step(params, state, opt_state, fb_state, t):
        batch = jax.random.randint(jax.random.fold_in(data_key, t), (BATCH,), 0, x.shape[0])

        def loss_fn(p):
            logits, sites = network.apply(p, state, x[batch])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[batch]).mean(), sites

        (loss, sites), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = rule.optimizer.update(grads, opt_state, params)
        inputs = {name: site.input for name, site in sites.items()}
        state, fb_state = rule.feedback_update.update(state, params, inputs, network.ops, fb_state)
        return optax.apply_updates(params, updates), state, opt_state, fb_state, loss

    args = (params, state, opt_state, fb_state, jnp.int32(0))
    # backend optimizations change no semantics but double the compile time
    step = jax.jit(step).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
    history, losses = [(params, state)], []
    for t in range(steps):
        params, state, opt_state, fb_state, loss = step(params, state, opt_state, fb_state, jnp.int32(t))
        history.append((params, state))
        losses.append(loss)
    return history, np.asarray(losses)


def _replicate(result, r):
    return jax.tree.map(lambda a: a[r], (result.params, result.state))


def test_snapshots_are_initial_intermediate_and_final_states():
    result = _population((0, 1))
    rule = _rule()
    network = _network(rule)
    history, reference_losses = _python_loop_reference(rule, network, jax.random.key(1), STEPS)
    snapshots = leaves(_replicate(result, 1))
    # session 0 is network.init with the subject's init key (compiled vs eager: rounding only)
    init_key, _ = jax.random.split(jax.random.key(1))
    for snap, ref in zip(snapshots, leaves(network.init(init_key, jnp.asarray(_task().x_train[:1])))):
        np.testing.assert_allclose(snap[0], ref, rtol=1e-6, atol=1e-7)
    # sessions 1 and 2 are the states after 3 and 6 updates
    for session, step in ((1, 3), (2, 6)):
        for snap, ref in zip(snapshots, leaves(history[step])):
            np.testing.assert_allclose(snap[session], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.losses[1], reference_losses, rtol=1e-5)


def test_session_snapshot_equals_shorter_run():
    """Batches depend only on (key, t), so session 3 of a 6-step run is the end of a 3-step run."""
    long_run = _population((0, 1))
    rule = _rule()
    task = _task()
    train = make_trainer(_network(rule), rule, BATCH, 3, [0, 3])
    args = (jax.random.key(0), jnp.asarray(task.x_train), jnp.asarray(task.y_train))
    compiled = jax.jit(train).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
    short_snapshots, short_losses = compiled(*args)
    for long_leaf, short_leaf in zip(leaves(_replicate(long_run, 0)), leaves(short_snapshots)):
        assert short_leaf.shape[0] == 2
        np.testing.assert_allclose(long_leaf[0], short_leaf[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(long_leaf[1], short_leaf[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(long_run.losses[0, :3], np.asarray(short_losses), rtol=1e-5)


# --- train_population ------------------------------------------------------------------------


def test_population_result_shapes_and_accuracy():
    result = _population((0, 1))
    assert result.losses.shape == (2, STEPS)
    assert result.test_accuracy.shape == (2, len(SESSIONS))
    assert result.status == ["ok", "ok"]
    assert result.params["dense_0"]["w"].shape == (2, len(SESSIONS), LENGTH, 4)
    assert result.state["readout"]["feedback"].shape == (2, len(SESSIONS), 4, N_CLASSES)
    # accuracies are those of the snapshots on the test split
    network, task = _network(_rule()), _task()
    params, state = jax.tree.map(lambda a: a[1], _replicate(result, 1))
    logits, _ = network.apply(params, state, jnp.asarray(task.x_test))
    accuracy = np.mean(np.argmax(np.asarray(logits), -1) == task.y_test)
    assert result.test_accuracy[1, 1] == pytest.approx(accuracy)


def test_determinism_same_seeds_identical_different_seeds_differ():
    first = _population((0, 1))
    rule = _rule()
    again = train_population(_network(rule), rule, _task(), BATCH, STEPS, list(SESSIONS), [0, 1], vectorize="loop")
    for a, b in zip(leaves((first.params, first.state)), leaves((again.params, again.state))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.losses, again.losses)
    np.testing.assert_array_equal(first.test_accuracy, again.test_accuracy)
    assert first.status == again.status
    # different seeds, different subjects: initial and trained weights, feedback kernels, losses
    for leaf in leaves((first.params["dense_0"]["w"], first.state["readout"]["feedback"])):
        assert not np.allclose(leaf[0], leaf[1])
    assert not np.allclose(first.losses[0], first.losses[1])


def test_vmap_and_loop_agree():
    loop = _population((0, 1))
    vmapped = _population((0, 1), "vmap")
    for a, b in zip(leaves((loop.params, loop.state)), leaves((vmapped.params, vmapped.state))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loop.losses, vmapped.losses, rtol=1e-4)
    np.testing.assert_allclose(loop.test_accuracy, vmapped.test_accuracy)
    assert vmapped.status == loop.status


def test_huge_learning_rate_is_marked_diverged():
    rule = make_rule("sgdm", SGDMomentum(learning_rate=1e6))
    network = Network(MLPSpec(hidden=[4]), N_CLASSES, rule.credit)
    result = train_population(network, rule, _task(), BATCH, 30, [0, 15, 30], [0, 1], vectorize="loop")
    assert result.status == ["diverged", "diverged"]
    assert not np.isfinite(result.losses).all()
    assert result.test_accuracy.shape == (2, 3)
