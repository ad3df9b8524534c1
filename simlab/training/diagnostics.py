"""Alignment diagnostics of feedback-pathway rules, computed post hoc from the snapshot store.

Per subject, session and site (layer), for rules whose credit is "feedback":

- ``feedback_angle``: the angle between the feedback kernel B and the forward kernel W (both
  flattened), in degrees;
- ``gradient_angle``: the angle between the rule's weight gradient (what its credit path
  gives for W on a batch, before the optimizer) and the true backprop gradient of the task
  loss for W on the same batch, in degrees.

The batch is fixed: the run's stimulus set (inputs and labels), made into the network's
inputs and targets by the subject's objective (a contrastive subject's two augmented views
are drawn from a fixed key, :data:`DIAGNOSTIC_KEY`), and the loss is the objective's. The
angle is arccos of the cosine of the two flattened arrays, computed in the numerically stable form
``2 atan2(|u - v|, |u + v|)`` of the unit vectors u, v (so identical arrays give exactly 0);
NaN if either array is all zeros or not finite.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from simlab.subjects.architectures import Network
from simlab.training.objectives import CROSS_ENTROPY, Objective, objective_loss

DIAGNOSTIC_KEY = 0
"""Seed of the key that ``prepare`` (augmentations) gets for the diagnostic batch."""


def angle(a: jax.Array, b: jax.Array) -> jax.Array:
    """The angle between two arrays, flattened, in degrees (NaN when either is zero)."""
    a, b = jnp.ravel(a).astype(jnp.float32), jnp.ravel(b).astype(jnp.float32)
    norm_a, norm_b = jnp.linalg.norm(a), jnp.linalg.norm(b)
    u, v = a / norm_a, b / norm_b
    radians = 2.0 * jnp.arctan2(jnp.linalg.norm(u - v), jnp.linalg.norm(u + v))
    valid = (norm_a > 0) & (norm_b > 0)
    return jnp.where(valid, jnp.degrees(radians), jnp.nan)


def feedback_angles(params: dict, state: dict, site_names) -> jax.Array:
    """Angle between B and W of each site, in ``site_names`` order: [n_sites]."""
    return jnp.stack([angle(state[name]["feedback"], params[name]["w"]) for name in site_names])


def gradient_angles(
    feedback_network: Network, backprop_network: Network, params, state, x, y, objective: Objective = CROSS_ENTROPY
) -> jax.Array:
    """Angle between the feedback-credit gradient and the backprop gradient of W, per site: [n_sites]."""
    inputs, targets = objective.prepare(jax.random.key(DIAGNOSTIC_KEY), x, y)
    rule_loss, true_loss = objective_loss(feedback_network, objective), objective_loss(backprop_network, objective)
    rule_grads = jax.grad(lambda p: rule_loss(p, state, inputs, targets)[0])(params)
    true_grads = jax.grad(lambda p: true_loss(p, {}, inputs, targets)[0])(params)
    return jnp.stack([angle(rule_grads[name]["w"], true_grads[name]["w"]) for name in feedback_network.site_names])


def alignment_fn(
    feedback_network: Network, backprop_network: Network, objective: Objective = CROSS_ENTROPY
) -> Callable:
    """A jitted ``f(params, state, x, y) -> (feedback_angle, gradient_angle)`` under the
    subject's ``objective``.

    ``params`` and ``state`` have leading axes [replicate, session] (as in a shard); both
    results are [replicate, session, site], sites in the network's plan order.
    """
    names = feedback_network.site_names

    def one(params, state, x, y):
        return (
            feedback_angles(params, state, names),
            gradient_angles(feedback_network, backprop_network, params, state, x, y, objective),
        )

    over_sessions = jax.vmap(one, in_axes=(0, 0, None, None))
    return jax.jit(jax.vmap(over_sessions, in_axes=(0, 0, None, None)))


def alignment_angles(fn: Callable, params, state, x, y) -> tuple[np.ndarray, np.ndarray]:
    """``fn`` (from :func:`alignment_fn`) on a shard's params and state; numpy float32 arrays."""
    feedback, gradient = fn(params, state, jnp.asarray(x, jnp.float32), jnp.asarray(y))
    return np.asarray(feedback, np.float32), np.asarray(gradient, np.float32)
