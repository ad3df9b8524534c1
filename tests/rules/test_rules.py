"""Full training steps of every learning rule against a float64 numpy re-implementation.

The numpy side re-derives everything: the two-layer MLP's forward pass, backprop or
feedback-alignment errors, optax's SGD (trace: t <- g + m t; update g + m t with Nesterov,
t without), Adam with bias correction, and the information-alignment local loss of B.
Only the batch indices are reproduced with JAX (they are inputs, not the thing under test).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.specs.rules import Adam, FeedbackAlignment, InformationAlignment, SGDMomentum
from simlab.rules.feedback import local_feedback_loss
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.ops.linear import dense
from simlab.specs.subjects import MLPSpec
from simlab.training.population import make_trainer

N_TRAIN, LENGTH, N_CLASSES, HIDDEN, BATCH = 16, 5, 3, 4, 6
SITES = ("dense_0", "readout")


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_TRAIN, LENGTH, 1)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, N_TRAIN).astype(np.int32)
    return x, y


def _relu(z):
    return np.maximum(z, 0.0)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_forward_backward(params, feedback, x, y):
    """Loss, gradients and site inputs of the MLP; ``feedback`` None means backprop."""
    n = x.shape[0]
    x = x.reshape(n, -1)
    w0, b0, w1, b1 = params["dense_0"]["w"], params["dense_0"]["b"], params["readout"]["w"], params["readout"]["b"]
    z0 = x @ w0 + b0
    h = _relu(z0)
    logits = h @ w1 + b1
    p = _softmax(logits)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    e = (p - np.eye(N_CLASSES)[y]) / n
    back = w1 if feedback is None else feedback["readout"]["feedback"]
    dz0 = (e @ back.T) * (z0 > 0)
    grads = {"dense_0": {"w": x.T @ dz0, "b": dz0.sum(0)}, "readout": {"w": h.T @ e, "b": e.sum(0)}}
    return loss, grads, {"dense_0": x, "readout": h}


def tree(fn, *trees):
    return {site: {k: fn(*(t[site][k] for t in trees)) for k in trees[0][site]} for site in trees[0]}


class NumpySGD:
    """optax.sgd semantics, written out: trace <- g + m trace; nesterov: g + m trace."""

    def __init__(self, lr, momentum, nesterov):
        self.lr, self.m, self.nesterov, self.trace = lr, momentum, nesterov, None

    def step(self, p, g):
        if not self.m:
            return p - self.lr * g
        self.trace = g if self.trace is None else g + self.m * self.trace
        direction = g + self.m * self.trace if self.nesterov else self.trace
        return p - self.lr * direction


class NumpyAdam:
    def __init__(self, lr, b1, b2, eps):
        self.lr, self.b1, self.b2, self.eps, self.t, self.mu, self.nu = lr, b1, b2, eps, 0, 0.0, 0.0

    def step(self, p, g):
        self.t += 1
        self.mu = self.b1 * self.mu + (1 - self.b1) * g
        self.nu = self.b2 * self.nu + (1 - self.b2) * g**2
        mu_hat = self.mu / (1 - self.b1**self.t)
        nu_hat = self.nu / (1 - self.b2**self.t)
        return p - self.lr * mu_hat / (np.sqrt(nu_hat) + self.eps)


def np_ia_grad(x, W, B, alpha, beta, gamma):
    """d/dB of alpha*amp + beta*null + gamma*decay for a dense layer (derived in test_credit)."""
    n = x.shape[0]
    f = x @ W
    r = f @ B.T
    return alpha * (-x.T @ f / n) + beta * (2.0 / n) * (r.T @ f) + gamma * 2.0 * B


def _optimizer(hyper):
    if isinstance(hyper, Adam):
        return lambda: NumpyAdam(hyper.learning_rate, hyper.b1, hyper.b2, hyper.eps)
    return lambda: NumpySGD(hyper.learning_rate, hyper.momentum, hyper.nesterov)


def _train(rule, steps, key, hidden=(HIDDEN,)):
    x, y = _data()
    credit = rule.credit
    network = Network(MLPSpec(hidden=list(hidden)), N_CLASSES, credit)
    train = make_trainer(network, rule, BATCH, steps, list(range(steps + 1)))
    args = (key, jnp.asarray(x), jnp.asarray(y))
    # XLA's backend optimizations change no semantics but double the compile time here
    compiled = jax.jit(train).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
    (params, state), losses = compiled(*args)
    return network, jax.tree.map(lambda a: np.asarray(a, np.float64), (params, state)), np.asarray(losses)


def _batches(key, steps):
    _, data_key = jax.random.split(key)
    draw = jax.jit(lambda t: jax.random.randint(jax.random.fold_in(data_key, t), (BATCH,), 0, N_TRAIN))
    return [np.asarray(draw(jnp.int32(t))) for t in range(steps)]


def _initial(snapshots):
    """Session 0, the trainer's initial parameters and feedback kernels (that they are
    ``network.init``'s is tested in tests/training; taking them from the run saves compiling
    the initializers again)."""
    params, state = snapshots
    return tree(lambda a: a[0], params), tree(lambda a: a[0], state)


def np_run(name, hyper, initial, key, steps):
    """Numpy training run; returns per-step (params, feedback) snapshots and losses."""
    x, y = _data()
    x = x.astype(np.float64)
    params, state = initial
    make_opt = _optimizer(hyper)
    opts = {site: {k: make_opt() for k in ("w", "b")} for site in SITES}
    feedback = state if name in ("feedback_alignment", "information_alignment") else None
    if name == "information_alignment":
        b_opts = {
            site: NumpySGD(hyper.feedback_learning_rate, hyper.feedback_momentum, hyper.nesterov) for site in SITES
        }
    snapshots, losses = [(params, feedback)], []
    for batch in _batches(key, steps):
        loss, grads, inputs = np_forward_backward(params, feedback, x[batch], y[batch])
        losses.append(loss)
        if name == "information_alignment":
            # B's local loss uses this batch's site inputs and W *before* W's update
            new_feedback = {}
            for site in SITES:
                B = feedback[site]["feedback"]
                g = np_ia_grad(inputs[site], params[site]["w"], B, hyper.alpha, hyper.beta, hyper.gamma)
                new_feedback[site] = {"feedback": b_opts[site].step(B, g)}
            feedback = new_feedback
        params = {site: {k: opts[site][k].step(params[site][k], grads[site][k]) for k in ("w", "b")} for site in SITES}
        snapshots.append((params, feedback))
    return snapshots, np.array(losses)


def assert_tree_close(actual, expected, rtol=1e-4, atol=1e-5):
    for site in expected:
        for k in expected[site]:
            np.testing.assert_allclose(actual[site][k], expected[site][k], rtol=rtol, atol=atol, err_msg=f"{site}/{k}")


RULE_CASES = {
    "sgdm": ("sgdm", SGDMomentum(learning_rate=0.1)),  # Nesterov momentum 0.9 (the default)
    "adam": ("adam", Adam(learning_rate=0.01)),
    "fa": ("feedback_alignment", FeedbackAlignment(learning_rate=0.1)),
    "ia": (
        "information_alignment",
        InformationAlignment(learning_rate=0.1, alpha=0.5, beta=0.3, gamma=0.2, feedback_learning_rate=0.05),
    ),
}
STEPS = 3
KEY_SEED = 4


@functools.lru_cache(maxsize=None)
def train_rule(name, hyper):
    """One compiled training run per rule and hyperparameters (compiling dominates the runtime),
    shared by the tests here and in test_more_rules."""
    rule = make_rule(name, hyper)
    network, snapshots, losses = _train(rule, STEPS, jax.random.key(KEY_SEED))
    return rule, network, snapshots, losses


def run_case(case):
    return train_rule(*RULE_CASES[case])


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_training_steps_match_numpy(case):
    name, hyper = RULE_CASES[case]
    rule, network, (params, state), losses = run_case(case)
    expected, expected_losses = np_run(name, hyper, _initial((params, state)), jax.random.key(KEY_SEED), STEPS)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for t, (p, fb) in enumerate(expected):
        # Adam's early steps are ~lr * sign(g): float32 gradients near zero limit the agreement
        atol = 1e-4 if name == "adam" else 1e-5
        assert_tree_close(tree(lambda a: a[t], params), p, atol=atol)
        if fb is not None:
            assert_tree_close(tree(lambda a: a[t], state), fb, rtol=1e-5, atol=1e-6)
    if rule.credit == "backprop":
        assert state == {}


def _first_step_setup(case):
    _, network, (params, state), _ = run_case(case)
    key = jax.random.key(KEY_SEED)
    initial, initial_state = _initial((params, state))
    x, y = _data()
    batch = _batches(key, 1)[0]
    return params, state, initial, initial_state, x[batch], y[batch]


@pytest.mark.parametrize(
    "case,move,atol",
    [
        ("sgdm", lambda g: 0.1 * (1 + 0.9) * g, 1e-6),  # Nesterov, step 1: lr (g + m g)
        ("adam", lambda g: 0.01 * g / (np.abs(g) + 1e-8), 2e-5),  # bias-corrected m/sqrt(v) = g/|g|
    ],
)
def test_first_step_closed_forms(case, move, atol):
    params, _, initial, _, xb, yb = _first_step_setup(case)
    _, grads, _ = np_forward_backward(initial, None, xb.astype(np.float64), yb)
    expected = tree(lambda p, g: p - move(g), initial, grads)
    assert_tree_close(tree(lambda a: a[1], params), expected, atol=atol)


def test_backprop_step_is_true_gradient_step():
    """sgdm, step 1: -lr (1 + m) * jax.grad of a plain loss (no custom VJP, no haiku)."""
    params, _, initial, _, xb, yb = _first_step_setup("sgdm")

    def plain_loss(p, xb, yb):
        h = jax.nn.relu(xb.reshape(xb.shape[0], -1) @ p["dense_0"]["w"] + p["dense_0"]["b"])
        logits = h @ p["readout"]["w"] + p["readout"]["b"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1))

    initial32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), initial)
    grads = jax.grad(plain_loss)(initial32, jnp.asarray(xb), jnp.asarray(yb))
    expected = tree(lambda p, g: p - 0.1 * 1.9 * np.asarray(g, np.float64), initial, grads)
    assert_tree_close(tree(lambda a: a[1], params), expected, rtol=1e-5, atol=1e-6)


def test_feedback_alignment_never_changes_B_and_uses_it():
    params, state, initial, initial_state, xb, yb = _first_step_setup("fa")
    for site in SITES:
        # exactly the B the trainer started from, at every session
        for t in range(1, STEPS + 1):
            np.testing.assert_array_equal(state[site]["feedback"][t], initial_state[site]["feedback"])
    # W's update used B, not W: it is not what backprop would have done on step 1
    _, backprop_grads, _ = np_forward_backward(initial, None, xb.astype(np.float64), yb)
    backprop_step = initial["dense_0"]["w"] - 0.1 * 1.9 * backprop_grads["dense_0"]["w"]
    assert not np.allclose(params["dense_0"]["w"][1], backprop_step, atol=1e-4)


def test_information_alignment_first_B_step():
    """B_1 = B_0 - lr_B (1 + m) dR/dB, x the site input on batch 0, W the weights before the step."""
    _, hyper = RULE_CASES["ia"]
    params, state, initial, initial_state, xb, yb = _first_step_setup("ia")
    _, grads, inputs = np_forward_backward(initial, initial_state, xb.astype(np.float64), yb)
    for site in SITES:
        B0 = initial_state[site]["feedback"]
        g = np_ia_grad(inputs[site], initial[site]["w"], B0, hyper.alpha, hyper.beta, hyper.gamma)
        step = -hyper.feedback_learning_rate * (1 + hyper.feedback_momentum) * g
        np.testing.assert_allclose(state[site]["feedback"][1] - B0, step, rtol=1e-4, atol=1e-6, err_msg=site)
        # W's step used the old B (the numpy grads above were computed with B0)
        np.testing.assert_allclose(
            params[site]["w"][1], initial[site]["w"] - 0.1 * 1.9 * grads[site]["w"], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "name,hyper",
    [
        ("sgdm", SGDMomentum(learning_rate=0.3, momentum=0.8, nesterov=True)),
        ("sgdm", SGDMomentum(learning_rate=0.3, momentum=0.8, nesterov=False)),
        ("sgdm", SGDMomentum(learning_rate=0.3, momentum=0.0)),
        ("feedback_alignment", FeedbackAlignment(learning_rate=0.3, momentum=0.5, nesterov=False)),
        ("adam", Adam(learning_rate=0.1, b1=0.8, b2=0.9, eps=1e-3)),
    ],
)
def test_optimizer_several_steps_match_numpy(name, hyper):
    """The rule's optimizer alone, on a sequence of random gradients."""
    rng = np.random.default_rng(0)
    optimizer = make_rule(name, hyper).optimizer
    p = {"w": rng.standard_normal((3, 2)).astype(np.float32)}
    state = optimizer.init(p)
    reference, expected = _optimizer(hyper)(), p["w"].astype(np.float64)
    for _ in range(4):
        g = rng.standard_normal((3, 2)).astype(np.float32)
        updates, state = optimizer.update({"w": jnp.asarray(g)}, state, p)
        p = {"w": np.asarray(p["w"] + updates["w"])}
        expected = reference.step(expected, g.astype(np.float64))
        np.testing.assert_allclose(p["w"], expected, rtol=1e-5, atol=1e-6)


