"""Backprop: errors reach hidden layers through the forward weights W themselves."""

from __future__ import annotations

import optax

from simlab.rules.rules import LearningRule, register_rule, weight_optimizer
from simlab.specs.rules import Adam, SGDMomentum


@register_rule("sgdm", SGDMomentum, credit_mechanism="backprop")
def sgdm(hyper: SGDMomentum) -> LearningRule:
    """Backprop with SGD and (Nesterov) momentum (the credit of a defined rule's "backprop")."""
    return LearningRule("sgdm", "backprop", weight_optimizer(hyper))


@register_rule("adam", Adam, credit_mechanism="backprop", optimizer="adam")
def adam(hyper: Adam) -> LearningRule:
    """Backprop with Adam."""
    return LearningRule("adam", "backprop", optax.adam(hyper.learning_rate, hyper.b1, hyper.b2, hyper.eps))
