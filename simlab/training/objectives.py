"""What a subject is trained to do: the loss on a batch, apart from how credit is assigned.

An :class:`Objective` turns a batch of task examples into the network's inputs and targets
(``prepare``; a contrastive objective makes two augmented views here) and scores the
network's outputs (``output_loss``). Learning rules see only these two functions, so a rule
that estimates gradients without backprop (perturbation, Hebbian) works for every objective.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import optax


class Objective(NamedTuple):
    """``prepare(key, x, y) -> (inputs, targets)``; ``output_loss(outputs, targets) -> scalar``.

    ``family`` is the subject's task family coordinate ("supervised", "self_supervised").
    ``example_losses(outputs, targets) -> [batch]`` is the loss of each example, whose mean is
    ``output_loss``, where the loss decomposes over examples (None where it does not, e.g. a
    contrastive loss couples the examples of a batch).
    """

    name: str
    family: str
    prepare: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
    output_loss: Callable[[jax.Array, Any], jax.Array]
    example_losses: Callable[[jax.Array, Any], jax.Array] | None = None


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
