"""The Haiku layer of every simlab architecture: ``op(x, W) + b`` with a choice of credit path."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from simlab.rules.credit import feedback
from simlab.subjects.ops import LinearOp


def he_init(gain: float = 2.0) -> hk.initializers.Initializer:
    return hk.initializers.VarianceScaling(gain, "fan_in", "truncated_normal")


class Layer(hk.Module):
    """``op(x, W) + b``; with ``credit="feedback"`` the error reaching x travels through B.

    B lives in Haiku *state* (``feedback``), not in params, so no optimizer of the task loss
    ever touches it; it is initialized like W but independently.
    """

    def __init__(self, op: LinearOp, kernel_shape: tuple[int, ...], credit: str, gain: float, name: str):
        super().__init__(name=name)
        self.op, self.kernel_shape, self.credit, self.gain = op, kernel_shape, credit, gain

    def __call__(self, x: jax.Array) -> jax.Array:
        init = he_init(self.gain)
        kernel = hk.get_parameter("w", self.kernel_shape, x.dtype, init=init)
        bias = hk.get_parameter("b", self.kernel_shape[-1:], x.dtype, init=jnp.zeros)
        if self.credit == "feedback":
            feedback_kernel = hk.get_state("feedback", self.kernel_shape, x.dtype, init=init)
            return feedback(self.op)(x, kernel, feedback_kernel) + bias
        return self.op(x, kernel) + bias
