"""Learning rules: a credit-assignment mechanism paired with an optimizer.

A :class:`LearningRule` is a small optax-style object: ``credit`` says how errors travel back
("backprop" through W, or "feedback" through a separate kernel B), ``optimizer`` turns the
resulting gradients into parameter updates, and ``feedback_update`` (``None`` when B is
fixed) says how B changes. Equations: ../docs or reference/nayebi2020.md.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from simlab.ops.feedback import alignment_primitives
from simlab.rules.estimates import direct_feedback_estimate, hebbian_estimate, node_perturbation_estimate
from simlab.specs.rules import (
    RULE_HYPERPARAMETERS,
    Adam,
    DirectFeedbackAlignment,
    FeedbackAlignment,
    Hebbian,
    InformationAlignment,
    KolenPollack,
    NodePerturbation,
    SGDMomentum,
    SignSymmetry,
    SymmetricAlignment,
    WeightMirror,
)
from simlab.ops.linear import LinearOp


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


def local_feedback_update(
    weights: Mapping[str, float],
    optimizer: optax.GradientTransformation,
    noise_std: float | None = None,
) -> FeedbackUpdate:
    """B follows the gradient of its local loss with its own optimizer.

    ``noise_std`` set: the loss sees Gaussian noise x ~ N(0, noise_std^2), of the shape of each
    site's input batch and drawn from the step's ``key``, instead of the data (weight mirror).
    """
    loss = local_feedback_loss(weights)

    def update(state, params, inputs, ops, opt_state, *, key=None, **_):
        if noise_std is not None:
            if key is None:
                raise ValueError("a noise-driven feedback update needs the step's random key")
            inputs = noise_inputs(key, inputs, ops, noise_std)
        grads = jax.grad(loss)(state, params, inputs, ops)
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    return FeedbackUpdate(init=optimizer.init, update=update)


def noise_inputs(key, inputs, ops, noise_std: float):
    """Gaussian noise N(0, noise_std^2) in place of each site's input batch (one key per site)."""
    keys = jax.random.split(key, len(ops))
    return {
        site: noise_std * jax.random.normal(k, jnp.shape(inputs[site]), jnp.result_type(inputs[site]))
        for k, site in zip(keys, ops)
    }


def _feedback_kernels(state) -> dict:
    return {site: {"feedback": value["feedback"]} for site, value in state.items() if "feedback" in value}


def _with_feedback(state, kernels) -> dict:
    return {site: ({**value, **kernels[site]} if site in kernels else value) for site, value in state.items()}


def kolen_pollack_update(weight_decay: float, optimizer: optax.GradientTransformation) -> FeedbackUpdate:
    """Kolen-Pollack (Kolen & Pollack 1994; Akrout et al. 2019): B gets W's update, plus decay.

    The form implemented, with g_t = dL/dW_t (the ordinary local x^T dy of step t, taken from
    the trainer's ``grads``, W_t the kernel before the step) and wd = ``weight_decay``:
        W_{t+1} = W_t + SGD_W(g_t + wd W_t)     (the rule's optimizer: decay, then SGD)
        B_{t+1} = B_t + SGD_B(g_t + wd B_t)     (this update)
    where SGD_W and SGD_B are the same Nesterov-momentum SGD, each with its own momentum
    buffer. SGD being linear in its gradients, B - W follows SGD on the gradient wd (B - W)
    alone (the task term cancels), so B - W decays geometrically to 0 and B converges to W.
    Without momentum this is B_{t+1} = (1 - lr wd) B_t - lr g_t. B never gets dL/dB.
    """

    def init(state):
        return optimizer.init(_feedback_kernels(state))

    def update(state, params, inputs, ops, opt_state, *, grads=None, **_):
        if grads is None:
            raise ValueError("Kolen-Pollack's feedback update needs the task-loss grads of W")
        kernels = _feedback_kernels(state)
        feedback_grads = {
            site: {"feedback": grads[site]["w"] + weight_decay * value["feedback"]} for site, value in kernels.items()
        }
        updates, opt_state = optimizer.update(feedback_grads, opt_state, kernels)
        return _with_feedback(state, optax.apply_updates(kernels, updates)), opt_state

    return FeedbackUpdate(init=init, update=update)


def sign_symmetry_update() -> FeedbackUpdate:
    """Sign symmetry with fixed random magnitudes: B_{t+1} = sign(W_{t+1}) * |B_0|.

    ``init`` keeps |B_0| (the network's random initial feedback kernels) as the update's state;
    W_{t+1} = W_t + the optimizer's update of this step, so the kernel used on step t+1 has
    the signs of the W used on step t+1. (Step 0 runs with the initial B_0.)
    """

    def init(state):
        return {site: jnp.abs(value["feedback"]) for site, value in _feedback_kernels(state).items()}

    def update(state, params, inputs, ops, opt_state, *, updates=None, **_):
        kernels = {}
        for site, magnitude in opt_state.items():
            w = params[site]["w"] if updates is None else params[site]["w"] + updates[site]["w"]
            kernels[site] = {"feedback": jnp.sign(w).astype(magnitude.dtype) * magnitude}
        return _with_feedback(state, kernels), opt_state

    return FeedbackUpdate(init=init, update=update)


