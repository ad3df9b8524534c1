"""Credit assignment through a separate feedback pathway (Kunin et al. 2020; Lillicrap et al. 2016).

For a layer ``y = op(x, W)``, the backward pass computes the error reaching the input with the
feedback kernel B in place of W (``dx = op^T(dy; B)``, i.e. ``dy @ B.T`` for a dense layer),
keeps the ordinary local update of W (``dW = x^T dy``) and gives B no gradient from the task
loss. Feedback rules differ only in how B changes (:mod:`simlab.rules.feedback`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from simlab.ops.linear import LinearOp, transpose


@functools.lru_cache(maxsize=None)
def feedback(op: LinearOp):
    """``op`` wrapped as a pure ``jax.custom_vjp`` function ``(x, W, B) -> op(x, W)``."""

    @jax.custom_vjp
    def apply(x, kernel, feedback_kernel):
        return op(x, kernel)

    def forward(x, kernel, feedback_kernel):
        return op(x, kernel), (x, kernel, feedback_kernel)

    def backward(residuals, cotangent):
        x, kernel, feedback_kernel = residuals
        _, kernel_pullback = jax.vjp(lambda k: op(x, k), kernel)
        return (
            transpose(op, x, feedback_kernel, cotangent),
            kernel_pullback(cotangent)[0],
            jnp.zeros_like(feedback_kernel),
        )

    apply.defvjp(forward, backward)
    return apply


def alignment_primitives(op: LinearOp, x, kernel, feedback_kernel, names) -> dict[str, jax.Array]:
    """The layer-wise primitives of local feedback-learning rules (Kunin et al. 2020).

    With f = op(x, W) and b = op(x, B), means over the batch and sums over units:
    decay = |W|^2 + |B|^2; amp = -sum mean(f * b); null = sum mean((f B^T)^2);
    sparse = sum mean(f^2) + sum mean(b^2); self = -sum(W * B).
    x and W are constants here, so a loss built from these trains only B.
    """
    x, kernel = jax.lax.stop_gradient(x), jax.lax.stop_gradient(kernel)
    batch = x.shape[0]
    forward_projection = op(x, kernel)
    terms = {}
    for name in names:
        if name == "decay":
            terms[name] = jnp.sum(kernel**2) + jnp.sum(feedback_kernel**2)
        elif name == "amp":
            terms[name] = -jnp.sum(forward_projection * op(x, feedback_kernel)) / batch
        elif name == "null":
            reconstruction = transpose(op, x, feedback_kernel, forward_projection)
            terms[name] = jnp.sum(reconstruction**2) / batch
        elif name == "sparse":
            terms[name] = (jnp.sum(forward_projection**2) + jnp.sum(op(x, feedback_kernel) ** 2)) / batch
        elif name == "self":
            terms[name] = -jnp.sum(kernel * feedback_kernel)
        else:
            raise ValueError(f"unknown alignment primitive {name!r}")
    return terms
