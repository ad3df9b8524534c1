"""The linear operations of simlab's layers.

A layer's forward map is ``op(x, W) + b`` with ``op`` linear in both arguments (a matrix
product or a convolution). Learning rules with a separate feedback pathway need the same
``op`` with a feedback kernel B in the backward pass (:mod:`simlab.rules.credit`), so ops are
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
