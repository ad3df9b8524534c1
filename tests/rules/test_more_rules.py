"""Kolen-Pollack, weight mirror, symmetric alignment and sign symmetry against numpy.

The numpy side (float64) re-derives each rule's equations on the tiny two-layer MLP of
test_rules (forward pass, errors through B, optax's SGD written out), with B's update:
- kolen_pollack: g_B = dL/dW + wd B and g_W = dL/dW + wd W (kernels; biases undecayed), the
  same Nesterov SGD for both;
- weight_mirror: g_B = 2 alpha B - beta xi^T (xi W) / n with xi ~ N(0, std^2) of the site
  input's shape (the noise is drawn with JAX from the step's key: an input, like the batch
  indices, not the thing under test);
- symmetric_alignment: g_B = 2 alpha B - beta W;
- sign_symmetry: B_{t+1} = sign(W_{t+1}) |B_0|; on the first step the error goes through
  sign(W_0) |B_0| (``first_step: signs``, the default, as BioTorch) or B_0 itself (``random``).
Then the known behaviours (B aligns with W; signs follow W), no task-loss gradient reaching
B, and vmap/loop training of a small conv net (conv and dense sites).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.specs.rules import KolenPollack, SignSymmetry, SymmetricAlignment, WeightMirror
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.specs.subjects import Conv1DSpec, MLPSpec
from simlab.subjects.tasks import TaskData
from simlab.training.population import cross_entropy, make_trainer, train_population

from . import test_rules as base

CASES = {
    "kp": ("kolen_pollack", KolenPollack(learning_rate=0.1, weight_decay=0.3)),
    "wm": (
        "weight_mirror",
        WeightMirror(learning_rate=0.1, alpha=0.3, beta=0.7, noise_std=1.5, feedback_learning_rate=0.05),
    ),
    "sa": (
        "symmetric_alignment",
        SymmetricAlignment(learning_rate=0.1, alpha=0.4, beta=0.6, feedback_learning_rate=0.05),
    ),
    "ss": ("sign_symmetry", SignSymmetry(learning_rate=0.1)),
    "ss_random": ("sign_symmetry", SignSymmetry(learning_rate=0.1, first_step="random")),
}
STEPS = 3
KEY_SEED = 4


def run_case(case):
    return base.train_rule(*CASES[case])


def _noise(key, t, shapes, std):
    """The trainer's noise on step t: key fold_in(fold_in(data_key, t), 1), split over sites."""
    _, data_key = jax.random.split(key)
    step_key = jax.random.fold_in(jax.random.fold_in(data_key, t), 1)
    keys = jax.random.split(step_key, len(shapes))
    return {
        site: std * np.asarray(jax.random.normal(k, shape, jnp.float32), np.float64)
        for k, (site, shape) in zip(keys, shapes.items())
    }


def np_run(name, hyper, initial, key, steps, site_order):
    x, y = base._data()
    x = x.astype(np.float64)
    params, feedback = initial
    opts = {site: {k: base.NumpySGD(hyper.learning_rate, hyper.momentum, hyper.nesterov) for k in ("w", "b")}
            for site in base.SITES}
    if name == "kolen_pollack":
        b_opts = {site: base.NumpySGD(hyper.learning_rate, hyper.momentum, hyper.nesterov) for site in base.SITES}
    elif name in ("weight_mirror", "symmetric_alignment"):
        b_opts = {
            site: base.NumpySGD(hyper.feedback_learning_rate, hyper.feedback_momentum, hyper.nesterov)
            for site in base.SITES
        }
    magnitudes = {site: np.abs(feedback[site]["feedback"]) for site in base.SITES}
    snapshots, losses = [(params, feedback)], []
    for t, batch in enumerate(base._batches(key, steps)):
        used = feedback
        if name == "sign_symmetry" and t == 0 and hyper.first_step == "signs":
            used = {site: {"feedback": np.sign(params[site]["w"]) * magnitudes[site]} for site in base.SITES}
        loss, grads, inputs = base.np_forward_backward(params, used, x[batch], y[batch])
        losses.append(loss)
        if name == "kolen_pollack":
            grads = {site: {"w": grads[site]["w"] + hyper.weight_decay * params[site]["w"], "b": grads[site]["b"]}
                     for site in base.SITES}
        new_params = {site: {k: opts[site][k].step(params[site][k], grads[site][k]) for k in ("w", "b")}
                      for site in base.SITES}
        if name == "weight_mirror":
            noise = _noise(key, t, {site: inputs[site].shape for site in site_order}, hyper.noise_std)
        new_feedback = {}
        for site in base.SITES:
            B, W = feedback[site]["feedback"], params[site]["w"]  # W before this step's update
            if name == "kolen_pollack":
                g = (grads[site]["w"] - hyper.weight_decay * W) + hyper.weight_decay * B  # dL/dW + wd B
                new_B = b_opts[site].step(B, g)
            elif name == "weight_mirror":
                xi = noise[site]
                g = 2 * hyper.alpha * B - hyper.beta * xi.T @ (xi @ W) / xi.shape[0]
                new_B = b_opts[site].step(B, g)
            elif name == "symmetric_alignment":
                new_B = b_opts[site].step(B, 2 * hyper.alpha * B - hyper.beta * W)
            else:
                new_B = np.sign(new_params[site]["w"]) * magnitudes[site]
            new_feedback[site] = {"feedback": new_B}
        params, feedback = new_params, new_feedback
        snapshots.append((params, feedback))
    return snapshots, np.array(losses)


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_match_numpy(case):
    name, hyper = CASES[case]
    rule, network, (params, state), losses = run_case(case)
    assert rule.credit == "feedback" and rule.feedback_update is not None
    expected, expected_losses = np_run(
        name, hyper, base._initial((params, state)), jax.random.key(KEY_SEED), STEPS, list(network.ops)
    )
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for t, (p, fb) in enumerate(expected):
        base.assert_tree_close(base.tree(lambda a: a[t], params), p, atol=1e-5)
        base.assert_tree_close(base.tree(lambda a: a[t], state), fb, rtol=1e-5, atol=1e-5)
    # B changed (the check above is not vacuous)
    for site in base.SITES:
        assert not np.allclose(state[site]["feedback"][STEPS], state[site]["feedback"][0])


