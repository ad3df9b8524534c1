"""Rules that do not backpropagate, and what they give the optimizer in place of the gradient.

Each is a :class:`simlab.rules.rules.LearningRule` ``estimate``: ``estimate(loss, params,
state, inputs, targets, *, key, network, objective) -> (loss value, sites, grads)``, with
``grads`` shaped like ``params`` and *descended* by the rule's optimizer. They see the network
(:class:`simlab.subjects.architectures.Network`) and the objective
(:class:`simlab.training.objectives.Objective`), never a backward pass through hidden layers,
so they work for any objective. Notation, per site (layer) l with input x_l [N, ...], kernel
W_l, pre-activation a_l = op_l(x_l, W_l) + b_l and output h_l = f(a_l); e = dL/d(outputs),
the error at the network's outputs (logits) from the objective's ``output_loss``.

- direct feedback alignment (Nøkland 2016): delta_l = (e B_l) * f'(a_l) for hidden layers,
  with B_l a fixed random [outputs, units] matrix in Haiku state (``direct_feedback``);
  g_W = x_l^T delta_l, g_b = sum_n delta_l; the readout gets its true gradient.
- node perturbation (Fiete & Seung 2006; Werfel et al. 2005): see
  :func:`node_perturbation_estimate`.
- Hebbian (Oja 1982; Oja's subspace rule 1989): see :func:`hebbian_estimate`.

Generic in the site's op (dense or convolution): x_l^T c is the vjp of W -> op(x_l, W) with
cotangent c, so conv layers count positions as samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from simlab.rules.rules import LearningRule, register_rule, weight_optimizer
from simlab.specs.rules import DirectFeedbackAlignment, Hebbian, NodePerturbation


def site_pullback(op, x, site_params, cotangent):
    """(g_W, g_b) = the vjp of (W, b) -> op(x, W) + b with ``cotangent`` (x^T c, sum c for dense)."""
    _, pullback = jax.vjp(lambda p: op(x, p["w"]) + p["b"], site_params)
    return pullback(cotangent)[0]


def _detached_forward(network, params, state, inputs):
    """The network with every site's input cut from the graph (zero probes): returns the
    outputs, the sites, and the pullback of ``(outputs, {site: output})`` cotangents to the
    params, in which each site's params receive only what reaches that site's own output."""
    shapes = network.site_shapes(inputs.shape[1:])
    probes = {name: jnp.zeros((inputs.shape[0], *shapes[name][0]), inputs.dtype) for name in network.site_names}

    def forward(p):
        outputs, sites = network.apply(p, state, inputs, probes)
        return (outputs, {name: site.output for name, site in sites.items()}), sites

    (outputs, site_outputs), pullback, sites = jax.vjp(forward, params, has_aux=True)
    return outputs, site_outputs, sites, lambda cotangents: pullback(cotangents)[0]


def _output_error(objective, outputs, targets):
    """L and e = dL/d(outputs) of the objective's loss of the outputs."""
    return jax.value_and_grad(objective.output_loss)(outputs, targets)


def direct_feedback_estimate(loss, params, state, inputs, targets, *, network, objective, **_):
    """Direct feedback alignment: the output error e reaches hidden layer l as e B_l."""
    outputs, site_outputs, sites, pullback = _detached_forward(network, params, state, inputs)
    value, error = _output_error(objective, outputs, targets)
    cotangents = {
        name: error @ state[name]["direct_feedback"] if "direct_feedback" in state.get(name, {}) else jnp.zeros_like(y)
        for name, y in site_outputs.items()
    }
    return value, sites, pullback((error, cotangents))


def perturbation_noise(key, shapes, noise_std: float, dtype=jnp.float32) -> dict:
    """xi_l ~ N(0, noise_std^2) of each site's pre-activation shape, one key per site (split
    in the order of ``shapes``, the network's site order)."""
    keys = jax.random.split(key, len(shapes))
    return {name: noise_std * jax.random.normal(k, shape, dtype) for k, (name, shape) in zip(keys, shapes.items())}


