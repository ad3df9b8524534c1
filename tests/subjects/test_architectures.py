"""Architectures: site plan, parameter and feedback shapes, forward pass, probes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.subjects.architectures import Network
from simlab.specs.subjects import Conv1DSpec, MLPSpec
from rules.test_credit import np_conv  # the hand-written SAME-padded conv reference

MLP = MLPSpec(hidden=[8, 4])
CONV = Conv1DSpec(channels=[4, 8], kernel_size=3, stride=2, hidden=[6])
LENGTH = 20


def _x(n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, LENGTH, 1)).astype(np.float32)


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def _abstract_init(network):
    """Parameter and state shapes without compiling the initializers (slow on CPU)."""
    return jax.eval_shape(network.init, jax.random.key(0), jnp.zeros((1, LENGTH, 1), jnp.float32))


def _random_params(network, seed):
    """Random float32 params (nonzero biases included) with the network's shapes."""
    rng = np.random.default_rng(seed)
    params, _ = _abstract_init(network)
    return jax.tree.map(lambda a: (0.5 * rng.standard_normal(a.shape)).astype(np.float32), params)


def test_mlp_sites_and_shapes():
    network = Network(MLP, 10, "backprop")
    assert network.site_names == ("dense_0", "dense_1", "readout")
    params, state = _abstract_init(network)
    assert _shapes(params) == {
        "dense_0": {"w": (LENGTH, 8), "b": (8,)},
        "dense_1": {"w": (8, 4), "b": (4,)},
        "readout": {"w": (4, 10), "b": (10,)},
    }
    assert state == {}
    assert network.site_shapes((LENGTH, 1)) == {
        "dense_0": ((LENGTH,), (8,)),
        "dense_1": ((8,), (4,)),
        "readout": ((4,), (10,)),
    }
    assert network.kernel_sizes((LENGTH, 1)) == {"dense_0": LENGTH * 8, "dense_1": 32, "readout": 40}


def test_conv_sites_and_shapes():
    network = Network(CONV, 10, "backprop")
    assert network.site_names == ("conv_0", "conv_1", "dense_0", "readout")
    params, state = _abstract_init(network)
    assert _shapes(params) == {
        "conv_0": {"w": (3, 1, 4), "b": (4,)},
        "conv_1": {"w": (3, 4, 8), "b": (8,)},
        "dense_0": {"w": (5 * 8, 6), "b": (6,)},
        "readout": {"w": (6, 10), "b": (10,)},
    }
    assert state == {}
    # SAME padding with stride 2: 20 -> 10 -> 5
    assert network.site_shapes((LENGTH, 1)) == {
        "conv_0": ((LENGTH, 1), (10, 4)),
        "conv_1": ((10, 4), (5, 8)),
        "dense_0": ((40,), (6,)),
        "readout": ((6,), (10,)),
    }


@pytest.mark.parametrize("spec", [MLP, CONV], ids=["mlp", "conv"])
def test_feedback_credit_puts_B_in_state(spec):
    network = Network(spec, 10, "feedback")
    params, state = _abstract_init(network)
    assert set(state) == set(network.site_names)
    for site in network.site_names:
        assert set(state[site]) == {"feedback"}
        assert state[site]["feedback"].shape == params[site]["w"].shape
        assert state[site]["feedback"].dtype == params[site]["w"].dtype
    # the forward pass uses W only: same logits as a backprop network with the same params
    params = _random_params(network, seed=1)
    state = {site: {"feedback": np.zeros_like(params[site]["w"])} for site in network.site_names}
    backprop = Network(spec, 10, "backprop")
    x = jnp.asarray(_x())
    np.testing.assert_allclose(
        np.asarray(jax.jit(network.apply)(params, state, x)[0]),
        np.asarray(jax.jit(backprop.apply)(params, {}, x)[0]),
        rtol=1e-6,
    )


