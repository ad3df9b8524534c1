"""Learning rules: a credit-assignment mechanism paired with an optimizer.

A :class:`LearningRule` is a small optax-style object: ``credit`` says how errors travel back
("backprop" through W, or "feedback" through a separate kernel B), ``optimizer`` turns the
resulting gradients into parameter updates, and ``feedback_update`` (``None`` when B is
fixed) says how B changes. Equations: ../docs or reference/nayebi2020.md.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import optax

from simlab.rules.credit import alignment_primitives
from simlab.rules.hyperparameters import (
    RULE_HYPERPARAMETERS,
    Adam,
    FeedbackAlignment,
    InformationAlignment,
    SGDMomentum,
)
from simlab.subjects.ops import LinearOp


class FeedbackUpdate(NamedTuple):
    """How feedback kernels change, given the layer inputs of the current batch.

    ``update(state, params, inputs, ops, opt_state) -> (state, opt_state)`` where ``state``
    maps site name to ``{"feedback": B}``, ``inputs`` site name to the site's input batch and
    ``ops`` site name to the site's linear op.
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class LearningRule(NamedTuple):
    name: str
    credit: str
    optimizer: optax.GradientTransformation
    feedback_update: FeedbackUpdate | None = None


def local_feedback_loss(weights: Mapping[str, float]) -> Callable:
    """R(B) = sum over sites of sum_k weights[k] * primitive_k (Kunin et al. 2020), trains B only."""
    names = tuple(name for name, weight in weights.items() if weight != 0.0)

    def loss(state, params, inputs, ops: Mapping[str, LinearOp]):
        total = 0.0
        for site, op in ops.items():
            terms = alignment_primitives(op, inputs[site], params[site]["w"], state[site]["feedback"], names)
            total = total + sum(weights[name] * terms[name] for name in names)
        return total

    return loss


def local_feedback_update(weights: Mapping[str, float], optimizer: optax.GradientTransformation) -> FeedbackUpdate:
    """B follows the gradient of its local loss with its own optimizer."""
    loss = local_feedback_loss(weights)

    def update(state, params, inputs, ops, opt_state):
        grads = jax.grad(loss)(state, params, inputs, ops)
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    return FeedbackUpdate(init=optimizer.init, update=update)


def _sgd(hyper: SGDMomentum) -> optax.GradientTransformation:
    return optax.sgd(hyper.learning_rate, momentum=hyper.momentum or None, nesterov=hyper.nesterov)


def make_rule(name: str, hyper=None) -> LearningRule:
    """The learning rule called ``name`` with hyperparameters ``hyper`` (defaults when None)."""
    if name not in RULE_HYPERPARAMETERS:
        raise ValueError(f"unknown learning rule {name!r} (known: {', '.join(sorted(RULE_HYPERPARAMETERS))})")
    hyper = hyper if hyper is not None else RULE_HYPERPARAMETERS[name]()
    if name == "sgdm":
        return LearningRule(name, "backprop", _sgd(hyper))
    if name == "adam":
        assert isinstance(hyper, Adam)
        return LearningRule(name, "backprop", optax.adam(hyper.learning_rate, hyper.b1, hyper.b2, hyper.eps))
    if name == "feedback_alignment":
        assert isinstance(hyper, FeedbackAlignment)
        return LearningRule(name, "feedback", _sgd(hyper))
    if name == "information_alignment":
        assert isinstance(hyper, InformationAlignment)
        feedback_optimizer = optax.sgd(
            hyper.feedback_learning_rate, momentum=hyper.feedback_momentum or None, nesterov=hyper.nesterov
        )
        weights = {"amp": hyper.alpha, "null": hyper.beta, "decay": hyper.gamma}
        return LearningRule(name, "feedback", _sgd(hyper), local_feedback_update(weights, feedback_optimizer))
    raise AssertionError(f"rule {name!r} has hyperparameters but no construction")
