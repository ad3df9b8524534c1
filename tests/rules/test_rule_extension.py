"""A learning rule added from outside the package: one hyperparameter model, one function,
registered once, then named in a protocol like any built-in.

The rule is signSGD (Bernstein et al. 2018) on backprop credit: every parameter moves by
exactly ``learning_rate`` against the sign of its gradient. One training step of it therefore
has a by-hand answer, W1 - W0 = -lr * sign(g), and its signs are those of plain SGD's step
from the same initial weights and batch (the built-in sgdm without momentum, W1 - W0 = -lr' g).
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from pydantic import Field, PositiveFloat

from simlab.errors import SimlabError
from simlab.pipeline import run_protocol
from simlab.protocol import ProtocolError, load_protocol, parse_protocol, plan_cohort
from simlab.registry import RULES
from simlab.rules.backprop import sgdm
from simlab.rules.rules import (
    LearningRule,
    learns_from_reward,
    make_rule,
    register_rule,
    rule_factors,
    weight_optimizer,
)
from simlab.specs.rules import (
    CREDIT_MECHANISMS,
    RULE_HYPERPARAMETERS,
    RuleHyperparameters,
    SGDMomentum,
    default_hyperparameters,
)
from simlab.training.snapshots import read_shard
from tests.conftest import quiet


class SignSGD(RuleHyperparameters):
    """signSGD: each parameter steps by ``learning_rate`` against its gradient's sign."""

    learning_rate: PositiveFloat = 0.01


def sign_sgd(hyper: SignSGD) -> LearningRule:
    """W <- W - lr * sign(dL/dW), written as an optax transformation from scratch."""

    def update(grads, state, params=None):
        return jax.tree.map(lambda g: -hyper.learning_rate * jnp.sign(g), grads), state

    return LearningRule("sign_sgd", "backprop", optax.GradientTransformation(lambda params: optax.EmptyState(), update))


class ScaledFeedback(SGDMomentum):
    """A user's feedback-alignment variant with its own setting (SGD-based: usable as ``credit:``)."""

    learning_rate: PositiveFloat = 0.002
    scale: float = Field(2.0, gt=0.0)


def scaled_feedback(hyper: ScaledFeedback) -> LearningRule:
    return LearningRule("scaled_feedback", "feedback", weight_optimizer(hyper, hyper.scale * hyper.learning_rate))


@pytest.fixture
def user_rules():
    """sign_sgd and scaled_feedback registered for one test, and gone after it."""
    register_rule("sign_sgd", SignSGD, credit_mechanism="backprop", optimizer="sign_sgd")(sign_sgd)
    register_rule("scaled_feedback", ScaledFeedback)(scaled_feedback)
    yield
    RULES.unregister("sign_sgd")
    RULES.unregister("scaled_feedback")


SIGN_SGD_PROTOCOL = """\
name: sign-sgd
seed: 0
cohort:
  architecture: [mlp]
  task: [digits]
  learning_rule: [{rule}, sgdm]
  batch_size: [16]
  replicates: 2
architectures:
  mlp: {{type: mlp, hidden: [8]}}
training:
  steps: 1
  rules:
    sign_sgd: {{learning_rate: 0.003}}
    sgdm: {{learning_rate: 0.5, momentum: 0.0}}
recording:
  sessions: 2
  stimuli: 8
rigs:
  synapse: {{}}
analyses: {{}}
"""
SIGN_SGD_LR = 0.003


def _write(tmp_path, text: str):
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    return path


