"""Learning rules: a credit-assignment mechanism paired with an optimizer, one function per rule.

A :class:`LearningRule` is a small optax-style object: ``credit`` says how errors travel back
("backprop" through W, or "feedback" through a separate kernel B), ``optimizer`` turns the
resulting gradients into parameter updates, and ``feedback_update`` (``None`` when B is
fixed) says how B changes. Equations: ../docs or reference/nayebi2020.md.

Each rule is one function ``build(hyper) -> LearningRule`` registered once with
:func:`register_rule` in :data:`simlab.registry.RULES`, together with its hyperparameter
model (the protocol schema of ``training.rules.<rule>``) and its credit mechanism. simlab's own
rules live in :mod:`simlab.rules.backprop`, :mod:`simlab.rules.feedback` and
:mod:`simlab.rules.estimates`; a user's are registered the same way, from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import optax
from pydantic import ValidationError

from simlab.errors import SimlabError
from simlab.registry import RULES
from simlab.specs.rules import RuleHyperparameters, credit_mechanism_rules


class FeedbackUpdate(NamedTuple):
    """How feedback kernels change, given the layer inputs of the current batch.

    ``update(state, params, inputs, ops, opt_state, *, key=None, grads=None, updates=None)
    -> (state, opt_state)`` where ``state`` maps site name to ``{"feedback": B}``, ``inputs``
    site name to the site's input batch and ``ops`` site name to the site's linear op. The
    trainer also passes, by keyword, a random ``key`` of the step (weight mirror's noise), the
    task-loss ``grads`` of the params (Kolen-Pollack) and the optimizer's ``updates`` of the
    params this step (sign symmetry); updates that need none of them ignore them.
    ``params`` are those *before* this step's update.
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


def autodiff_estimate(loss, params, state, inputs, targets, *, key=None, **_):
    """The gradient of ``loss`` by automatic differentiation through the network's credit path
    (true backprop, or errors through B for feedback credit). Returns ``(loss, sites, grads)``."""
    (value, sites), grads = jax.value_and_grad(loss, has_aux=True)(params, state, inputs, targets)
    return value, sites, grads


class LearningRule(NamedTuple):
    """``estimate(loss, params, state, inputs, targets, *, key, network, objective) -> (loss,
    sites, grads)`` says what the optimizer is given in place of the gradient; ``loss(params,
    state, inputs, targets) -> (loss, sites)`` is the network under its objective
    (:func:`simlab.training.objectives.objective_loss`), and ``network`` and ``objective``
    themselves are passed by keyword. Rules that do not backpropagate (direct feedback,
    perturbation, Hebbian: :mod:`simlab.rules.estimates`) replace the default
    :func:`autodiff_estimate`. ``credit`` is the network's own credit path
    (:class:`simlab.subjects.architectures.Network`): "backprop" (a plain network), "feedback"
    or "direct_feedback".
    """

    name: str
    credit: str
    optimizer: optax.GradientTransformation
    feedback_update: FeedbackUpdate | None = None
    estimate: Callable[..., tuple[Any, Any, Any]] = autodiff_estimate


def weight_optimizer(hyper, learning_rate: float | None = None) -> optax.GradientTransformation:
    """The optimizer of W: SGD with (Nesterov) momentum, or Adam where a protocol-defined rule
    asks for it (``hyper.optimizer``), at ``learning_rate`` (default: the rule's). A rule whose
    credit a protocol may pair with another optimizer takes W's optimizer from here."""
    learning_rate = hyper.learning_rate if learning_rate is None else learning_rate
    if getattr(hyper, "optimizer", None) == "adam":
        return optax.adam(learning_rate, hyper.b1, hyper.b2, hyper.eps)
    return optax.sgd(learning_rate, momentum=hyper.momentum or None, nesterov=hyper.nesterov)


# --------------------------------------------------------------------------- the registry of rules


@dataclass(frozen=True)
class RuleEntry:
    """A registered rule: ``build(hyper) -> LearningRule`` with ``hyper`` an instance of
    ``hyperparameters``. ``credit_mechanism`` and ``optimizer`` are the subjects' coordinates
    of those names (how errors reach hidden layers; what moves W; ``optimizer`` None: "sgd" or
    "sgd_momentum" by the hyperparameters' momentum). ``reward_modulated`` rules learn from a
    scalar reward (the change of the loss), not an error vector, so a supervised task is
    reward-based for them."""

    name: str
    build: Callable[[Any], LearningRule]
    hyperparameters: type[RuleHyperparameters]
    credit_mechanism: str
    optimizer: str | None = None
    reward_modulated: bool = False


def register_rule(
    name: str,
    hyperparameters: type[RuleHyperparameters],
    *,
    credit_mechanism: str | None = None,
    optimizer: str | None = None,
    reward_modulated: bool = False,
    replace: bool = False,
) -> Callable[[Callable[[Any], LearningRule]], Callable[[Any], LearningRule]]:
    """Register the decorated ``build(hyper) -> LearningRule`` as learning rule ``name``.

    A rule whose hyperparameters extend :class:`simlab.specs.rules.SGDMomentum` is also a
    credit mechanism that a protocol's ``learning_rules:`` may pair with another optimizer
    (the first such rule of its mechanism, see
    :func:`simlab.specs.rules.credit_mechanism_rules`); its build then takes W's optimizer
    from :func:`weight_optimizer`.

    Parameters
    ----------
    name : str
        The rule's name in protocols (``cohort.learning_rule``, ``training.rules``).
    hyperparameters : type of RuleHyperparameters
        The pydantic model of its settings, every field with a default.
    credit_mechanism : str, optional
        Its ``credit_mechanism`` coordinate (default ``name``; "backprop" for optimizers).
    optimizer : str, optional
        Its ``optimizer`` coordinate (default: read from the settings' momentum).
    reward_modulated : bool
        Whether it learns from a scalar reward rather than an error vector.
    replace : bool
        Replace a rule of that name instead of refusing it.

    Returns
    -------
    callable
        A decorator that registers ``build`` and returns it unchanged.

    Examples
    --------
    >>> @register_rule("rmsprop", RMSProp, credit_mechanism="backprop", optimizer="rmsprop")  # doctest: +SKIP
    ... def rmsprop(hyper: RMSProp) -> LearningRule:
    ...     return LearningRule("rmsprop", "backprop", optax.rmsprop(hyper.learning_rate))
    """
    if not (isinstance(hyperparameters, type) and issubclass(hyperparameters, RuleHyperparameters)):
        raise SimlabError(
            f"learning rule {name!r}: hyperparameters must be a RuleHyperparameters model, got {hyperparameters!r}"
        )
    try:
        hyperparameters()
    except ValidationError as exc:
        message = f"learning rule {name!r}: every hyperparameter needs a valid default ({exc.error_count()} lack one)"
        raise SimlabError(message) from None

    def register(build: Callable[[Any], LearningRule]) -> Callable[[Any], LearningRule]:
        entry = RuleEntry(name, build, hyperparameters, credit_mechanism or name, optimizer, reward_modulated)
        RULES.register(name, entry, replace=replace)
        return build

    return register


def rule_entry(name: str, hyper=None) -> RuleEntry:
    """The entry that builds rule ``name``: its own, or for a rule a protocol defines
    (``learning_rules:``, ``hyper.credit`` set) the entry of its credit mechanism."""
    credit = getattr(hyper, "credit", None)
    if credit is not None:
        return RULES[credit_mechanism_rules()[credit]]
    if name not in RULES:
        raise ValueError(f"unknown learning rule {name!r} (known: {', '.join(sorted(RULES))})")
    return RULES[name]


def make_rule(name: str, hyper=None) -> LearningRule:
    """The learning rule called ``name`` with hyperparameters ``hyper`` (defaults when None).

    A rule a protocol defines (``learning_rules:``) has its own name and settings of
    :func:`simlab.specs.rules.defined_rule_model`: the registered rule of its ``credit``
    ("backprop": sgdm) is built, with its ``optimizer`` for W.
    """
    entry = rule_entry(name, hyper)
    hyper = entry.hyperparameters() if hyper is None else hyper
    if not isinstance(hyper, entry.hyperparameters):
        raise TypeError(f"learning rule {name!r} takes {entry.hyperparameters.__name__}, got {type(hyper).__name__}")
    return entry.build(hyper)._replace(name=name)


def rule_factors(name: str, hyper=None) -> dict[str, str]:
    """A rule's factors as subject coordinates: its ``credit_mechanism`` (how errors reach
    hidden layers: "backprop" for sgdm and adam) and its ``optimizer`` ("adam", "sgd_momentum"
    or "sgd" for simlab's own), as registered (:class:`RuleEntry`). A protocol-defined rule
    (``hyper.credit`` set) has the credit mechanism and optimizer of its definition."""
    entry = rule_entry(name, hyper)
    hyper = hyper if hyper is not None else entry.hyperparameters()
    if getattr(hyper, "credit", None) is not None:
        return {"credit_mechanism": hyper.credit, "optimizer": hyper.optimizer}
    optimizer = entry.optimizer or ("sgd_momentum" if getattr(hyper, "momentum", 0.0) else "sgd")
    return {"credit_mechanism": entry.credit_mechanism, "optimizer": optimizer}


def learns_from_reward(name: str, hyper=None) -> bool:
    """Whether rule ``name`` (a defined rule: its credit mechanism) learns from a scalar reward."""
    return rule_entry(name, hyper).reward_modulated
