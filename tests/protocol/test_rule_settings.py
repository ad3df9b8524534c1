"""Per-population rule settings (``training.rules`` with ``by_*`` keys, ``training.calibrated``),
the spread of rates, and how the plan and the subject coordinates carry them."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from simlab.protocol import ProtocolError, describe, parse_protocol, plan_cohort
from simlab.protocol.spread import draw, overlapping

BASE = textwrap.dedent(
    """\
    name: settings
    cohort:
      architecture: [mlp, conv1d]
      task: [mnist1d, digits]
      learning_rule: [feedback_alignment, information_alignment]
      batch_size: [32, 128]
      replicates: 2
    training:
      steps: 100
    """
)


def _protocol(training: str = ""):
    return parse_protocol(BASE + textwrap.indent(textwrap.dedent(training), "  "), source="settings.yaml")


def test_settings_resolve_task_then_architecture_then_batch_size_nested_and_given_only():
    protocol = _protocol(
        """\
        rules:
          feedback_alignment:
            momentum: 0.8
            by_task: {digits: {learning_rate: 0.001}}
            by_architecture:
              conv1d:
                learning_rate: 0.002
                by_batch_size: {128: {learning_rate: 0.003, nesterov: false}}
        """
    )
    fa = lambda a, t, b: protocol.rule_hyperparameters("feedback_alignment", a, t, b)  # noqa: E731
    assert (fa("mlp", "mnist1d", 32).learning_rate, fa("mlp", "mnist1d", 32).momentum) == (0.005, 0.8)  # default lr
    assert fa("mlp", "digits", 32).learning_rate == 0.001  # by task
    assert fa("conv1d", "digits", 32).learning_rate == 0.002  # architecture wins over task
    assert fa("conv1d", "digits", 128).learning_rate == 0.003 and not fa("conv1d", "digits", 128).nesterov
    assert fa("mlp", "digits", 128).nesterov  # the batch-size entry is under conv1d only
    # other rules keep their defaults; the plan carries each population's settings
    plan = plan_cohort(protocol)
    pop = next(p for p in plan.populations if p.id == "conv1d-digits-feedback_alignment-b128")
    assert pop.hyperparameters == fa("conv1d", "digits", 128)
    assert all(s.hyperparameters == pop.hyperparameters for s in pop.subjects)
    # validate prints every population's settings
    text = describe(protocol, plan)
    assert "  feedback_alignment (conv1d/mnist1d/b128, conv1d/digits/b128): learning_rate=0.003, momentum=0.8, nesterov=False" in text
    # written back with what was given only, and read back equal
    dumped = protocol.to_yaml()
    assert "by_batch_size" in dumped and parse_protocol(dumped) == protocol
    assert "information_alignment" not in dumped[dumped.index("rules:"): dumped.index("calibrate:")]


def test_a_bad_nested_setting_is_located_with_its_line():
    with pytest.raises(ProtocolError) as info:
        _protocol("rules:\n  feedback_alignment:\n    by_architecture: {conv1d: {learning_rate: -1}}\n")
    (problem,) = info.value.problems
    assert problem.location == "training.rules.feedback_alignment.by_architecture.conv1d.learning_rate"
    assert problem.line == 12  # the by_architecture line (9 lines above training.rules)


def test_calibrated_rates_pin_one_population_over_the_rules():
    protocol = _protocol(
        """\
        rules: {feedback_alignment: {learning_rate: 0.002}}
        calibrated:
          mlp-mnist1d-feedback_alignment-b32: {rates: {learning_rate: 0.0123}, healthy: {learning_rate: [0.01, 0.02]}}
        """
    )
    assert protocol.rule_hyperparameters("feedback_alignment", "mlp", "mnist1d", 32).learning_rate == 0.0123
    assert protocol.rule_hyperparameters("feedback_alignment", "mlp", "mnist1d", 128).learning_rate == 0.002


def test_overlapping_ranges_share_their_intersection():
    # a and b overlap on [2, 4]; c overlaps b only on [5, 6] (b's share is taken); d overlaps none
    ranges = {"a": (1.0, 4.0), "b": (2.0, 6.0), "c": (5.0, 9.0), "d": (20.0, 30.0)}
    out = overlapping(ranges)
    np.testing.assert_allclose(out["a"], (2.0, 4.0))
    np.testing.assert_allclose(out["b"], (2.0, 4.0))
    np.testing.assert_allclose(out["c"], (5.0, 9.0))
    np.testing.assert_allclose(out["d"], (20.0, 30.0))
    # three ranges sharing a point beat two
    three = overlapping({"a": (1.0, 3.0), "b": (2.0, 5.0), "c": (2.5, 8.0), "d": (6.0, 8.0)})
    np.testing.assert_allclose(three["a"], (2.5, 3.0))
    np.testing.assert_allclose(three["c"], (2.5, 3.0))
    np.testing.assert_allclose(three["d"], (6.0, 8.0))  # c is taken: d keeps its own


def test_draws_are_log_uniform_deterministic_and_within_the_range():
    values = np.array([draw(0.001, 0.1, f"subject{k}:learning_rate", seed=0) for k in range(2000)])
    assert values.min() >= 0.001 and values.max() <= 0.1
    logs = np.log10(values)
    assert abs(logs.mean() - (-2.0)) < 0.05  # the middle of [-3, -1] in log10
    assert abs(np.mean(logs < -2.5) - 0.25) < 0.04
    assert draw(0.001, 0.1, "x:learning_rate", seed=0) == draw(0.001, 0.1, "x:learning_rate", seed=0)
    assert draw(0.001, 0.1, "x:learning_rate", seed=0) != draw(0.001, 0.1, "x:learning_rate", seed=1)


def test_the_spread_draws_every_subject_its_rate_from_the_overlap_of_its_rules():
    protocol = _protocol("spread: {over: factor, factor: 3.0}\n")
    plan = plan_cohort(protocol)
    # on mlp FA 0.005 and IA 0.01 at factor 3: [0.00167, 0.015] and [0.00333, 0.03] share
    # [0.00333, 0.015]; on each architecture the two rules share [max(v) / 3, min(v) * 3]
    rates = {s.id: s.hyperparameters.learning_rate for s in plan.subjects}
    for s in plan.subjects:
        values = [protocol.rule_hyperparameters(rule, s.architecture, s.task, s.batch_size).learning_rate
                  for rule in ("feedback_alignment", "information_alignment")]
        assert max(values) / 3 * 0.999 <= rates[s.id] <= min(values) * 3 * 1.001, s.id
    mlp = [rates[s.id] for s in plan.subjects if s.architecture == "mlp"]
    assert 0.01 / 3 * 0.999 <= min(mlp) and max(mlp) <= 0.005 * 3 * 1.001
    assert len(set(rates.values())) > 0.9 * len(rates)  # every subject draws its own (4 digits: rare ties)
    # IA's feedback rate is not spread (only learning_rate by default)
    for s in plan.subjects:
        if s.learning_rule == "information_alignment":
            population = protocol.rule_hyperparameters(s.learning_rule, s.architecture, s.task, s.batch_size)
            assert s.hyperparameters.feedback_learning_rate == population.feedback_learning_rate
    assert plan_cohort(protocol).subjects[5].hyperparameters == plan.subjects[5].hyperparameters  # reproducible
    without = plan_cohort(_protocol("spread: {over: factor, factor: 3.0, overlap: false}\n"))
    fa = [s.hyperparameters.learning_rate for s in without.subjects if s.learning_rule == "feedback_alignment"]
    assert min(fa) < 0.01 / 3  # its own range reaches below the shared one
    assert "spread: each subject draws learning_rate log-uniformly from" in describe(protocol, plan)


def test_with_overlapping_ranges_the_rate_alone_does_not_name_the_rule():
    """The control of the spread: a classifier given only each subject's learning rate and
    batch size names the rule at chance under a spread whose ranges overlap, far above chance without one."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    def accuracy(spread: str) -> float:
        protocol = parse_protocol(textwrap.dedent(f"""\
            name: s
            cohort: {{architecture: [mlp, conv1d], task: mnist1d, batch_size: [32, 128], replicates: 30,
                      learning_rule: [feedback_alignment, information_alignment, kolen_pollack, sign_symmetry]}}
            training:
              steps: 100
              # pinned, so that the test does not follow the shipped defaults
              rules: {{feedback_alignment: {{learning_rate: 0.005}}, information_alignment: {{learning_rate: 0.01}},
                      kolen_pollack: {{learning_rate: 0.01}}, sign_symmetry: {{learning_rate: 0.005}}}}
              {spread}
            """))
        subjects = plan_cohort(protocol).subjects
        X = np.array([[np.log10(s.hyperparameters.learning_rate), s.batch_size] for s in subjects])
        y = np.array([s.learning_rule for s in subjects])
        return cross_val_score(RandomForestClassifier(100, random_state=0), X, y, cv=5).mean()

    # defaults 0.005, 0.01, 0.01, 0.005: two rates, so the rate halves the choice (0.5); chance 0.25
    assert accuracy("") == pytest.approx(0.5, abs=0.02)
    assert accuracy("spread: {over: factor, factor: 3.0}") < 0.25 + 0.15


def test_only_rates_can_be_searched_or_spread():
    with pytest.raises(ProtocolError, match="'momentum': not a rate"):
        _protocol("spread: {rates: [learning_rate, momentum]}\n")
    with pytest.raises(ProtocolError, match="'alpha': not a rate"):
        _protocol("calibrate: {rates: [alpha]}\n")
