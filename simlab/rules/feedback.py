"""Feedback rules: errors reach hidden layers through a separate kernel B, and the rules differ
in how B changes (fixed, a local loss, W's own updates, W's signs). B lives in Haiku state and
the error path through it is :mod:`simlab.ops.feedback`; here are the updates of B and the
rules built from them."""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from simlab.ops.feedback import alignment_primitives
from simlab.ops.linear import LinearOp
from simlab.rules.rules import FeedbackUpdate, LearningRule, autodiff_estimate, register_rule, weight_optimizer
from simlab.specs.rules import (
    FeedbackAlignment,
    InformationAlignment,
    KolenPollack,
    SignSymmetry,
    SymmetricAlignment,
    WeightMirror,
)


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
    the signs of the W used on step t+1. Step 0 runs with the B the trainer starts from: the
    initial B_0, or sign(W_0) * |B_0| under :func:`sign_concordant_estimate`.
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


def sign_concordant_estimate(loss, params, state, inputs, targets, **kwargs):
    """The gradient with B = sign(W) * |B| on this forward pass (BioTorch's frSF, every pass).

    On the first step this turns the random initial B_0 into sign(W_0) * |B_0|; afterwards B
    already is sign(W_t) * |B_0| (:func:`sign_symmetry_update`) and this changes no bit.
    """
    signed = {
        site: {**value, "feedback": jnp.sign(params[site]["w"]).astype(value["feedback"].dtype) * jnp.abs(value["feedback"])}
        if "feedback" in value else value
        for site, value in state.items()
    }
    return autodiff_estimate(loss, params, signed, inputs, targets, **kwargs)


def _kernel_mask(params):
    """True on layer kernels ("w"), False on biases and anything else."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(path) and getattr(path[-1], "key", None) == "w", params
    )


def feedback_optimizer(hyper) -> optax.GradientTransformation:
    """B's own optimizer, for rules that train B on a local loss: SGD at the rule's
    ``feedback_learning_rate`` with its ``feedback_momentum``."""
    return optax.sgd(hyper.feedback_learning_rate, momentum=hyper.feedback_momentum or None, nesterov=hyper.nesterov)


# --------------------------------------------------------------------------- the rules


@register_rule("feedback_alignment", FeedbackAlignment)
def feedback_alignment(hyper: FeedbackAlignment) -> LearningRule:
    """Fixed random B (Lillicrap et al. 2016)."""
    return LearningRule("feedback_alignment", "feedback", weight_optimizer(hyper))


@register_rule("information_alignment", InformationAlignment)
def information_alignment(hyper: InformationAlignment) -> LearningRule:
    """B trained by alpha*amp + beta*null + gamma*decay (Kunin et al. 2020)."""
    weights = {"amp": hyper.alpha, "null": hyper.beta, "decay": hyper.gamma}
    update = local_feedback_update(weights, feedback_optimizer(hyper))
    return LearningRule("information_alignment", "feedback", weight_optimizer(hyper), update)


@register_rule("kolen_pollack", KolenPollack)
def kolen_pollack(hyper: KolenPollack) -> LearningRule:
    """W and B decay and share W's task gradient, each through its own optimizer like W's."""
    optimizer = optax.chain(optax.add_decayed_weights(hyper.weight_decay, mask=_kernel_mask), weight_optimizer(hyper))
    update = kolen_pollack_update(hyper.weight_decay, weight_optimizer(hyper))
    return LearningRule("kolen_pollack", "feedback", optimizer, update)


@register_rule("weight_mirror", WeightMirror)
def weight_mirror(hyper: WeightMirror) -> LearningRule:
    """B trained by alpha*decay + beta*amp on Gaussian noise inputs (Akrout et al. 2019)."""
    weights = {"decay": hyper.alpha, "amp": hyper.beta}
    update = local_feedback_update(weights, feedback_optimizer(hyper), hyper.noise_std)
    return LearningRule("weight_mirror", "feedback", weight_optimizer(hyper), update)


@register_rule("symmetric_alignment", SymmetricAlignment)
def symmetric_alignment(hyper: SymmetricAlignment) -> LearningRule:
    """B trained by alpha*decay + beta*self on the data (Kunin et al. 2020)."""
    weights = {"decay": hyper.alpha, "self": hyper.beta}
    update = local_feedback_update(weights, feedback_optimizer(hyper))
    return LearningRule("symmetric_alignment", "feedback", weight_optimizer(hyper), update)


@register_rule("sign_symmetry", SignSymmetry)
def sign_symmetry(hyper: SignSymmetry) -> LearningRule:
    """B = sign(W) * |B_0| (Liao et al. 2016; Moskovitz et al. 2018); from the first step on
    with ``first_step: signs``, from the second with ``random``."""
    estimate = sign_concordant_estimate if hyper.first_step == "signs" else autodiff_estimate
    return LearningRule("sign_symmetry", "feedback", weight_optimizer(hyper), sign_symmetry_update(), estimate)