def test_sign_symmetry_first_step_is_the_only_difference_between_signs_and_random():
    """Both start from the same B_0 with signs independent of W_0; only step 0's error differs,
    so step 1's W differs, and the loss of step 0 (the forward pass) is the same."""
    _, _, (p_signs, s_signs), l_signs = run_case("ss")
    _, _, (p_random, s_random), l_random = run_case("ss_random")
    B0, W0 = s_signs["dense_0"]["feedback"][0], p_signs["dense_0"]["w"][0]
    np.testing.assert_array_equal(B0, s_random["dense_0"]["feedback"][0])
    assert 0.2 < np.mean(np.sign(B0) == np.sign(W0)) < 0.8  # random signs at the start
    assert l_signs[0] == l_random[0]
    assert not np.allclose(p_signs["dense_0"]["w"][1], p_random["dense_0"]["w"][1])
    np.testing.assert_array_equal(p_signs["readout"]["w"][1], p_random["readout"]["w"][1])  # readout: its own error


def test_kolen_pollack_difference_follows_decay_only():
    """B - W evolves by the optimizer on wd (B - W) alone: the task gradient cancels."""
    _, hyper = CASES["kp"]
    _, _, (params, state), _ = run_case("kp")
    lr, m, wd = hyper.learning_rate, hyper.momentum, hyper.weight_decay
    for site in base.SITES:
        d = [state[site]["feedback"][t] - params[site]["w"][t] for t in range(STEPS + 1)]
        opt, expected = base.NumpySGD(lr, m, hyper.nesterov), d[0]
        for t in range(1, STEPS + 1):
            expected = opt.step(expected, wd * expected)
            np.testing.assert_allclose(d[t], expected, rtol=1e-4, atol=1e-5)


