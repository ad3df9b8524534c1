"""Direct feedback alignment, node perturbation and Oja's Hebbian rule against numpy.

The numpy side (float64) re-derives each rule's equations on a ReLU MLP with two hidden
layers (test_rules' data and optax's SGD written out) and on a one-conv-layer net (the
hand-written convolution of test_credit):
- direct_feedback_alignment: e = dL/dlogits; hidden delta_l = (e B_l) * relu'(a_l),
  g_W = x_l^T delta_l, g_b = sum delta_l; readout g_W = h^T e;
- node_perturbation: xi_l ~ N(0, sigma^2) on every pre-activation at once (drawn with JAX from
  the step's key: an input, like the batch indices), g_W = x_l^T (r * xi_l) with
  r_n = (L~_n - L_n) / (N sigma^2), or r = (L~ - L) / sigma^2 for a batch-level loss;
- hebbian: g_W = (W Y^T Y - X^T Y) / N with Y = X W (patches and positions as samples for a
  conv), g_b = 0; readout: the true gradient.
Then the known behaviours: DFA's B is fixed and replaces W; node perturbation's estimate
averages to the gradient (every ``perturb`` mode); Oja's rule finds the principal subspace;
vmap equals the loop. The options: ``samples`` K is the mean of K one-sample estimates with
keys split(key, K); ``perturb`` "each" is, per site, the estimate with only that site's
noise; "one" is that times the number of sites in the drawn site and 0 elsewhere;
``normalization`` "input_power" is Oja's gradient over the mean squared norm of the
examples (dense) or patches (conv, counted by hand).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.errors import SimlabError
from simlab.protocol import parse_protocol, plan_cohort
from simlab.rules.estimates import oja_gradient, perturbation_noise
from simlab.specs.rules import DirectFeedbackAlignment, Hebbian, NodePerturbation
from simlab.rules.rules import make_rule, rule_factors
from simlab.subjects.architectures import Network
from simlab.ops.linear import conv1d
from simlab.specs.subjects import Conv1DSpec, MLPSpec
from simlab.subjects.tasks import TaskData
from simlab.training.cohort import task_family
from simlab.training.objectives import CROSS_ENTROPY, objective_loss
from simlab.training.population import train_population

from . import test_rules as base
from .test_credit import np_conv, np_conv_kernel_grad, same_padding

HIDDEN = (4, 3)
SITES = ("dense_0", "dense_1", "readout")
CASES = {
    "dfa": ("direct_feedback_alignment", DirectFeedbackAlignment(learning_rate=0.1)),
    "np": ("node_perturbation", NodePerturbation(learning_rate=0.05, noise_std=0.1, perturb="all")),
    "hebb": ("hebbian", Hebbian(learning_rate=0.1, hebbian_learning_rate=0.05, normalization="none")),
}
STEPS = 3


@functools.lru_cache(maxsize=None)
def run_case(case):
    rule = make_rule(*CASES[case])
    network, snapshots, losses = base._train(rule, STEPS, jax.random.key(base.KEY_SEED), hidden=HIDDEN)
    return rule, network, snapshots, losses


# --- numpy references ---------------------------------------------------------------------------


def np_forward(params, x, noise=None):
    """Logits, and per site its input and pre-activation, of the ReLU MLP (noise added to the
    pre-activations)."""
    h = x.reshape(len(x), -1)
    inputs, pre = {}, {}
    for site in SITES:
        inputs[site] = h
        pre[site] = h @ params[site]["w"] + params[site]["b"] + (0.0 if noise is None else noise[site])
        h = pre[site] if site == "readout" else base._relu(pre[site])
    return h, inputs, pre


def np_example_losses(logits, y):
    return -np.log(base._softmax(logits)[np.arange(len(y)), y])


def np_output_error(logits, y):
    """d mean cross-entropy / d logits."""
    return (base._softmax(logits) - np.eye(base.N_CLASSES)[y]) / len(y)


def np_local(x, cotangent):
    """(g_W, g_b) of a dense site's pre-activation x W + b with cotangent c."""
    return {"w": x.T @ cotangent, "b": cotangent.sum(0)}