def node_perturbation_estimate(noise_std: float, samples: int = 1, perturb: str = "all"):
    """Node perturbation: a clean forward pass, noisy ones, and scalar differences of losses.

    With xi_l ~ N(0, sigma^2) added to site l's pre-activation (sigma = ``noise_std``, drawn
    from the step's key by :func:`perturbation_noise`), and L_n, L~_n the clean and noisy
    losses of example n:

        g_W_l = 1/N sum_n (L~_n - L_n) / sigma^2 * x_{l,n}^T xi_{l,n}
        g_b_l = 1/N sum_n (L~_n - L_n) / sigma^2 * xi_{l,n}

    with x_l the clean pass's input (the eligibility trace of each synapse). Since L~_n - L_n
    = sum_l dL_n/da_{l,n} . xi_{l,n} + O(sigma^2) and E[xi xi^T] = sigma^2 I, E[g] is the true
    gradient of L = mean_n L_n up to O(sigma^2). Where the objective has no per-example
    losses (``example_losses`` None), one reward serves the whole batch:
    g_W_l = (L~ - L) / sigma^2 * sum_n x_{l,n}^T xi_{l,n}, also unbiased to first order.
    The loss difference is the (negative) reward; descending g ascends the reward.

    The estimate's variance grows with the number of units perturbed together (every other
    unit's noise adds to the loss difference of site l), hence ``perturb``:

    - "all": every site perturbed at once, one noisy pass (Fiete & Seung 2006);
    - "each": one noisy pass per site with only that site perturbed (the same xi), each site
      learning from its own loss difference: independent per-layer estimates, L noisy passes;
    - "one": one site drawn uniformly per step (from ``fold_in(key, 1)``) is perturbed and
      learns, its estimate times the number of sites L so that E[g] is still the gradient;
      the other sites get 0.

    ``samples`` K > 1 averages K such estimates, the k-th from key ``split(key, K)[k]``
    (variance / K, K times the noisy passes); K = 1 uses the step's key itself.
    """

    def estimate(loss, params, state, inputs, targets, *, key=None, network, objective, **_):
        if key is None:
            raise ValueError("node perturbation needs the step's random key")
        outputs, sites = network.apply(params, state, inputs)
        shapes = {name: site.output.shape for name, site in sites.items()}
        value = objective.output_loss(outputs, targets)
        n = outputs.shape[0]
        per_example = objective.example_losses is not None
        clean = objective.example_losses(outputs, targets) if per_example else value

        def reward_weights(noise):
            """(L~_n - L_n) / (N sigma^2) per example, from a noisy pass with ``noise``."""
            noisy, _ = network.apply(params, state, inputs, perturbations=noise)
            if per_example:
                difference = (objective.example_losses(noisy, targets) - clean) / n
            else:
                difference = jnp.full((n,), objective.output_loss(noisy, targets) - value)
            return difference / noise_std**2

        def site_estimate(name, weight, xi, scale=1.0):
            cotangent = scale * weight.reshape((n,) + (1,) * (xi.ndim - 1)) * xi
            return site_pullback(network.ops[name], sites[name].input, params[name], cotangent)

        def one_sample(key):
            noise = perturbation_noise(key, shapes, noise_std, outputs.dtype)
            if perturb == "all":
                weight = reward_weights(noise)
                return {name: site_estimate(name, weight, noise[name]) for name in sites}
            if perturb == "each":
                alone = lambda name: {o: xi if o == name else jnp.zeros_like(xi) for o, xi in noise.items()}  # noqa: E731
                return {name: site_estimate(name, reward_weights(alone(name)), noise[name]) for name in sites}
            chosen = jax.random.randint(jax.random.fold_in(key, 1), (), 0, len(shapes))
            masked = {name: jnp.where(chosen == i, xi, 0.0) for i, (name, xi) in enumerate(noise.items())}
            weight = reward_weights(masked)
            return {name: site_estimate(name, weight, masked[name], len(shapes)) for name in sites}

        if samples == 1:
            return value, sites, one_sample(key)
        estimates = jax.vmap(one_sample)(jax.random.split(key, samples))
        return value, sites, jax.tree.map(lambda g: jnp.mean(g, axis=0), estimates)

    return estimate