def _kernel_mask(params):
    """True on layer kernels ("w"), False on biases and anything else."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(path) and getattr(path[-1], "key", None) == "w", params
    )


def _readout_labels(params):
    """"readout" on the readout's params (the last site of every plan), "hebbian" elsewhere."""
    return {site: jax.tree.map(lambda _: "readout" if site == "readout" else "hebbian", value)
            for site, value in params.items()}


def _sgd(hyper: SGDMomentum, learning_rate: float | None = None) -> optax.GradientTransformation:
    """The optimizer of W: SGD with (Nesterov) momentum, or Adam where a protocol-defined rule
    asks for it (``hyper.optimizer``), at ``learning_rate`` (default: the rule's)."""
    learning_rate = hyper.learning_rate if learning_rate is None else learning_rate
    if getattr(hyper, "optimizer", None) == "adam":
        return optax.adam(learning_rate, hyper.b1, hyper.b2, hyper.eps)
    return optax.sgd(learning_rate, momentum=hyper.momentum or None, nesterov=hyper.nesterov)


# credit mechanisms that learn from a scalar reward (the change of the loss), not an error vector
REWARD_MODULATED = frozenset({"node_perturbation"})


def rule_factors(name: str, hyper=None) -> dict[str, str]:
    """A rule's factors as subject coordinates: its ``credit_mechanism`` (how errors reach
    hidden layers: "backprop" for sgdm and adam, else the rule's own mechanism) and its
    ``optimizer`` ("adam", "sgd_momentum" or "sgd"). Mechanisms in :data:`REWARD_MODULATED`
    learn from a scalar reward. A protocol-defined rule (``hyper.credit`` set) has the credit
    mechanism and optimizer of its definition."""
    hyper = hyper if hyper is not None else RULE_HYPERPARAMETERS[name]()
    if getattr(hyper, "credit", None) is not None:
        return {"credit_mechanism": hyper.credit, "optimizer": hyper.optimizer}
    if isinstance(hyper, Adam):
        optimizer = "adam"
    else:
        optimizer = "sgd_momentum" if getattr(hyper, "momentum", 0.0) else "sgd"
    return {"credit_mechanism": "backprop" if name in ("sgdm", "adam") else name, "optimizer": optimizer}


def make_rule(name: str, hyper=None) -> LearningRule:
    """The learning rule called ``name`` with hyperparameters ``hyper`` (defaults when None).

    A rule a protocol defines (``learning_rules:``) has its own name and settings of
    :func:`simlab.specs.rules.defined_rule_model`: the built-in rule of its
    ``credit`` ("backprop": sgdm) is built, with its ``optimizer`` for W.
    """
    credit = getattr(hyper, "credit", None)
    if credit is None and name not in RULE_HYPERPARAMETERS:
        raise ValueError(f"unknown learning rule {name!r} (known: {', '.join(sorted(RULE_HYPERPARAMETERS))})")
    hyper = hyper if hyper is not None else RULE_HYPERPARAMETERS[name]()
    rule = _make_rule(name if credit is None else "sgdm" if credit == "backprop" else credit, hyper)
    return rule._replace(name=name)


def _make_rule(name: str, hyper) -> LearningRule:
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
    if name == "kolen_pollack":
        assert isinstance(hyper, KolenPollack)
        sgd = _sgd(hyper)
        optimizer = optax.chain(optax.add_decayed_weights(hyper.weight_decay, mask=_kernel_mask), sgd)
        return LearningRule(name, "feedback", optimizer, kolen_pollack_update(hyper.weight_decay, _sgd(hyper)))
    if name in ("weight_mirror", "symmetric_alignment"):
        assert isinstance(hyper, (WeightMirror, SymmetricAlignment))
        feedback_optimizer = optax.sgd(
            hyper.feedback_learning_rate, momentum=hyper.feedback_momentum or None, nesterov=hyper.nesterov
        )
        if name == "weight_mirror":
            weights, noise_std = {"decay": hyper.alpha, "amp": hyper.beta}, hyper.noise_std
        else:
            weights, noise_std = {"decay": hyper.alpha, "self": hyper.beta}, None
        return LearningRule(name, "feedback", _sgd(hyper), local_feedback_update(weights, feedback_optimizer, noise_std))
    if name == "sign_symmetry":
        assert isinstance(hyper, SignSymmetry)
        return LearningRule(name, "feedback", _sgd(hyper), sign_symmetry_update())
    if name == "direct_feedback_alignment":
        assert isinstance(hyper, DirectFeedbackAlignment)
        return LearningRule(name, "direct_feedback", _sgd(hyper), estimate=direct_feedback_estimate)
    if name == "node_perturbation":
        assert isinstance(hyper, NodePerturbation)
        return LearningRule(name, "backprop", _sgd(hyper), estimate=node_perturbation_estimate(hyper.noise_std))
    if name == "hebbian":
        assert isinstance(hyper, Hebbian)
        optimizer = optax.multi_transform(
            {"readout": _sgd(hyper), "hebbian": _sgd(hyper, hyper.hebbian_learning_rate)}, _readout_labels
        )
        return LearningRule(name, "backprop", optimizer, estimate=hebbian_estimate)
    raise AssertionError(f"rule {name!r} has hyperparameters but no construction")