def _first_step(run, protocol, rule: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Leaf path -> (W0, W1 - W0) of every parameter of the population trained by ``rule``
    ([replicate, ...] arrays, float64)."""
    (pop,) = [pop for pop in plan_cohort(protocol).populations if pop.learning_rule == rule]
    params = read_shard(run.shard(pop.id)).params
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        jax.tree_util.keystr(path): (np.float64(leaf[:, 0]), np.float64(leaf[:, 1]) - np.float64(leaf[:, 0]))
        for path, leaf in leaves
    }


def test_a_registered_rule_runs_through_a_protocol(user_rules, tmp_path):
    path = _write(tmp_path, SIGN_SGD_PROTOCOL.format(rule="sign_sgd"))
    protocol = load_protocol(path)
    assert protocol.rule_hyperparameters("sign_sgd") == SignSGD(learning_rate=SIGN_SGD_LR)

    run = run_protocol(path, tmp_path / "run", progress=False, echo=quiet)

    subjects = xr.open_dataset(run.subjects_file).load()
    mine = subjects.where(subjects["learning_rule"] == "sign_sgd", drop=True)
    assert mine.sizes["subject"] == 2
    assert set(mine["credit_mechanism"].values) == {"backprop"}
    assert set(mine["optimizer"].values) == {"sign_sgd"}
    assert set(mine["task_family"].values) == {"supervised"}
    assert set(mine["status"].values) == {"ok"}
    recording = xr.open_dataset(run.recording("synapse")).load()
    assert sorted(recording["learning_rule"].values) == ["sgdm", "sgdm", "sign_sgd", "sign_sgd"]
    # the override as run: the run directory's protocol reads back with it
    assert run.protocol.rule_hyperparameters("sign_sgd").learning_rate == SIGN_SGD_LR

    sign_steps, sgd_steps = _first_step(run, protocol, "sign_sgd"), _first_step(run, protocol, "sgdm")
    assert sign_steps.keys() == sgd_steps.keys() and len(sign_steps) == 4  # two sites, w and b
    moved = 0
    for leaf, (w0, sign_step) in sign_steps.items():
        sgd_w0, sgd_step = sgd_steps[leaf]
        np.testing.assert_array_equal(w0, sgd_w0)  # same seeds: same initial weights (and batch)
        # every parameter moves by lr or (a zero gradient) not at all ...
        size = np.abs(sign_step)
        assert np.all((size == 0.0) | np.isclose(size, SIGN_SGD_LR, rtol=1e-4, atol=0.0)), leaf
        # ... against its gradient's sign, the sign of plain SGD's step -lr' g
        nonzero = sgd_step != 0.0
        np.testing.assert_array_equal(np.sign(sign_step[nonzero]), np.sign(sgd_step[nonzero]))
        moved += int(nonzero.sum())
    assert moved > 0.5 * sum(step.size for _, step in sign_steps.values())  # most weights had a gradient


def test_the_schema_sees_registered_rules(user_rules, tmp_path):
    assert RULE_HYPERPARAMETERS["sign_sgd"] is SignSGD
    assert default_hyperparameters("sign_sgd", "image") == SignSGD(learning_rate=0.001)  # image nets: a tenth
    assert rule_factors("sign_sgd") == {"credit_mechanism": "backprop", "optimizer": "sign_sgd"}
    assert not learns_from_reward("sign_sgd")
    # a rule's hyperparameters are checked like a built-in's, at their place in the file
    text = SIGN_SGD_PROTOCOL.format(rule="sign_sgd")
    bad = text.replace("{learning_rate: 0.003}", "{learning_rate: -1, momentum: 0.9}")
    with pytest.raises(ProtocolError) as info:
        load_protocol(_write(tmp_path, bad))
    found = {p.location: (p.line, p.message) for p in info.value.problems}
    assert found.keys() == {"training.rules.sign_sgd.learning_rate", "training.rules.sign_sgd.momentum"}
    assert {line for line, _ in found.values()} == {14}
    assert found["training.rules.sign_sgd.momentum"][1].startswith("unknown key 'momentum' (expected one of: learning")

    # an SGD-based rule is also a credit mechanism a protocol may pair with another optimizer;
    # signSGD's model carries no optimizer choice, and "backprop" stays sgdm's
    assert "scaled_feedback" in CREDIT_MECHANISMS and "sign_sgd" not in CREDIT_MECHANISMS
    assert CREDIT_MECHANISMS["backprop"] is SGDMomentum
    defined = parse_protocol(
        text.replace("[sign_sgd, sgdm]", "[sign_sgd, sfa_adam]")
        + "learning_rules:\n  sfa_adam: {credit: scaled_feedback, optimizer: adam, learning_rate: 0.01, scale: 3.0}\n"
    )
    hyper = defined.rule_hyperparameters("sfa_adam")
    assert isinstance(hyper, ScaledFeedback) and (hyper.scale, hyper.b1) == (3.0, 0.9)
    assert rule_factors("sfa_adam", hyper) == {"credit_mechanism": "scaled_feedback", "optimizer": "adam"}
    rule = make_rule("sfa_adam", hyper)
    assert (rule.name, rule.credit) == ("sfa_adam", "feedback")
    # Adam's first step is lr * g / (|g| + eps) = lr * sign(g) (bias-corrected moments), here
    # at the rule's own rate scale * learning_rate = 0.03
    grads = {"w": jnp.asarray([[0.5, -2.0], [1e-3, -7.0]])}
    updates, _ = rule.optimizer.update(grads, rule.optimizer.init(grads), grads)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.03 * np.sign(np.asarray(grads["w"])), rtol=1e-4)


def test_registering_a_name_twice_is_refused(user_rules):
    with pytest.raises(SimlabError, match="learning rule 'sgdm' is already registered"):
        register_rule("sgdm", SignSGD)(sign_sgd)
    with pytest.raises(SimlabError, match="learning rule 'sign_sgd' is already registered"):
        register_rule("sign_sgd", SignSGD)(sign_sgd)
    assert RULES["sgdm"].build is sgdm and RULES["sgdm"].hyperparameters is SGDMomentum


def test_a_rule_needs_a_strict_model_with_defaults():
    class NoDefault(RuleHyperparameters):
        learning_rate: PositiveFloat

    with pytest.raises(SimlabError, match="every hyperparameter needs a valid default"):
        register_rule("no_default", NoDefault)
    with pytest.raises(SimlabError, match="must be a RuleHyperparameters model"):
        register_rule("loose", dict)
    assert "no_default" not in RULES and "loose" not in RULES


def _unknown_rule_lines(tmp_path, rule: str) -> list[str]:
    path = _write(tmp_path, SIGN_SGD_PROTOCOL.format(rule=rule).replace("    sign_sgd: {learning_rate: 0.003}\n", ""))
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    return [line.removeprefix(f"{path}") for line in str(info.value).splitlines()]


BUILTIN_RULES = (
    "adam, direct_feedback_alignment, feedback_alignment, hebbian, information_alignment, kolen_pollack, "
    "node_perturbation, sgdm, sign_symmetry, symmetric_alignment, weight_mirror"
)


def test_an_unknown_rule_is_one_line_at_its_place(user_rules, tmp_path):
    known = BUILTIN_RULES.replace("node_perturbation,", "node_perturbation, scaled_feedback,").replace(
        "sign_symmetry,", "sign_sgd, sign_symmetry,"
    )
    assert _unknown_rule_lines(tmp_path, "sign_sgdd") == [
        ": 1 problem in protocol",
        f":6: cohort.learning_rule[0]: unknown learning rule 'sign_sgdd' (known: {known}); did you mean 'sign_sgd'?",
    ]


def test_an_unregistered_rule_is_unknown_again(tmp_path):
    assert "sign_sgd" not in RULES  # registered only inside the fixture
    assert _unknown_rule_lines(tmp_path, "sign_sgd") == [
        ": 1 problem in protocol",
        f":6: cohort.learning_rule[0]: unknown learning rule 'sign_sgd' (known: {BUILTIN_RULES})",
    ]