def test_local_feedback_loss_sums_sites_and_skips_zero_weights():
    rng = np.random.default_rng(3)
    shapes = {"a": (5, 4), "b": (4, 3)}
    params = {s: {"w": rng.standard_normal(sh).astype(np.float32)} for s, sh in shapes.items()}
    state = {s: {"feedback": rng.standard_normal(sh).astype(np.float32)} for s, sh in shapes.items()}
    inputs = {s: rng.standard_normal((6, sh[0])).astype(np.float32) for s, sh in shapes.items()}
    weights = {"amp": 0.5, "null": 0.0, "decay": 0.25}
    loss = local_feedback_loss(weights)(state, params, inputs, {"a": dense, "b": dense})
    expected = 0.0
    for s in shapes:
        x, W, B = (np.asarray(a, np.float64) for a in (inputs[s], params[s]["w"], state[s]["feedback"]))
        f = x @ W
        expected += 0.5 * (-np.sum(f * (x @ B)) / 6) + 0.25 * (np.sum(W**2) + np.sum(B**2))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_make_rule_credit_defaults_and_errors():
    assert make_rule("sgdm").credit == "backprop" and make_rule("sgdm").feedback_update is None
    assert make_rule("adam").credit == "backprop"
    assert make_rule("feedback_alignment").credit == "feedback"
    assert make_rule("feedback_alignment").feedback_update is None
    ia = make_rule("information_alignment")
    assert ia.credit == "feedback" and ia.feedback_update is not None
    with pytest.raises(ValueError):
        make_rule("kolen_pollack_typo")