def np_dfa(params, state, x, y):
    logits, inputs, pre = np_forward(params, x)
    e = np_output_error(logits, y)
    grads = {"readout": np_local(inputs["readout"], e)}
    for site in SITES[:-1]:
        grads[site] = np_local(inputs[site], (e @ state[site]["direct_feedback"]) * (pre[site] > 0))
    return grads


def np_node_perturbation(params, x, y, noise, sigma, per_example=True):
    clean, inputs, _ = np_forward(params, x)
    noisy, _, _ = np_forward(params, x, noise)
    difference = np_example_losses(noisy, y) - np_example_losses(clean, y)
    r = difference / (len(y) * sigma**2) if per_example else np.full(len(y), difference.mean() / sigma**2)
    return {site: np_local(inputs[site], r[:, None] * noise[site]) for site in SITES}


def np_oja(x, w):
    y = x @ w
    return (w @ (y.T @ y) - x.T @ y) / len(x)


def np_hebbian(params, x, y):
    logits, inputs, _ = np_forward(params, x)
    grads = {"readout": np_local(inputs["readout"], np_output_error(logits, y))}
    for site in SITES[:-1]:
        grads[site] = {"w": np_oja(inputs[site], params[site]["w"]), "b": np.zeros_like(params[site]["b"])}
    return grads


def step_noise(key, t, shapes, sigma):
    """The trainer's noise on step t: key fold_in(fold_in(data_key, t), 3), split over sites."""
    _, data_key = jax.random.split(key)
    step_key = jax.random.fold_in(jax.random.fold_in(data_key, t), 3)
    return {k: np.asarray(v, np.float64) for k, v in perturbation_noise(step_key, shapes, sigma).items()}


def np_run(name, hyper, initial, key):
    x, y = base._data()
    x = x.astype(np.float64)
    params, state = initial
    rates = {site: hyper.learning_rate for site in SITES}
    if name == "hebbian":
        rates.update({site: hyper.hebbian_learning_rate for site in SITES[:-1]})
    opts = {site: {k: base.NumpySGD(rates[site], hyper.momentum, hyper.nesterov) for k in "wb"} for site in SITES}
    snapshots, losses = [params], []
    for t, batch in enumerate(base._batches(key, STEPS)):
        xb, yb = x[batch], y[batch]
        losses.append(np_example_losses(np_forward(params, xb)[0], yb).mean())
        if name == "direct_feedback_alignment":
            grads = np_dfa(params, state, xb, yb)
        elif name == "node_perturbation":
            shapes = {site: (base.BATCH, params[site]["w"].shape[1]) for site in SITES}
            grads = np_node_perturbation(params, xb, yb, step_noise(key, t, shapes, hyper.noise_std), hyper.noise_std)
        else:
            grads = np_hebbian(params, xb, yb)
        params = {site: {k: opts[site][k].step(params[site][k], grads[site][k]) for k in "wb"} for site in SITES}
        snapshots.append(params)
    return snapshots, np.array(losses)


# --- whole training steps against numpy ---------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_match_numpy(case):
    name, hyper = CASES[case]
    rule, network, (params, state), losses = run_case(case)
    expected, expected_losses = np_run(name, hyper, base._initial((params, state)), jax.random.key(base.KEY_SEED))
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for t, p in enumerate(expected):
        base.assert_tree_close(base.tree(lambda a: a[t], params), p, rtol=1e-4, atol=1e-5)
    for site in SITES:  # every layer learned (the comparison is not vacuous)
        assert not np.allclose(params[site]["w"][STEPS], params[site]["w"][0]), site


