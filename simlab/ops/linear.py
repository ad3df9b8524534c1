"""The linear operations of simlab's layers.

A layer's forward map is ``op(x, W) + b`` with ``op`` linear in both arguments (a matrix
product or a convolution). Learning rules with a separate feedback pathway need the same
``op`` with a feedback kernel B in the backward pass (:mod:`simlab.ops.feedback`), so ops are
plain functions that both the layer and the rules can call.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

LinearOp = Callable[[jax.Array, jax.Array], jax.Array]


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` for inputs [batch, in] and kernel [in, out]."""
    return x @ kernel


@functools.lru_cache(maxsize=None)
def conv1d(stride: int) -> LinearOp:
    """1-D convolution (NWC inputs, WIO kernel, SAME padding as in XLA) with a given stride.

    Written as patches times a matrix rather than ``lax.conv_general_dilated``: inside the
    ``lax.scan`` of training, XLA's CPU convolution ran about 4x slower than outside it, while
    a matrix product keeps its speed (2-core CPU; ``python benchmarks/bench_conv.py``). The
    result equals XLA's convolution to float32 rounding (tested).
    Cached so that one stride always gives the same function object, which keeps the
    custom-gradient wrappers built from it cached too.
    """

    def op(x: jax.Array, kernel: jax.Array) -> jax.Array:
        width, length = kernel.shape[0], x.shape[1]
        out_length = -(-length // stride)
        pad = max((out_length - 1) * stride + width - length, 0)
        padded = jax.numpy.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        span = (out_length - 1) * stride + 1
        patches = jax.numpy.concatenate(
            [padded[:, offset : offset + span : stride, :] for offset in range(width)], axis=-1
        )
        return patches @ kernel.reshape(-1, kernel.shape[-1])

    op.__name__ = f"conv1d_stride{stride}"
    return op


def transpose(op: LinearOp, x: jax.Array, kernel: jax.Array, cotangent: jax.Array) -> jax.Array:
    """``op``'s adjoint in its input: for dense, ``cotangent @ kernel.T``; for conv, a transposed conv.

    ``x`` only fixes the input's shape (``op`` is linear in it).
    """
    _, pullback = jax.vjp(lambda inputs: op(inputs, kernel), x)
    return pullback(cotangent)[0]


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int, int]:
    """XLA's SAME padding of one axis: (output size, padding before, padding after)."""
    out = -(-size // stride)
    pad = max((out - 1) * stride + window - size, 0)
    return out, pad // 2, pad - pad // 2


def _windows(x: jax.Array, window: tuple[int, int], stride: int, fill: float):
    """The strided SAME windows of NHWC ``x``: a list of kh * kw arrays [n, out_h, out_w, c]."""
    (out_h, top, bottom), (out_w, left, right) = (
        _same_padding(x.shape[1], window[0], stride),
        _same_padding(x.shape[2], window[1], stride),
    )
    padded = jax.numpy.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    return [
        padded[:, i : i + span_h : stride, j : j + span_w : stride, :]
        for i in range(window[0])
        for j in range(window[1])
    ]


def conv2d_patches(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """2-D convolution (NHWC, HWIO, SAME) as patches [n, h, w, kh*kw*c] times kernel [kh*kw*c, o]."""
    patches = jax.numpy.concatenate(_windows(x, kernel.shape[:2], stride, 0.0), axis=-1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def conv2d_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The same convolution by ``lax.conv_general_dilated`` (the reference, and the accelerator path)."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.lru_cache(maxsize=None)
def conv2d(stride: int) -> LinearOp:
    """2-D convolution (NHWC inputs, HWIO kernel, SAME padding as in XLA) with a given stride.

    On CPU it is a matrix product of patches, like :func:`conv1d` and for the same reason
    (XLA's CPU convolution is slow inside ``lax.scan``); on accelerators, where the patches of
    a large image cost memory and cuDNN convolutions are fast, it is XLA's convolution. Both
    give the same numbers to float32 rounding (tested). The choice is made when the op is
    traced, so one compiled program uses one of them. Cached per stride, as ``conv1d``.
    """

    def op(x: jax.Array, kernel: jax.Array) -> jax.Array:
        if jax.default_backend() == "cpu":
            return conv2d_patches(x, kernel, stride)
        return conv2d_xla(x, kernel, stride)

    op.__name__ = f"conv2d_stride{stride}"
    return op


def pool2d(x: jax.Array, kind: str, window: int, stride: int) -> jax.Array:
    """Max or average pooling of NHWC ``x`` over ``window`` x ``window`` (SAME padding, as in
    TensorFlow: padding never wins a max and is left out of an average). Written with strided
    slices, like the convolutions, rather than ``lax.reduce_window``."""
    if kind == "max":
        return functools.reduce(jax.numpy.maximum, _windows(x, (window, window), stride, -jax.numpy.inf))
    if kind == "avg":
        total = sum(_windows(x, (window, window), stride, 0.0))
        count = sum(_windows(jax.numpy.ones((1, *x.shape[1:3], 1), x.dtype), (window, window), stride, 0.0))
        return total / count
    raise ValueError(f"pooling must be 'max' or 'avg', got {kind!r}")


def local_response_norm(
    x: jax.Array, radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75
) -> jax.Array:
    """Local response normalization across channels (Krizhevsky et al. 2012; TensorFlow's
    ``local_response_normalization`` with ``depth_radius=radius``): each unit divided by
    ``(bias + alpha * sum of squares of the 2 radius + 1 neighbouring channels) ** beta``.
    Per example and per position, without parameters. Defaults: AlexNet's (k=2, n=5,
    alpha=1e-4, beta=0.75)."""
    squares = jax.numpy.pad(x**2, [(0, 0)] * (x.ndim - 1) + [(radius, radius)])
    channels = x.shape[-1]
    window = sum(squares[..., offset : offset + channels] for offset in range(2 * radius + 1))
    return x / (bias + alpha * window) ** beta


def rms_normalize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Scale-only per-example normalization: each example divided by the root mean square of
    all its units (no centering, no parameters, no running statistics)."""
    axes = tuple(range(1, x.ndim))
    return x * jax.lax.rsqrt(jax.numpy.mean(x**2, axis=axes, keepdims=True) + eps)