def oja_gradient(op, x, kernel):
    """Minus Oja's subspace rule, as a gradient to descend: (W Y^T Y - X^T Y) / N.

    Y = op(x, W) is the layer's linear response (bias left out) and N the number of samples:
    examples for a dense layer, examples x positions for a convolution (X^T Y, the vjp of
    W -> op(x, W) with cotangent Y, sums over both). SGD with learning rate eta then makes
    W <- W + eta (X^T Y - W Y^T Y) / N, whose stable fixed points have orthonormal columns
    spanning the top principal subspace of the inputs (Oja 1989).
    """
    y, pullback = jax.vjp(lambda w: op(x, w), kernel)
    flat = y.reshape(-1, y.shape[-1])
    hebbian = pullback(y)[0]
    decay = (kernel.reshape(-1, kernel.shape[-1]) @ (flat.T @ flat)).reshape(kernel.shape)
    return (decay - hebbian) / flat.shape[0]


def input_power(op, x, kernel):
    """E_n ||x_n||^2: the mean squared norm of the samples a site's kernel sees (an example's
    input for a dense layer, a patch for a convolution: op(x * x, ones) sums each patch)."""
    return jnp.mean(op(x * x, jnp.ones((*kernel.shape[:-1], 1), x.dtype)))


def hebbian_estimate(normalization: str = "none"):
    """Hidden layers: Oja's subspace rule (:func:`oja_gradient`, unsupervised; biases get 0).
    The readout: the true gradient of the objective, its input detached (a supervised readout
    on the Hebbian features).

    ``normalization`` "input_power" divides each hidden layer's Oja step by
    :func:`input_power` of its batch (the normalized-rate form of Hebbian/LMS rules): SGD at
    rate eta on Oja's rule is stable only for eta E||x||^2 below about 1, and the inputs of
    deep conv layers (many channels x patch positions) have E||x||^2 of hundreds or more and
    growing, so an unnormalized rate that suits the first layer diverges in the fifth.
    Normalized, eta is a dimensionless step that means the same on every layer.
    """

    def estimate(loss, params, state, inputs, targets, *, network, objective, **_):
        outputs, site_outputs, sites, pullback = _detached_forward(network, params, state, inputs)
        value, error = _output_error(objective, outputs, targets)
        grads = pullback((error, jax.tree.map(jnp.zeros_like, site_outputs)))
        readout = network.site_names[-1]
        for name, site in sites.items():
            if name != readout:
                op, kernel = network.ops[name], params[name]["w"]
                oja = oja_gradient(op, site.input, kernel)
                if normalization == "input_power":
                    oja = oja / (input_power(op, site.input, kernel) + 1e-12)
                grads[name] = {"w": oja, "b": jnp.zeros_like(params[name]["b"])}
        return value, sites, grads

    return estimate


# --------------------------------------------------------------------------- the rules


@register_rule("direct_feedback_alignment", DirectFeedbackAlignment)
def direct_feedback_alignment(hyper: DirectFeedbackAlignment) -> LearningRule:
    """The output error to every hidden layer through a fixed random matrix (MLPs only)."""
    optimizer = weight_optimizer(hyper)
    return LearningRule("direct_feedback_alignment", "direct_feedback", optimizer, estimate=direct_feedback_estimate)


@register_rule("node_perturbation", NodePerturbation, reward_modulated=True)
def node_perturbation(hyper: NodePerturbation) -> LearningRule:
    """The gradient estimated from the loss change under noise: a scalar reward per example."""
    estimate = node_perturbation_estimate(hyper.noise_std, hyper.samples, hyper.perturb)
    return LearningRule("node_perturbation", "backprop", weight_optimizer(hyper), estimate=estimate)


def _readout_labels(params):
    """"readout" on the readout's params (the last site of every plan), "hebbian" elsewhere."""
    return {site: jax.tree.map(lambda _: "readout" if site == "readout" else "hebbian", value)
            for site, value in params.items()}


@register_rule("hebbian", Hebbian)
def hebbian(hyper: Hebbian) -> LearningRule:
    """Oja's subspace rule in hidden layers at ``hebbian_learning_rate``, a supervised readout."""
    transforms = {"readout": weight_optimizer(hyper), "hebbian": weight_optimizer(hyper, hyper.hebbian_learning_rate)}
    optimizer = optax.multi_transform(transforms, _readout_labels)
    estimate = hebbian_estimate(hyper.normalization)
    return LearningRule("hebbian", "backprop", optimizer, estimate=estimate)
