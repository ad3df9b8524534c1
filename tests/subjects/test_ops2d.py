"""2-D ops: convolution as patches x kernel (vs XLA), pooling, LRN, scale-only normalization."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.ops.linear import (
    conv2d,
    conv2d_patches,
    conv2d_xla,
    local_response_norm,
    pool2d,
    rms_normalize,
    transpose,
)


def _rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize(
    "size, kernel, stride",
    [((8, 8), 3, 1), ((7, 9), 3, 2), ((8, 6), 4, 2), ((9, 9), 5, 3), ((5, 5), 1, 2), ((6, 7), 2, 1), ((4, 4), 5, 1)],
)
def test_conv2d_patches_equals_xla(size, kernel, stride):
    x = _rand((2, *size, 3), 0)
    k = _rand((kernel, kernel, 3, 4), 1)
    expected = conv2d_xla(x, k, stride)
    got = conv2d_patches(x, k, stride)
    assert got.shape == expected.shape == (2, -(-size[0] // stride), -(-size[1] // stride), 4)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
    # on CPU the op is the patches version; its adjoint is XLA's transposed convolution
    np.testing.assert_array_equal(np.asarray(conv2d(stride)(x, k)), np.asarray(got))
    cotangent = _rand(expected.shape, 2)
    _, pullback = jax.vjp(lambda inputs: conv2d_xla(inputs, k, stride), x)
    np.testing.assert_allclose(
        np.asarray(transpose(conv2d(stride), x, k, cotangent)), np.asarray(pullback(cotangent)[0]), rtol=1e-5, atol=1e-5
    )


def test_conv2d_is_cached_per_stride():
    assert conv2d(2) is conv2d(2) and conv2d(1) is not conv2d(2)


@pytest.mark.parametrize("size, window, stride", [((8, 8), 3, 2), ((7, 5), 3, 2), ((6, 6), 2, 2), ((5, 5), 3, 1)])
def test_pooling_matches_reduce_window(size, window, stride):
    x = _rand((2, *size, 3), 3)
    dims, strides = (1, window, window, 1), (1, stride, stride, 1)
    expected_max = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, "SAME")
    np.testing.assert_allclose(np.asarray(pool2d(x, "max", window, stride)), np.asarray(expected_max))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, "SAME")
    count = jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, dims, strides, "SAME")
    np.testing.assert_allclose(np.asarray(pool2d(x, "avg", window, stride)), np.asarray(total / count), rtol=1e-6)
    with pytest.raises(ValueError):
        pool2d(x, "median", window, stride)


def test_local_response_norm_matches_definition():
    x = np.asarray(_rand((2, 3, 3, 7), 4), np.float64)
    radius, bias, alpha, beta = 2, 2.0, 1e-2, 0.75
    expected = np.empty_like(x)
    for c in range(7):
        window = (x[..., max(0, c - radius) : c + radius + 1] ** 2).sum(-1)
        expected[..., c] = x[..., c] / (bias + alpha * window) ** beta
    got = local_response_norm(jnp.asarray(x, jnp.float32), radius, bias, alpha, beta)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_rms_normalize_is_per_example():
    x = _rand((3, 4, 4, 2), 5) * jnp.asarray([1.0, 10.0, 0.1])[:, None, None, None]
    y = np.asarray(rms_normalize(x))
    np.testing.assert_allclose(np.sqrt((y**2).mean(axis=(1, 2, 3))), 1.0, rtol=1e-3)
    # an example's result does not depend on the others
    np.testing.assert_allclose(np.asarray(rms_normalize(x[:1])), y[:1], rtol=1e-6)