def test_direct_feedback_B_is_fixed_and_stands_in_for_W():
    _, network, (params, state), _ = run_case("dfa")
    assert set(state) == {"dense_0", "dense_1"}  # B_l: outputs x units, hidden layers only
    for site in state:
        B = state[site]["direct_feedback"]
        assert B.shape[1:] == (base.N_CLASSES, params[site]["w"].shape[-1])
        for t in range(1, STEPS + 1):
            np.testing.assert_array_equal(B[t], B[0])
    # with B_1 = W_readout^T the last hidden layer's estimate is backprop's; the first one's,
    # whose error skips dense_1's W, is not; the readout's always is
    initial, initial_state = base._initial((params, state))
    x, y = base._data()
    rule = make_rule(*CASES["dfa"])
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), initial)
    mirrored = {**initial_state, "dense_1": {"direct_feedback": initial["readout"]["w"].T}}
    s32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mirrored)
    loss = objective_loss(network, CROSS_ENTROPY)
    _, _, grads = rule.estimate(loss, p32, s32, jnp.asarray(x), jnp.asarray(y), network=network, objective=CROSS_ENTROPY)
    backprop = objective_loss(Network(MLPSpec(hidden=list(HIDDEN)), base.N_CLASSES, "backprop"), CROSS_ENTROPY)
    true = jax.grad(lambda p: backprop(p, {}, jnp.asarray(x), jnp.asarray(y))[0])(p32)
    exact = ("dense_1", "readout")
    base.assert_tree_close({s: grads[s] for s in exact}, {s: true[s] for s in exact}, rtol=1e-5, atol=1e-7)
    assert not np.allclose(grads["dense_0"]["w"], true["dense_0"]["w"], atol=1e-4)


# --- node perturbation --------------------------------------------------------------------------


def _tiny_setup(case):
    rule, network, snapshots, _ = run_case(case)
    initial, initial_state = base._initial(snapshots)
    x, y = base._data()
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)  # noqa: E731
    return rule, network, initial, cast(initial), cast(initial_state), x, y


def test_node_perturbation_batch_reward_without_example_losses():
    """An objective whose loss does not split over examples: one reward for the batch."""
    _, network, initial, p32, _, x, y = _tiny_setup("np")
    sigma = 0.2
    rule = make_rule("node_perturbation", NodePerturbation(noise_std=sigma, perturb="all"))
    objective = CROSS_ENTROPY._replace(example_losses=None)
    key = jax.random.key(7)
    value, sites, grads = rule.estimate(
        None, p32, {}, jnp.asarray(x), jnp.asarray(y), key=key, network=network, objective=objective
    )
    noise = {k: np.asarray(v, np.float64) for k, v in perturbation_noise(
        key, {s: (len(x), initial[s]["w"].shape[1]) for s in SITES}, sigma).items()}
    expected = np_node_perturbation(initial, x.astype(np.float64), y, noise, sigma, per_example=False)
    base.assert_tree_close(jax.tree.map(np.asarray, grads), expected, rtol=2e-3, atol=1e-5)
    assert float(value) == pytest.approx(np_example_losses(np_forward(initial, x)[0], y).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="key"):
        rule.estimate(None, p32, {}, jnp.asarray(x), jnp.asarray(y), network=network, objective=objective)


@pytest.mark.parametrize("perturb", ["all", "each", "one"])
def test_node_perturbation_averages_to_the_gradient(perturb):
    """Over many noise draws: the mean estimate points along the true gradient of every layer
    (cosine > 0.9), and the readout's mean is the true gradient within its standard error."""
    _, network, _, p32, _, x, y = _tiny_setup("np")
    rule = make_rule("node_perturbation", NodePerturbation(noise_std=0.01, perturb=perturb))
    xb, yb = jnp.asarray(x), jnp.asarray(y)
    draws = 4000

    @jax.jit
    def estimates(keys):
        one = lambda k: rule.estimate(None, p32, {}, xb, yb, key=k, network=network, objective=CROSS_ENTROPY)[2]  # noqa: E731
        return jax.vmap(one)(keys)

    samples = jax.tree.map(np.asarray, estimates(jax.random.split(jax.random.key(3), draws)))
    true = jax.grad(lambda p: objective_loss(network, CROSS_ENTROPY)(p, {}, xb, yb)[0])(p32)
    for site in SITES:
        mean, g = samples[site]["w"].mean(0).ravel(), np.asarray(true[site]["w"]).ravel()
        assert mean @ g / np.linalg.norm(mean) / np.linalg.norm(g) > 0.9, site
    for k in "wb":
        readout = samples["readout"][k]
        z = (readout.mean(0) - np.asarray(true["readout"][k])) / (readout.std(0) / np.sqrt(draws))
        assert np.all(np.abs(z) < 4.5), z


def _np_estimate(rule, p32, x, y, key, network):
    _, _, grads = rule.estimate(None, p32, {}, jnp.asarray(x), jnp.asarray(y), key=key, network=network,
                                objective=CROSS_ENTROPY)
    return jax.tree.map(np.asarray, grads)