def test_feedback_kernels_initialized_like_W_but_independently():
    network = Network(MLPSpec(hidden=[64]), 10, "feedback")
    params, state = network.init(jax.random.key(1), jnp.zeros((1, 32, 1), jnp.float32))
    for site in network.site_names:
        B, W = np.asarray(state[site]["feedback"]), np.asarray(params[site]["w"])
        assert not np.allclose(B, W)
        assert abs(np.corrcoef(B.ravel(), W.ravel())[0, 1]) < 0.2
        # same He-style scale (variance 2/fan_in for relu sites, 1/fan_in for the readout)
        assert np.std(B) == pytest.approx(np.std(W), rel=0.25)


def test_unknown_credit_is_rejected():
    with pytest.raises(ValueError):
        Network(MLP, 10, "hebbian")


def _np(a):
    return np.asarray(a, np.float64)


def test_mlp_forward_matches_numpy():
    network = Network(MLP, 10, "backprop")
    x = _x(4, seed=2)
    params = _random_params(network, seed=3)
    logits, sites = jax.jit(network.apply)(params, {}, jnp.asarray(x))
    p = jax.tree.map(_np, params)
    h0_in = _np(x).reshape(4, -1)
    h0 = np.maximum(h0_in @ p["dense_0"]["w"] + p["dense_0"]["b"], 0)
    h1 = np.maximum(h0 @ p["dense_1"]["w"] + p["dense_1"]["b"], 0)
    out = h1 @ p["readout"]["w"] + p["readout"]["b"]
    np.testing.assert_allclose(_np(logits), out, rtol=1e-5, atol=1e-5)
    for name, (inp, outp) in {"dense_0": (h0_in, h0), "dense_1": (h0, h1), "readout": (h1, out)}.items():
        np.testing.assert_allclose(_np(sites[name].input), inp, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_np(sites[name].output), outp, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(sites["readout"].output), np.asarray(logits))


def test_conv_forward_matches_numpy():
    network = Network(CONV, 10, "backprop")
    x = _x(2, seed=4)
    params = _random_params(network, seed=6)
    logits, sites = jax.jit(network.apply)(params, {}, jnp.asarray(x))
    p = jax.tree.map(_np, params)

    h = _np(x)
    for name in ("conv_0", "conv_1"):
        h = np.maximum(np_conv(h, p[name]["w"], 2) + p[name]["b"], 0)
        np.testing.assert_allclose(_np(sites[name].output), h, rtol=1e-5, atol=1e-5)
    h = np.maximum(h.reshape(2, -1) @ p["dense_0"]["w"] + p["dense_0"]["b"], 0)
    out = h @ p["readout"]["w"] + p["readout"]["b"]
    np.testing.assert_allclose(_np(logits), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("site", ["dense_1", "dense_0"])
def test_probe_gradient_is_layer_local_jacobian_sum(site):
    """d/d probe of sum_j y_j = sum_j W_ij relu'(z_j), per example; upstream probes get nothing."""
    network = Network(MLP, 10, "backprop")
    x = jnp.asarray(_x(4, seed=7))
    params, state = _random_params(network, seed=8), {}
    _, sites = jax.jit(network.apply)(params, state, x)
    probes = {name: jnp.zeros_like(s.input) for name, s in sites.items()}

    def site_output_sum(probes):
        _, probed = network.apply(params, state, x, probes)
        return jnp.sum(probed[site].output)

    grads = jax.jit(jax.grad(site_output_sum))(probes)
    W, b = _np(params[site]["w"]), _np(params[site]["b"])
    z = _np(sites[site].input) @ W + b
    expected = (z > 0).astype(np.float64) @ W.T  # [batch, in]: sum_j W_ij relu'(z_j)
    np.testing.assert_allclose(_np(grads[site]), expected, rtol=1e-5, atol=1e-6)
    # the probe cuts the graph upstream, and downstream sites do not feed back
    for other in network.site_names:
        if other != site:
            assert not np.any(np.asarray(grads[other])), other
    # probes of zero leave the forward pass unchanged
    apply = jax.jit(network.apply)
    np.testing.assert_array_equal(
        np.asarray(apply(params, state, x, probes)[0]), np.asarray(apply(params, state, x)[0])
    )