def _angle(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def _tiny_task(shape, seed=0, n=64, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = np.argmax(x.reshape(n, -1) @ rng.standard_normal((x[0].size, classes)), -1).astype(np.int32)  # learnable
    return TaskData("tiny", x, y, x[:16], y[:16], classes)


ALIGN_STEPS = 600
ALIGNED = {"kolen_pollack": 5.0, "symmetric_alignment": 15.0, "weight_mirror": 40.0}  # final angle, degrees
ALIGN_CASES = {
    "kolen_pollack": KolenPollack(learning_rate=0.05, weight_decay=0.02),
    "weight_mirror": WeightMirror(learning_rate=0.02, alpha=0.5, beta=1.0, feedback_learning_rate=0.05),
    "symmetric_alignment": SymmetricAlignment(learning_rate=0.02, alpha=0.5, beta=1.0, feedback_learning_rate=0.05),
    "sign_symmetry": SignSymmetry(learning_rate=0.05),
}


@functools.lru_cache(maxsize=None)
def conv_population(name, vectorize):
    """A conv1d net (two conv sites, one hidden dense, readout), two replicates."""
    rule = make_rule(name, ALIGN_CASES[name])
    network = Network(Conv1DSpec(channels=[3, 4], kernel_size=3, stride=2, hidden=[5]), 3, rule.credit)
    task = _tiny_task((8, 1))
    return train_population(network, rule, task, 8, ALIGN_STEPS, [0, 10, ALIGN_STEPS], [0, 1], vectorize)


@pytest.mark.parametrize("name", list(ALIGN_CASES))
def test_vmap_and_loop_agree_on_conv_and_dense_and_behave(name):
    loop, vmapped = conv_population(name, "loop"), conv_population(name, "vmap")
    assert loop.status == vmapped.status == ["ok", "ok"]
    np.testing.assert_allclose(loop.losses, vmapped.losses, rtol=1e-4, atol=1e-5)
    for site in loop.state:
        np.testing.assert_allclose(
            loop.state[site]["feedback"], vmapped.state[site]["feedback"], rtol=1e-3, atol=1e-4, err_msg=site
        )
        for r in range(2):
            B, W = loop.state[site]["feedback"][r], loop.params[site]["w"][r]
            if name == "sign_symmetry":
                # after the first update B = sign(W) |B_0|
                for s in (1, 2):
                    np.testing.assert_array_equal(np.sign(B[s]), np.sign(W[s]))
                    np.testing.assert_array_equal(np.abs(B[s]), np.abs(B[0]))
            else:
                # B starts independent of W and ends aligned with it (conv and dense sites)
                assert _angle(B[0], W[0]) > 45, site
                # (weight mirror's B follows W through a noisy estimate from 8 noise samples)
                assert _angle(B[-1], W[-1]) < ALIGNED[name], (site, _angle(B[-1], W[-1]))
                assert np.linalg.norm(W[-1]) > 0.1 * np.linalg.norm(W[0])  # W is alive
    assert set(loop.state) == {"conv_0", "conv_1", "dense_0", "readout"}


def test_kolen_pollack_converges_on_tiny_mlp():
    """The angle between B and W shrinks to near 0 over training (Akrout et al. 2019)."""
    rule = make_rule("kolen_pollack", ALIGN_CASES["kolen_pollack"])
    network = Network(MLPSpec(hidden=[6]), 3, rule.credit)
    result = train_population(network, rule, _tiny_task((5, 1)), 8, ALIGN_STEPS, [0, 30, 100, ALIGN_STEPS], [0], "loop")
    for site in result.state:
        B, W = result.state[site]["feedback"][0], result.params[site]["w"][0]
        angles = [_angle(B[s], W[s]) for s in range(4)]
        assert angles[0] > 45 and angles[1] < angles[0] and angles[2] < angles[1] and angles[3] < 1, (site, angles)


def test_weight_mirror_aligns_on_noise_without_data():
    """B's update sees noise only: with zero inputs and labels anything, B still aligns with W."""
    rule = make_rule("weight_mirror", ALIGN_CASES["weight_mirror"])
    rng = np.random.default_rng(1)
    shapes = {"a": (5, 4), "b": (4, 3)}
    params = {s: {"w": jnp.asarray(rng.standard_normal(sh), jnp.float32)} for s, sh in shapes.items()}
    state = {s: {"feedback": jnp.asarray(rng.standard_normal(sh), jnp.float32)} for s, sh in shapes.items()}
    inputs = {s: jnp.zeros((512, sh[0])) for s, sh in shapes.items()}
    ops = {s: base.dense for s in shapes}
    update = jax.jit(lambda st, o, k: rule.feedback_update.update(st, params, inputs, ops, o, key=k))
    opt = rule.feedback_update.init(state)
    angles = [[_angle(state[s]["feedback"], params[s]["w"]) for s in shapes]]
    for t in range(200):
        state, opt = update(state, opt, jax.random.key(t))
        angles.append([_angle(state[s]["feedback"], params[s]["w"]) for s in shapes])
    angles = np.array(angles)
    assert (angles[0] > 45).all() and (angles[50] < angles[0]).all() and (angles[-1] < 5).all(), angles[[0, 50, -1]]
    with pytest.raises(ValueError, match="key"):
        rule.feedback_update.update(state, params, inputs, ops, opt)


@pytest.mark.parametrize("case", list(CASES))
def test_task_loss_gives_B_no_gradient(case):
    """The task loss's gradient with respect to B (Haiku state) is exactly zero, and B is not
    among the optimizer's params; the local updates run without any task gradient at all."""
    rule, network, (params, state), _ = run_case(case)
    p0, s0 = (jax.tree.map(lambda a: jnp.asarray(a[0], jnp.float32), tree) for tree in (params, state))
    x, y = base._data()
    grad_state = jax.grad(lambda s: cross_entropy(network, p0, s, jnp.asarray(x), jnp.asarray(y))[0])(s0)
    for site in base.SITES:
        np.testing.assert_array_equal(np.asarray(grad_state[site]["feedback"]), 0.0)
        assert "feedback" not in params[site]
    if CASES[case][0] != "kolen_pollack":  # KP's B gets dL/dW by design, never dL/dB
        inputs = {"dense_0": jnp.asarray(x.reshape(len(x), -1)), "readout": jnp.ones((len(x), base.HIDDEN))}
        zeros = jax.tree.map(jnp.zeros_like, p0)
        rule.feedback_update.update(
            s0, p0, inputs, network.ops, rule.feedback_update.init(s0), key=jax.random.key(0), grads=None, updates=zeros
        )


def test_make_rule_names_and_schema():
    from simlab.specs.rules import RULE_HYPERPARAMETERS

    for name in ("kolen_pollack", "weight_mirror", "symmetric_alignment", "sign_symmetry"):
        assert name in RULE_HYPERPARAMETERS
        rule = make_rule(name)
        assert rule.name == name and rule.credit == "feedback" and rule.feedback_update is not None
