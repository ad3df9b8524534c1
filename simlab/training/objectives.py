"""What a subject is trained to do: the loss on a batch, apart from how credit is assigned.

An :class:`Objective` turns a batch of task examples into the network's inputs and targets
(``prepare``; a contrastive objective makes two augmented views here) and scores the
network's outputs (``output_loss``). Learning rules see only these two functions, so a rule
that estimates gradients without backprop (perturbation, Hebbian) works for every objective.

Two objectives exist: :data:`CROSS_ENTROPY` (supervised) and the contrastive one of a task
with ``objective: contrastive`` (:func:`contrastive_objective`: two augmented views, NT-Xent);
:func:`task_objective` picks a task's.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from simlab.specs.subjects import ContrastiveSpec, task_layout
from simlab.training.augment import augmenter


class LinearProbe(NamedTuple):
    """Ridge regression to one-hot labels on ``examples`` train examples (a fixed subsample
    when the split is larger), penalty ``ridge`` x examples on standardized features
    (:mod:`simlab.training.probe`)."""

    examples: int
    ridge: float


class Objective(NamedTuple):
    """``prepare(key, x, y) -> (inputs, targets)``; ``output_loss(outputs, targets) -> scalar``.

    ``family`` is the subject's task family coordinate ("supervised", "self_supervised").
    ``example_losses(outputs, targets) -> [batch]`` is the loss of each example, whose mean is
    ``output_loss``, where the loss decomposes over examples (None where it does not, e.g. a
    contrastive loss couples the examples of a batch). ``probe``: how the subject's health is
    measured: None, the accuracy of its outputs (argmax) on the test split; a
    :class:`LinearProbe`, the accuracy of a linear probe on its frozen representation.
    """

    name: str
    family: str
    prepare: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
    output_loss: Callable[[jax.Array, Any], jax.Array]
    example_losses: Callable[[jax.Array, Any], jax.Array] | None = None
    probe: LinearProbe | None = None

    @property
    def health_metric(self) -> str:
        """The name of the health metric: "test_accuracy" or "probe_accuracy"."""
        return "test_accuracy" if self.probe is None else "probe_accuracy"


def _labelled(key, x, y):
    return x, y


def _example_cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _cross_entropy(logits, y):
    return _example_cross_entropy(logits, y).mean()


CROSS_ENTROPY = Objective("cross_entropy", "supervised", _labelled, _cross_entropy, _example_cross_entropy)


def objective_loss(network, objective: Objective) -> Callable:
    """``loss(params, state, inputs, targets) -> (loss, sites)`` of a network under an objective."""

    def loss(params, state, inputs, targets):
        outputs, sites = network.apply(params, state, inputs)
        return objective.output_loss(outputs, targets), sites

    return loss


def nt_xent(z: jax.Array, temperature: float) -> jax.Array:
    """NT-Xent (Chen et al. 2020) of 2N projections ``z`` [2N, d]: rows i and i + N are the two
    views of one example.

    With s_ij the cosine similarity of rows i and j, the loss of anchor i is
    -log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) ), p its other view; the result is the
    mean over the 2N anchors. A zero row (a ReLU head with zero biases gives one for an
    example that no hidden unit responds to) has similarity 0 to everything and passes no
    gradient: z / |z| would give 0/0, and z / max(|z|, eps) a gradient of 1/eps.
    """
    n = z.shape[0] // 2
    squared = jnp.sum(z * z, axis=1, keepdims=True)
    nonzero = squared > 1e-24
    unit = jnp.where(nonzero, z * jax.lax.rsqrt(jnp.where(nonzero, squared, 1.0)), 0.0)
    logits = unit @ unit.T / temperature
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    positive = (jnp.arange(2 * n) + n) % (2 * n)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(2 * n), positive])


def contrastive_objective(spec: ContrastiveSpec, layout: str) -> Objective:
    """SimCLR's objective for inputs of ``layout`` ("signal" or "image").

    ``prepare`` makes two views of every example (independent augmentations from two halves
    of the step's key), stacked [view 1 of all examples; view 2 of all examples], with the
    labels repeated (unused by the loss); ``output_loss`` is :func:`nt_xent` of the
    projections.
    """
    augment = augmenter(spec.signal_augment, spec.image_augment, layout)
    temperature = spec.temperature

    def prepare(key, x, y):
        first, second = jax.random.split(key)
        return jnp.concatenate([augment(first, x), augment(second, x)]), jnp.concatenate([y, y])

    def loss(outputs, targets):
        return nt_xent(outputs, temperature)

    return Objective(
        "nt_xent", "self_supervised", prepare, loss, probe=LinearProbe(spec.probe_examples, spec.probe_ridge)
    )


def task_objective(task_spec) -> Objective:
    """What a subject of this task is trained on: cross-entropy, or contrastive (SimCLR)."""
    if getattr(task_spec, "objective", "supervised") == "contrastive":
        return contrastive_objective(task_spec.contrastive, task_layout(task_spec))
    return CROSS_ENTROPY