def _mlp_noise(key, initial, n, sigma):
    return {k: np.asarray(v, np.float64) for k, v in perturbation_noise(
        key, {s: (n, initial[s]["w"].shape[1]) for s in SITES}, sigma).items()}


def test_node_perturbation_samples_average_single_estimates():
    """samples=K: the mean of the K one-sample estimates from the keys split(key, K), and
    numpy's mean of the K references."""
    _, network, initial, p32, _, x, y = _tiny_setup("np")
    sigma, key, k = 0.1, jax.random.key(9), 3
    averaged = _np_estimate(make_rule("node_perturbation", NodePerturbation(noise_std=sigma, samples=k, perturb="all")),
                            p32, x, y, key, network)
    single = make_rule("node_perturbation", NodePerturbation(noise_std=sigma, perturb="all"))
    singles = [_np_estimate(single, p32, x, y, sub, network) for sub in jax.random.split(key, k)]
    base.assert_tree_close(averaged, jax.tree.map(lambda *g: np.mean(g, 0), *singles), rtol=1e-5, atol=1e-7)
    references = [np_node_perturbation(initial, x.astype(np.float64), y, _mlp_noise(sub, initial, len(x), sigma), sigma)
                  for sub in jax.random.split(key, k)]
    base.assert_tree_close(averaged, jax.tree.map(lambda *g: np.mean(g, 0), *references), rtol=2e-3, atol=1e-5)
    assert not np.allclose(singles[0]["dense_0"]["w"], singles[1]["dense_0"]["w"])  # distinct draws


def _alone(noise, site):
    return {s: v if s == site else np.zeros_like(v) for s, v in noise.items()}


def test_node_perturbation_each_layer_learns_from_its_own_noise():
    """perturb="each": site l's estimate is numpy's with only site l perturbed (same xi)."""
    _, network, initial, p32, _, x, y = _tiny_setup("np")
    sigma, key = 0.1, jax.random.key(9)
    grads = _np_estimate(make_rule("node_perturbation", NodePerturbation(noise_std=sigma, perturb="each")),
                         p32, x, y, key, network)
    noise = _mlp_noise(key, initial, len(x), sigma)
    x64 = x.astype(np.float64)
    for site in SITES:
        expected = np_node_perturbation(initial, x64, y, _alone(noise, site), sigma)[site]
        base.assert_tree_close({site: grads[site]}, {site: expected}, rtol=2e-3, atol=1e-5)
    together = np_node_perturbation(initial, x64, y, noise, sigma)
    assert not np.allclose(grads["dense_0"]["w"], together["dense_0"]["w"], rtol=0.05)  # not the "all" estimate


def test_node_perturbation_one_layer_per_step():
    """perturb="one": the site drawn from fold_in(key, 1) gets 3 (the number of sites) times
    numpy's estimate with only it perturbed; every other site gets exactly 0; over keys every
    site is drawn."""
    _, network, initial, p32, _, x, y = _tiny_setup("np")
    sigma = 0.1
    rule = make_rule("node_perturbation", NodePerturbation(noise_std=sigma, perturb="one"))
    drawn = set()
    for seed in range(12):
        key = jax.random.key(seed)
        grads = _np_estimate(rule, p32, x, y, key, network)
        chosen = SITES[int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, len(SITES)))]
        drawn.add(chosen)
        noise = _alone(_mlp_noise(key, initial, len(x), sigma), chosen)
        expected = np_node_perturbation(initial, x.astype(np.float64), y, noise, sigma)[chosen]
        scaled = {chosen: jax.tree.map(lambda g: len(SITES) * g, expected)}
        base.assert_tree_close({chosen: grads[chosen]}, scaled, rtol=2e-3, atol=1e-5)
        for site in set(SITES) - {chosen}:
            for k in "wb":
                np.testing.assert_array_equal(grads[site][k], 0.0)
    assert drawn == set(SITES)


def test_node_perturbation_options_are_validated():
    with pytest.raises(ValueError, match="samples"):
        NodePerturbation(samples=0)
    with pytest.raises(ValueError, match="perturb"):
        NodePerturbation(perturb="layers")
    with pytest.raises(ValueError, match="normalization"):
        Hebbian(normalization="weights")


