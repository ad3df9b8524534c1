"""The Haiku layer of every simlab architecture: ``op(x, W) + b`` with a choice of credit path."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from simlab.ops.feedback import feedback
from simlab.ops.linear import LinearOp


def he_init(gain: float = 2.0) -> hk.initializers.Initializer:
    return hk.initializers.VarianceScaling(gain, "fan_in", "truncated_normal")


class Layer(hk.Module):
    """``op(x, W) + b``; with ``credit="feedback"`` the error reaching x travels through B.

    B lives in Haiku *state* (``feedback``), not in params, so no optimizer of the task loss
    ever touches it; it is initialized like W but independently.

    With ``credit="direct_feedback"`` and ``outputs`` set (hidden layers of direct feedback
    alignment), the forward pass and its gradients are plain, and the state holds
    ``direct_feedback``, a fixed random [outputs, units] matrix that carries the network's
    output error straight to this layer's units (used by the rule's estimate, never by autodiff).
    """

    def __init__(
        self,
        op: LinearOp,
        kernel_shape: tuple[int, ...],
        credit: str,
        gain: float,
        name: str,
        outputs: int | None = None,
    ):
        super().__init__(name=name)
        self.op, self.kernel_shape, self.credit, self.gain = op, kernel_shape, credit, gain
        self.outputs = outputs

    def __call__(self, x: jax.Array) -> jax.Array:
        init = he_init(self.gain)
        kernel = hk.get_parameter("w", self.kernel_shape, x.dtype, init=init)
        bias = hk.get_parameter("b", self.kernel_shape[-1:], x.dtype, init=jnp.zeros)
        if self.credit == "feedback":
            feedback_kernel = hk.get_state("feedback", self.kernel_shape, x.dtype, init=init)
            return feedback(self.op)(x, kernel, feedback_kernel) + bias
        if self.credit == "direct_feedback" and self.outputs is not None:
            # unit variance per error component reaching a unit: fan-in = the number of outputs
            hk.get_state("direct_feedback", (self.outputs, self.kernel_shape[-1]), x.dtype, init=he_init(1.0))
        return self.op(x, kernel) + bias
