"""Linear ops, the feedback-pathway custom VJP and the alignment primitives against numpy.

All references are float64 numpy written by hand (loops for the convolution); JAX runs in
float32, hence the tolerances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.ops.feedback import alignment_primitives, feedback
from simlab.ops.linear import conv1d, dense, transpose


def assert_close(actual, expected, rtol=1e-4, atol_scale=1e-5):
    expected = np.asarray(expected, np.float64)
    atol = atol_scale * max(1.0, float(np.max(np.abs(expected)))) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


# --- numpy references -----------------------------------------------------------------------


def same_padding(length, width, stride):
    """XLA's SAME padding for one spatial axis: (output length, padding before)."""
    out_length = -(-length // stride)
    total = max((out_length - 1) * stride + width - length, 0)
    return out_length, total // 2


def np_conv(x, k, stride):
    """SAME-padded strided 1-D cross-correlation, x [N, L, C], k [K, C, F] -> [N, ceil(L/s), F]."""
    n, length, channels = x.shape
    width, _, features = k.shape
    out_length, before = same_padding(length, width, stride)
    y = np.zeros((n, out_length, features))
    for b in range(n):
        for o in range(out_length):
            for w in range(width):
                pos = o * stride + w - before
                if 0 <= pos < length:
                    for c in range(channels):
                        for f in range(features):
                            y[b, o, f] += x[b, pos, c] * k[w, c, f]
    return y


def np_conv_input_grad(dy, k, stride, length):
    """Adjoint of np_conv in x: the error reaching the input through kernel k."""
    n, out_length, _ = dy.shape
    width, channels, _ = k.shape
    _, before = same_padding(length, width, stride)
    dx = np.zeros((n, length, channels))
    for b in range(n):
        for o in range(out_length):
            for w in range(width):
                pos = o * stride + w - before
                if 0 <= pos < length:
                    dx[b, pos] += k[w] @ dy[b, o]
    return dx


def np_conv_kernel_grad(x, dy, stride, width):
    """Gradient of sum(np_conv(x, k) * dy) in k."""
    n, length, channels = x.shape
    out_length, features = dy.shape[1:]
    _, before = same_padding(length, width, stride)
    dk = np.zeros((width, channels, features))
    for b in range(n):
        for o in range(out_length):
            for w in range(width):
                pos = o * stride + w - before
                if 0 <= pos < length:
                    dk[w] += np.outer(x[b, pos], dy[b, o])
    return dk


def relu(z):
    return np.maximum(z, 0.0)


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def f64(a):
    return np.asarray(a, np.float64)


# --- the ops ----------------------------------------------------------------------------------


CONV_CASES = [
    (stride, length, width)
    for stride in (1, 2, 3)
    for length in (7, 8)
    for width in (2, 3)
] + [(1, 3, 5), (2, 4, 5), (3, 2, 1), (3, 10, 1), (2, 1, 3)]


@pytest.mark.parametrize("stride,length,width", CONV_CASES)
def test_conv1d_equals_numpy_loops_and_xla(stride, length, width):
    rng = np.random.default_rng(100 * stride + 10 * length + width)
    x, k = f32(rng, 2, length, 3), f32(rng, width, 3, 4)
    # jitted throughout: the ops run under jit in training, and compiling once is cheaper than
    # dispatching each op eagerly
    y = jax.jit(conv1d(stride))(jnp.asarray(x), jnp.asarray(k))
    assert y.shape == (2, -(-length // stride), 4)
    assert_close(y, np_conv(f64(x), f64(k), stride))
    xla = jax.jit(
        lambda x, k: jax.lax.conv_general_dilated(x, k, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    )(jnp.asarray(x), jnp.asarray(k))
    assert_close(y, xla)


def test_conv1d_is_cached_per_stride():
    assert conv1d(2) is conv1d(2)
    assert conv1d(2) is not conv1d(3)


def test_dense_is_matrix_product():
    rng = np.random.default_rng(0)
    x, k = f32(rng, 4, 5), f32(rng, 5, 3)
    assert_close(dense(jnp.asarray(x), jnp.asarray(k)), f64(x) @ f64(k))


def test_transpose_dense():
    rng = np.random.default_rng(1)
    x, k, ct = f32(rng, 4, 5), f32(rng, 5, 3), f32(rng, 4, 3)
    dx = transpose(dense, jnp.asarray(x), jnp.asarray(k), jnp.asarray(ct))
    assert dx.shape == x.shape
    assert_close(dx, f64(ct) @ f64(k).T)


@pytest.mark.parametrize("stride,length,width", [(1, 7, 3), (2, 8, 3), (2, 9, 4), (3, 10, 2), (3, 2, 5)])
def test_transpose_conv_is_adjoint(stride, length, width):
    rng = np.random.default_rng(7 * stride + length + width)
    op = conv1d(stride)
    x, k = f32(rng, 3, length, 2), f32(rng, width, 2, 5)
    y = f32(rng, 3, -(-length // stride), 5)
    xt = jax.jit(lambda x, k, y: transpose(op, x, k, y))(jnp.asarray(x), jnp.asarray(k), jnp.asarray(y))
    assert xt.shape == x.shape
    lhs = float(np.sum(f64(jax.jit(op)(jnp.asarray(x), jnp.asarray(k))) * f64(y)))
    rhs = float(np.sum(f64(x) * f64(xt)))
    assert lhs == pytest.approx(rhs, rel=1e-4, abs=1e-4)
    # and it is the transposed convolution written by hand
    assert_close(xt, np_conv_input_grad(f64(y), f64(k), stride, length))


# --- the feedback pathway ----------------------------------------------------------------------


def _two_layer_dense_problem(seed=0):
    rng = np.random.default_rng(seed)
    n, d_in, d_hidden, d_out = 5, 6, 7, 4
    arrays = dict(
        x=f32(rng, n, d_in),
        w1=f32(rng, d_in, d_hidden, scale=0.5),
        b1=f32(rng, d_hidden, scale=0.1),
        B1=f32(rng, d_in, d_hidden, scale=0.5),
        w2=f32(rng, d_hidden, d_out, scale=0.5),
        b2=f32(rng, d_out, scale=0.1),
        B2=f32(rng, d_hidden, d_out, scale=0.5),
    )
    y = rng.integers(0, d_out, n)
    return arrays, y


def _dense_loss(layer1, layer2):
    def loss(a, y):
        h = jax.nn.relu(layer1(a["x"], a["w1"], a["B1"]) + a["b1"])
        logits = layer2(h, a["w2"], a["B2"]) + a["b2"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    return loss


def _np_dense_feedback_grads(a, y):
    a = {k: f64(v) for k, v in a.items()}
    n = a["x"].shape[0]
    z1 = a["x"] @ a["w1"] + a["b1"]
    h = relu(z1)
    z2 = h @ a["w2"] + a["b2"]
    p = softmax(z2)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    e = (p - np.eye(p.shape[1])[y]) / n
    dh = e @ a["B2"].T
    dz1 = dh * (z1 > 0)
    grads = dict(
        x=dz1 @ a["B1"].T,
        w1=a["x"].T @ dz1,
        b1=dz1.sum(0),
        B1=np.zeros_like(a["B1"]),
        w2=h.T @ e,
        b2=e.sum(0),
        B2=np.zeros_like(a["B2"]),
    )
    return loss, grads


def test_feedback_dense_forward_uses_W():
    a, _ = _two_layer_dense_problem()
    out = jax.jit(feedback(dense))(jnp.asarray(a["x"]), jnp.asarray(a["w1"]), jnp.asarray(a["B1"]))
    assert_close(out, f64(a["x"]) @ f64(a["w1"]))


def test_feedback_dense_two_layer_gradients_match_numpy():
    a, y = _two_layer_dense_problem()
    fb = feedback(dense)
    loss_fn = _dense_loss(fb, fb)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))({k: jnp.asarray(v) for k, v in a.items()}, jnp.asarray(y))
    np_loss, np_grads = _np_dense_feedback_grads(a, y)
    assert float(loss) == pytest.approx(np_loss, rel=1e-5)
    for name in np_grads:
        assert_close(grads[name], np_grads[name])
    # B receives exactly zero gradient from the task loss
    assert not np.any(np.asarray(grads["B1"])) and not np.any(np.asarray(grads["B2"]))
    # and they genuinely differ from backprop's (so the comparison can tell W from B apart)
    _, backprop_grads = _np_dense_feedback_grads(dict(a, B1=a["w1"], B2=a["w2"]), y)
    assert not np.allclose(np.asarray(grads["w1"]), backprop_grads["w1"], atol=1e-3)
    assert not np.allclose(np.asarray(grads["x"]), backprop_grads["x"], atol=1e-3)


def test_feedback_with_B_equal_W_is_backprop():
    a, y = _two_layer_dense_problem(seed=3)
    a["B1"], a["B2"] = a["w1"].copy(), a["w2"].copy()
    ja = {k: jnp.asarray(v) for k, v in a.items()}
    fb = feedback(dense)
    feedback_grads = jax.jit(jax.grad(_dense_loss(fb, fb)))(ja, jnp.asarray(y))
    plain = lambda x, w, B: x @ w  # noqa: E731
    true_grads = jax.jit(jax.grad(_dense_loss(plain, plain)))(ja, jnp.asarray(y))
    for name in ("x", "w1", "b1", "w2", "b2"):
        assert_close(feedback_grads[name], true_grads[name])


def test_feedback_conv_two_layer_gradients_match_numpy():
    rng = np.random.default_rng(11)
    n, length, c_in, c_hidden, c_out, width = 3, 9, 2, 4, 3, 3
    a = dict(
        x=f32(rng, n, length, c_in),
        w1=f32(rng, width, c_in, c_hidden, scale=0.5),
        B1=f32(rng, width, c_in, c_hidden, scale=0.5),
        w2=f32(rng, width, c_hidden, c_out, scale=0.5),
        B2=f32(rng, width, c_hidden, c_out, scale=0.5),
    )
    hidden_length = -(-length // 2)
    out_length = -(-hidden_length // 2)
    target = f32(rng, n, out_length, c_out)
    fb = feedback(conv1d(2))

    def loss_fn(p):
        h = jax.nn.relu(fb(p["x"], p["w1"], p["B1"]))
        out = fb(h, p["w2"], p["B2"])
        return 0.5 * jnp.sum((out - target) ** 2) / n

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))({k: jnp.asarray(v) for k, v in a.items()})

    d = {k: f64(v) for k, v in a.items()}
    z1 = np_conv(d["x"], d["w1"], 2)
    h = relu(z1)
    out = np_conv(h, d["w2"], 2)
    assert out.shape == (n, out_length, c_out)
    e = (out - f64(target)) / n
    dh = np_conv_input_grad(e, d["B2"], 2, hidden_length)
    dz1 = dh * (z1 > 0)
    expected = dict(
        x=np_conv_input_grad(dz1, d["B1"], 2, length),
        w1=np_conv_kernel_grad(d["x"], dz1, 2, width),
        B1=np.zeros_like(d["B1"]),
        w2=np_conv_kernel_grad(h, e, 2, width),
        B2=np.zeros_like(d["B2"]),
    )
    assert float(loss) == pytest.approx(0.5 * np.sum((out - f64(target)) ** 2) / n, rel=1e-5)
    for name in expected:
        assert_close(grads[name], expected[name])
    assert not np.any(np.asarray(grads["B1"])) and not np.any(np.asarray(grads["B2"]))


# --- alignment primitives ------------------------------------------------------------------------

NAMES = ("decay", "amp", "null", "sparse", "self")


def np_primitives(x, W, B):
    n = x.shape[0]
    f, b = x @ W, x @ B
    return dict(
        decay=np.sum(W**2) + np.sum(B**2),
        amp=-np.sum(np.mean(f * b, axis=0)),
        null=np.sum(np.mean((f @ B.T) ** 2, axis=0)),
        sparse=np.sum(np.mean(f**2, axis=0)) + np.sum(np.mean(b**2, axis=0)),
        self=-np.sum(W * B),
    )


def np_ia_loss(x, W, B, alpha, beta, gamma):
    p = np_primitives(x, W, B)
    return alpha * p["amp"] + beta * p["null"] + gamma * p["decay"]


def np_ia_grad_B(x, W, B, alpha, beta, gamma):
    n = x.shape[0]
    f = x @ W
    r = f @ B.T
    return alpha * (-x.T @ f / n) + beta * (2.0 / n * r.T @ f) + gamma * 2.0 * B


def _primitive_problem(seed=5):
    rng = np.random.default_rng(seed)
    return f32(rng, 6, 5), f32(rng, 5, 4, scale=0.5), f32(rng, 5, 4, scale=0.5)


def test_alignment_primitives_dense_match_numpy():
    x, W, B = _primitive_problem()
    terms = jax.jit(lambda x, W, B: alignment_primitives(dense, x, W, B, NAMES))(
        jnp.asarray(x), jnp.asarray(W), jnp.asarray(B)
    )
    assert set(terms) == set(NAMES)
    expected = np_primitives(f64(x), f64(W), f64(B))
    for name in NAMES:
        assert float(terms[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-5), name


def test_alignment_primitives_subset_and_unknown_name():
    x, W, B = (jnp.asarray(a) for a in _primitive_problem())
    assert set(alignment_primitives(dense, x, W, B, ("amp",))) == {"amp"}
    with pytest.raises(ValueError):
        alignment_primitives(dense, x, W, B, ("mirror",))


def test_numpy_ia_gradient_matches_finite_differences():
    x, W, B = (f64(a) for a in _primitive_problem(seed=8))
    alpha, beta, gamma = 0.7, 0.3, 0.2
    analytic = np_ia_grad_B(x, W, B, alpha, beta, gamma)
    numeric = np.zeros_like(B)
    h = 1e-6
    for idx in np.ndindex(*B.shape):
        plus, minus = B.copy(), B.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (np_ia_loss(x, W, plus, alpha, beta, gamma) - np_ia_loss(x, W, minus, alpha, beta, gamma)) / (
            2 * h
        )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("alpha,beta,gamma", [(0.7, 0.3, 0.2), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_ia_gradient_wrt_B_matches_numpy(alpha, beta, gamma):
    x, W, B = _primitive_problem(seed=9)

    def loss(x, W, B):
        t = alignment_primitives(dense, x, W, B, ("amp", "null", "decay"))
        return alpha * t["amp"] + beta * t["null"] + gamma * t["decay"]

    gx, gW, gB = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(jnp.asarray(x), jnp.asarray(W), jnp.asarray(B))
    assert_close(gB, np_ia_grad_B(f64(x), f64(W), f64(B), alpha, beta, gamma))
    # x and W are constants of the local loss
    assert not np.any(np.asarray(gx)) and not np.any(np.asarray(gW))


def test_alignment_primitives_conv_match_numpy():
    rng = np.random.default_rng(21)
    stride, width = 2, 3
    x, W, B = f32(rng, 3, 9, 2), f32(rng, width, 2, 4, scale=0.5), f32(rng, width, 2, 4, scale=0.5)
    op = conv1d(stride)
    terms = jax.jit(lambda x, W, B: alignment_primitives(op, x, W, B, NAMES))(
        jnp.asarray(x), jnp.asarray(W), jnp.asarray(B)
    )
    d_x, d_W, d_B = f64(x), f64(W), f64(B)
    n = x.shape[0]
    f, b = np_conv(d_x, d_W, stride), np_conv(d_x, d_B, stride)
    r = np_conv_input_grad(f, d_B, stride, x.shape[1])
    expected = dict(
        decay=np.sum(d_W**2) + np.sum(d_B**2),
        amp=-np.sum(f * b) / n,
        null=np.sum(r**2) / n,
        sparse=(np.sum(f**2) + np.sum(b**2)) / n,
        self=-np.sum(d_W * d_B),
    )
    for name in NAMES:
        assert float(terms[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-5), name

    # gradient in B of the IA combination: amp -> -K(x, f)/n, null -> 2/n K(r, f), decay -> 2B,
    # with K(input, output_grad) the conv kernel gradient
    alpha, beta, gamma = 0.7, 0.3, 0.2

    def loss(B):
        t = alignment_primitives(op, jnp.asarray(x), jnp.asarray(W), B, ("amp", "null", "decay"))
        return alpha * t["amp"] + beta * t["null"] + gamma * t["decay"]

    expected_grad = (
        alpha * (-np_conv_kernel_grad(d_x, f, stride, width) / n)
        + beta * (2.0 / n) * np_conv_kernel_grad(r, f, stride, width)
        + gamma * 2.0 * d_B
    )
    assert_close(jax.jit(jax.grad(loss))(jnp.asarray(B)), expected_grad)
