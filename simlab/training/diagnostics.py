"""Alignment diagnostics of rules other than backprop, computed post hoc from the snapshot store.

Per subject, session and site (layer), for rules whose credit is "feedback" and rules with
their own gradient estimate (direct feedback alignment, node perturbation, Hebbian):

- ``feedback_angle``: the angle between the feedback kernel B and the forward kernel W (both
  flattened), in degrees; NaN where a site has no B of W's shape (direct feedback's B maps
  the outputs to a layer's units);
- ``gradient_angle``: the angle between the rule's weight gradient (what its estimate gives
  for W on a batch, before the optimizer: its credit path, or for node perturbation one noise
  draw from the fixed key :data:`DIAGNOSTIC_KEY`) and the true backprop gradient of the task
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

from simlab.rules.rules import autodiff_estimate
from simlab.subjects.architectures import Network
from simlab.training.objectives import CROSS_ENTROPY, Objective, objective_loss

DIAGNOSTIC_KEY = 0
"""Seed of the key of the diagnostic batch: the augmentations of a contrastive objective's
``prepare`` and the noise of a noise-driven estimate, the same draw for every session."""


def angle(a: jax.Array, b: jax.Array) -> jax.Array:
    """The angle between two arrays, flattened, in degrees (NaN when either is zero)."""
    a, b = jnp.ravel(a).astype(jnp.float32), jnp.ravel(b).astype(jnp.float32)
    norm_a, norm_b = jnp.linalg.norm(a), jnp.linalg.norm(b)
    u, v = a / norm_a, b / norm_b
    radians = 2.0 * jnp.arctan2(jnp.linalg.norm(u - v), jnp.linalg.norm(u + v))
    valid = (norm_a > 0) & (norm_b > 0)
    return jnp.where(valid, jnp.degrees(radians), jnp.nan)


def feedback_angles(params: dict, state: dict, site_names) -> jax.Array:
    """Angle between B and W of each site, in ``site_names`` order (NaN without such a B): [n_sites]."""
    angles = []
    for name in site_names:
        kernel = state.get(name, {}).get("feedback")
        shaped = kernel is not None and jnp.shape(kernel) == jnp.shape(params[name]["w"])
        angles.append(angle(kernel, params[name]["w"]) if shaped else jnp.float32(jnp.nan))
    return jnp.stack(angles)


def gradient_angles(
    rule_network: Network,
    backprop_network: Network,
    params,
    state,
    x,
    y,
    estimate=autodiff_estimate,
    objective: Objective = CROSS_ENTROPY,
) -> jax.Array:
    """Angle between the rule's gradient of W (``estimate``, on the rule's network) and the
    backprop gradient of W under the subject's ``objective``, per site: [n_sites]."""
    key = jax.random.key(DIAGNOSTIC_KEY)
    inputs, targets = objective.prepare(key, x, y)
    loss = objective_loss(rule_network, objective)
    rule_grads = estimate(loss, params, state, inputs, targets, key=key, network=rule_network, objective=objective)[2]
    true_loss = objective_loss(backprop_network, objective)
    true_grads = jax.grad(lambda p: true_loss(p, {}, inputs, targets)[0])(params)
    return jnp.stack([angle(rule_grads[name]["w"], true_grads[name]["w"]) for name in rule_network.site_names])


def alignment_fn(
    rule_network: Network, backprop_network: Network, estimate=autodiff_estimate, objective: Objective = CROSS_ENTROPY
) -> Callable:
    """A jitted ``f(params, state, x, y) -> (feedback_angle, gradient_angle)`` under the
    subject's ``objective``.

    ``rule_network`` is built with the rule's credit and ``estimate`` is the rule's.
    ``params`` and ``state`` have leading axes [replicate, session] (as in a shard); both
    results are [replicate, session, site], sites in the network's plan order.
    """
    names = rule_network.site_names

    def one(params, state, x, y):
        return (
            feedback_angles(params, state, names),
            gradient_angles(rule_network, backprop_network, params, state, x, y, estimate, objective),
        )

    over_sessions = jax.vmap(one, in_axes=(0, 0, None, None))
    return jax.jit(jax.vmap(over_sessions, in_axes=(0, 0, None, None)))


def alignment_angles(fn: Callable, params, state, x, y) -> tuple[np.ndarray, np.ndarray]:
    """``fn`` (from :func:`alignment_fn`) on a shard's params and state; numpy float32 arrays."""
    feedback, gradient = fn(params, state, jnp.asarray(x, jnp.float32), jnp.asarray(y))
    return np.asarray(feedback, np.float32), np.asarray(gradient, np.float32)