def test_noise_and_hebbian_on_a_conv_layer_match_numpy():
    """Node perturbation and Oja's rule on a conv site (positions as samples), one batch."""
    network = Network(Conv1DSpec(channels=[2], kernel_size=3, stride=2, hidden=[]), base.N_CLASSES, "backprop")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 7, 1)).astype(np.float32)
    y = rng.integers(0, base.N_CLASSES, 5).astype(np.int32)
    params, _ = network.init(jax.random.key(2), x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x64 = x.astype(np.float64)

    def np_conv_net(noise):
        a = np_conv(x64, p["conv_0"]["w"], 2) + p["conv_0"]["b"] + noise["conv_0"]
        h = base._relu(a).reshape(len(x), -1)
        return h, h @ p["readout"]["w"] + p["readout"]["b"] + noise["readout"]

    sigma, key = 0.1, jax.random.key(11)
    rule = make_rule("node_perturbation", NodePerturbation(noise_std=sigma, perturb="all"))
    _, _, grads = rule.estimate(None, params, {}, jnp.asarray(x), jnp.asarray(y), key=key, network=network,
                                objective=CROSS_ENTROPY)
    shapes = {"conv_0": (5, 4, 2), "readout": (5, base.N_CLASSES)}
    noise = {k: np.asarray(v, np.float64) for k, v in perturbation_noise(key, shapes, sigma).items()}
    h, clean = np_conv_net({k: 0.0 for k in shapes})
    _, noisy = np_conv_net(noise)
    r = (np_example_losses(noisy, y) - np_example_losses(clean, y)) / (5 * sigma**2)
    cotangent = r[:, None, None] * noise["conv_0"]
    expected = {
        "conv_0": {"w": np_conv_kernel_grad(x64, cotangent, 2, 3), "b": cotangent.sum((0, 1))},
        "readout": np_local(h, r[:, None] * noise["readout"]),
    }
    base.assert_tree_close(jax.tree.map(np.asarray, grads), expected, rtol=2e-3, atol=1e-5)

    hebbian = make_rule("hebbian", Hebbian(normalization="none"))
    _, _, grads = hebbian.estimate(None, params, {}, jnp.asarray(x), jnp.asarray(y), network=network,
                                   objective=CROSS_ENTROPY)
    w = p["conv_0"]["w"]
    response = np_conv(x64, w, 2)  # [5, 4, 2]: 20 samples of 2 units
    flat = response.reshape(-1, 2)
    oja = ((w.reshape(-1, 2) @ (flat.T @ flat)).reshape(w.shape) - np_conv_kernel_grad(x64, response, 2, 3)) / 20
    np.testing.assert_allclose(grads["conv_0"]["w"], oja, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(grads["conv_0"]["b"], 0.0)
    np.testing.assert_allclose(
        grads["readout"]["w"], h.T @ np_output_error(clean, y), rtol=1e-4, atol=1e-6
    )


# --- Hebbian ------------------------------------------------------------------------------------


def test_hebbian_readout_gets_exactly_the_true_gradient():
    rule, network, _, p32, _, x, y = _tiny_setup("hebb")
    loss = objective_loss(network, CROSS_ENTROPY)
    xb, yb = jnp.asarray(x), jnp.asarray(y)
    value, _, grads = rule.estimate(loss, p32, {}, xb, yb, network=network, objective=CROSS_ENTROPY)
    true_value, true = jax.value_and_grad(lambda p: loss(p, {}, xb, yb)[0])(p32)
    assert float(value) == pytest.approx(float(true_value), rel=1e-6)
    for k in "wb":
        np.testing.assert_allclose(grads["readout"][k], true["readout"][k], rtol=1e-6, atol=1e-8)
    for site in SITES[:-1]:  # hidden layers: the unsupervised rule, not the gradient
        np.testing.assert_allclose(grads[site]["w"], oja_gradient(network.ops[site], _inputs(network, p32, xb)[site],
                                                                  p32[site]["w"]), rtol=1e-6)
        assert not np.allclose(grads[site]["w"], true[site]["w"], atol=1e-4)


def np_patch_power(x, width, stride):
    """Mean over (example, output position) of the squared norm of the SAME-padded patch."""
    n, length, _ = x.shape
    out_length, before = same_padding(length, width, stride)
    total = 0.0
    for b in range(n):
        for o in range(out_length):
            for w in range(width):
                pos = o * stride + w - before
                if 0 <= pos < length:
                    total += np.sum(x[b, pos] ** 2)
    return total / (n * out_length)


def test_input_power_normalized_oja_matches_numpy():
    """normalization="input_power": each hidden layer's Oja gradient divided by the mean
    squared norm of its samples: the examples' inputs for dense layers (MLP), the patches for
    a conv layer (counted by hand, padding excluded); the readout keeps its true gradient."""
    _, network, initial, p32, _, x, y = _tiny_setup("hebb")
    rule = make_rule("hebbian", Hebbian(normalization="input_power"))
    grads = _np_estimate(rule, p32, x, y, None, network)
    expected = np_hebbian(initial, x.astype(np.float64), y)
    _, inputs, _ = np_forward(initial, x.astype(np.float64))
    for site in SITES[:-1]:
        power = np.mean(np.sum(inputs[site] ** 2, axis=1))
        expected[site]["w"] = expected[site]["w"] / power
    base.assert_tree_close(grads, expected, rtol=1e-4, atol=1e-7)

    network = Network(Conv1DSpec(channels=[2], kernel_size=3, stride=2, hidden=[]), base.N_CLASSES, "backprop")
    rng = np.random.default_rng(5)
    xc = (3.0 * rng.standard_normal((5, 7, 2))).astype(np.float32)
    params, _ = network.init(jax.random.key(2), xc)
    grads = _np_estimate(rule, params, xc, y[:5], None, network)
    w, x64 = np.asarray(params["conv_0"]["w"], np.float64), xc.astype(np.float64)
    flat = np_conv(x64, w, 2).reshape(-1, 2)
    oja = ((w.reshape(-1, 2) @ (flat.T @ flat)).reshape(w.shape) - np_conv_kernel_grad(x64, np_conv(x64, w, 2), 2, 3)) / 20
    power = np_patch_power(x64, 3, 2)
    assert 9.0 * 2 < power < 9.0 * 6  # about 2 or 3 of the 3 positions of 2 channels at variance 9
    np.testing.assert_allclose(grads["conv_0"]["w"], oja / power, rtol=1e-4, atol=1e-7)


def _inputs(network, params, x):
    return {name: site.input for name, site in network.apply(params, {}, x)[1].items()}


def test_oja_finds_the_principal_subspace():
    """A Hebbian layer of 3 units on 8-D correlated data: its columns become an orthonormal
    basis of the top-3 principal subspace (numpy SVD of the data's second moment)."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    scales = np.sqrt([4.0, 3.0, 2.0, 0.3, 0.2, 0.1, 0.1, 0.05])
    x = ((rng.standard_normal((2000, 8)) * scales) @ basis.T).astype(np.float32)
    y = rng.integers(0, 2, 2000).astype(np.int32)
    task = TaskData("correlated", x[:, :, None], y, x[:16, :, None], y[:16], 2)
    rule = make_rule("hebbian", Hebbian(hebbian_learning_rate=0.01, momentum=0.0, normalization="none"))
    network = Network(MLPSpec(hidden=[3]), 2, rule.credit)
    result = train_population(network, rule, task, 32, 1500, [0, 1500], [0], "loop")
    w = result.params["dense_0"]["w"][0, -1].astype(np.float64)
    top = np.linalg.svd(x.astype(np.float64), full_matrices=False)[2][:3].T  # [8, 3]
    q, _ = np.linalg.qr(w)
    cosines = np.linalg.svd(top.T @ q, compute_uv=False)
    assert np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))) < 5.0, cosines
    np.testing.assert_allclose(w.T @ w, np.eye(3), atol=0.1)
    initial = result.params["dense_0"]["w"][0, 0].astype(np.float64)
    assert np.linalg.svd(top.T @ np.linalg.qr(initial)[0], compute_uv=False).min() < 0.9  # it moved there


# --- vmap and loop, subject coordinates, validation ----------------------------------------------


def _tiny_task(shape, n=48, classes=3):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = np.argmax(x.reshape(n, -1) @ rng.standard_normal((x[0].size, classes)), -1).astype(np.int32)
    return TaskData("tiny", x, y, x[:16], y[:16], classes)


@functools.lru_cache(maxsize=None)
def population(name, vectorize):
    rule = make_rule(name)
    spec = MLPSpec(hidden=[5, 4]) if name == "direct_feedback_alignment" else Conv1DSpec(
        channels=[2, 3], kernel_size=3, stride=2, hidden=[4])
    network = Network(spec, 3, rule.credit)
    return train_population(network, rule, _tiny_task((8, 1)), 8, 40, [0, 20, 40], [0, 1], vectorize)


@pytest.mark.parametrize("name", ["direct_feedback_alignment", "node_perturbation", "hebbian"])
def test_vmap_and_loop_agree(name):
    loop, vmapped = population(name, "loop"), population(name, "vmap")
    assert loop.status == vmapped.status == ["ok", "ok"]
    np.testing.assert_allclose(loop.losses, vmapped.losses, rtol=1e-4, atol=1e-5)
    for site in loop.params:
        for k in "wb":
            np.testing.assert_allclose(loop.params[site][k], vmapped.params[site][k], rtol=1e-3, atol=1e-5)
        assert not np.allclose(loop.params[site]["w"][:, -1], loop.params[site]["w"][:, 0]), site
    assert not np.allclose(loop.params["readout"]["w"][0], loop.params["readout"]["w"][1])  # own seeds


PROTOCOL = """\
name: families
cohort:
  architecture: [mlp, conv1d]
  task: mnist1d
  learning_rule: [sgdm, {rule}]
  batch_size: 32
"""


def test_direct_feedback_needs_an_mlp():
    with pytest.raises(SimlabError, match="direct_feedback_alignment.*'conv1d'") as info:
        parse_protocol(PROTOCOL.format(rule="direct_feedback_alignment"))
    assert "cohort.learning_rule[1]" in str(info.value)
    parse_protocol(PROTOCOL.format(rule="direct_feedback_alignment").replace("[mlp, conv1d]", "mlp"))
    with pytest.raises(SimlabError, match="direct_feedback_alignment.*mlp"):
        Network(Conv1DSpec(), 10, "direct_feedback")


def test_subject_coordinates_of_the_new_families():
    protocol = parse_protocol(PROTOCOL.format(rule="node_perturbation").replace("sgdm", "sgdm, hebbian"))
    families = {s.learning_rule: task_family(protocol, s) for s in plan_cohort(protocol).subjects}
    assert families == {"sgdm": "supervised", "hebbian": "supervised", "node_perturbation": "reward_based"}
    assert rule_factors("node_perturbation") == {"credit_mechanism": "node_perturbation", "optimizer": "sgd_momentum"}
    assert rule_factors("hebbian")["credit_mechanism"] == "hebbian"
    assert rule_factors("direct_feedback_alignment")["credit_mechanism"] == "direct_feedback_alignment"


def test_a_defined_rule_is_its_credit_with_another_optimizer():
    """credit kolen_pollack + optimizer adam: KP's credit path and B update, W (and B, which
    follows W's optimizer) moved by Adam; the optimizer alone against numpy's Adam."""
    from simlab.specs.rules import defined_rule_model

    hyper = defined_rule_model("kolen_pollack")(credit="kolen_pollack", optimizer="adam", learning_rate=0.01,
                                                weight_decay=0.0)
    rule, builtin = make_rule("kp_adam", hyper), make_rule("kolen_pollack")
    assert (rule.name, rule.credit, rule.estimate) == ("kp_adam", builtin.credit, builtin.estimate)
    assert rule_factors("kp_adam", hyper) == {"credit_mechanism": "kolen_pollack", "optimizer": "adam"}
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 2)).astype(np.float32)}
    state, reference, expected = rule.optimizer.init(params), base.NumpyAdam(0.01, 0.9, 0.999, 1e-8), params["w"]
    for _ in range(3):
        g = rng.standard_normal((3, 2)).astype(np.float32)
        updates, state = rule.optimizer.update({"w": jnp.asarray(g)}, state, params)
        params = {"w": np.asarray(params["w"] + updates["w"])}
        expected = reference.step(np.asarray(expected, np.float64), g.astype(np.float64))
        np.testing.assert_allclose(params["w"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown learning rule 'kp_adam'"):
        make_rule("kp_adam")
