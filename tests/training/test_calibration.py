"""Calibration: a planted grid whose best setting is known, caching, determinism, the run
training with the choices, and the selection rules on hand-made trials."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from pydantic import PositiveFloat

import simlab
from simlab.registry import RULES
from simlab.rules.rules import LearningRule, register_rule
from simlab.specs.rules import RuleHyperparameters
from simlab.training import calibration
from simlab.training.calibration import accepted, choose, grid, healthy_range
from simlab.specs.protocol import Calibrate
from tests.conftest import quiet

PLANTED_BEST = 0.05


class Planted(RuleHyperparameters):
    learning_rate: PositiveFloat = PLANTED_BEST


def planted(hyper: Planted) -> LearningRule:
    """SGD that learns only at the planted rate (at any other rate W does not move) and blows
    up above ten times it: the rate is traced, so the choice is made with jnp.where."""
    lr = hyper.learning_rate
    on_target = jnp.abs(jnp.log10(lr) - np.log10(PLANTED_BEST)) < 0.05
    scale = jnp.where(on_target, lr, jnp.where(lr > 9 * PLANTED_BEST, 1e9, 0.0))
    return LearningRule("planted", "backprop", optax.chain(optax.scale(-1.0), optax.scale(scale)))


@pytest.fixture
def planted_rule():
    register_rule("planted", Planted, credit_mechanism="backprop", optimizer="sgd")(planted)
    yield
    RULES.unregister("planted")


PROTOCOL = """\
name: planted
seed: 3
cohort:
  architecture: [mlp]
  task: [digits]
  learning_rule: [{rules}]
  batch_size: [32]
  replicates: 2
architectures:
  mlp: {{type: mlp, hidden: [16]}}
training:
  steps: 30
  calibrate: {{steps: 20, seeds: 2, points: 5, span: 10.0}}
recording: {{sessions: 2, stimuli: 8}}
rigs:
  synapse: {{}}
analyses: {{}}
"""


def _protocol(tmp_path, rules="planted"):
    path = tmp_path / "protocol.yaml"
    path.write_text(PROTOCOL.format(rules=rules))
    return path


def test_the_planted_best_is_chosen_and_the_run_trains_with_it(planted_rule, tmp_path):
    run = simlab.run(_protocol(tmp_path), out=tmp_path / "run", progress=False, echo=quiet)
    table = xr.open_dataset(run.path / "calibration.nc").load()
    rates = table["learning_rate"].values
    np.testing.assert_allclose(rates, grid(PLANTED_BEST, Calibrate()))  # 0.005 ... 0.5, log-spaced
    np.testing.assert_allclose(rates, [0.005, 0.01581, 0.05, 0.1581, 0.5], rtol=1e-3)
    # only the planted rate learns; 0.5 (above 9x) diverges on both seeds
    assert table["accepted"].values.tolist() == [0, 0, 1, 0, 0]
    assert table["diverged"].values[-1].tolist() == [1, 1]
    assert (table["score"].values[2] > table["untrained"].values[2] + 0.05).all()
    np.testing.assert_array_equal(table["score"].values[:2], table["untrained"].values[:2])  # W never moved
    assert (table["seed"].values < 0).all()  # seeds no subject of the cohort has
    choice = json.loads(table.attrs["choices"])["mlp-digits-planted-b32"]
    assert choice == {"rates": {"learning_rate": PLANTED_BEST}, "healthy": {"learning_rate": [PLANTED_BEST, PLANTED_BEST]}}
    # the protocol as run pins the choice; the subjects trained with it, and learned
    assert run.protocol.training.calibrated["mlp-digits-planted-b32"].rates == {"learning_rate": PLANTED_BEST}
    subjects = run.subjects
    np.testing.assert_allclose(subjects["learning_rate"].values, PLANTED_BEST)
    assert (subjects["final_accuracy"].values > subjects["test_accuracy"].values[:, 0] + 0.05).all()
    assert "chosen" in (run.path / "calibration.txt").read_text()


def test_calibration_is_cached_and_deterministic(planted_rule, tmp_path, monkeypatch):
    first = simlab.calibrate(_protocol(tmp_path), out=tmp_path / "a", progress=False, echo=quiet)
    again = simlab.calibrate(_protocol(tmp_path), out=tmp_path / "b", progress=False, echo=quiet)
    xr.testing.assert_identical(first.drop_attrs(), again.drop_attrs())

    def no_training(*args, **kwargs):
        raise AssertionError("a cached population was trained again")

    monkeypatch.setattr(calibration, "train_population", no_training)
    cached = simlab.calibrate(_protocol(tmp_path), out=tmp_path / "a", progress=False, echo=quiet)
    xr.testing.assert_identical(first.drop_attrs(), cached.drop_attrs())
    # other settings are another search: not served from the cache
    with pytest.raises(AssertionError, match="trained again"):
        simlab.calibrate(_protocol(tmp_path), out=tmp_path / "a", progress=False, echo=quiet, points=3)


def test_calibrate_refuses_bad_settings_naming_them(planted_rule, tmp_path):
    with pytest.raises(simlab.SimlabError, match="points=1"):
        simlab.calibrate(_protocol(tmp_path), out=tmp_path / "a", progress=False, echo=quiet, points=1)


# --- the selection rules on hand-made trials ------------------------------------------------


def _trial(lr, scores, untrained=0.1, diverged=False):
    scores = np.asarray(scores, float)
    return {
        "rates": {"learning_rate": lr},
        "score": scores,
        "untrained": np.full_like(scores, untrained),
        "diverged": np.full(scores.shape, diverged),
    }


def test_a_setting_is_accepted_only_if_every_seed_learned():
    assert accepted(_trial(0.1, [0.3, 0.2]), min_gain=0.05)
    assert not accepted(_trial(0.1, [0.3, 0.14]), min_gain=0.05)  # one seed gained 0.04
    assert not accepted(_trial(0.1, [0.9, 0.9], diverged=True), min_gain=0.05)
    assert not accepted(_trial(0.1, [np.nan, 0.9]), min_gain=0.05)


def test_the_best_accepted_setting_and_its_healthy_range():
    trials = [_trial(lr, s) for lr, s in [(0.001, [0.12, 0.12]), (0.01, [0.5, 0.6]), (0.1, [0.7, 0.8]),
                                         (1.0, [0.62, 0.7]), (10.0, [0.9, 0.1])]]
    for trial in trials:
        trial["accepted"] = accepted(trial, 0.05)
    assert [t["accepted"] for t in trials] == [False, True, True, True, False]
    assert choose(trials) == 2  # mean 0.75
    # gains 0.45, 0.65, 0.56: keep 0.8 x 0.65 = 0.52 keeps 0.1 and 1.0, not 0.01
    assert healthy_range(trials, 2, "learning_rate", keep=0.8) == (0.1, 1.0)
    assert healthy_range(trials, 2, "learning_rate", keep=0.6) == (0.01, 1.0)
    assert choose([_trial(0.1, [0.1, 0.1]) | {"accepted": False}]) is None


def test_the_defaults_table_pools_a_family_and_keeps_each_calibrated_net_of_it():
    from simlab.protocol.loader import parse_protocol
    from simlab.specs.rules import DefaultsTable

    protocol = parse_protocol(
        "name: t\nseed: 0\ncohort:\n  architecture: [knet, knet4, resnet18]\n  task: [digits_image]\n"
        "  learning_rule: [feedback_alignment]\n  batch_size: [64]\n  replicates: 1\n"
        "training: {steps: 10}\nrecording: {sessions: 2, stimuli: 8}\nrigs: {synapse: {units: all}}\nanalyses: {}\n"
    )
    choices = {
        "knet-digits_image-feedback_alignment-b64": {"rates": {"learning_rate": 0.002},
                                                     "healthy": {"learning_rate": [0.002, 0.02]}},
        "knet4-digits_image-feedback_alignment-b64": {"rates": {"learning_rate": 0.02},
                                                      "healthy": {"learning_rate": [0.006, 0.06]}},
        "resnet18-digits_image-feedback_alignment-b64": {"rates": {"learning_rate": 0.01}, "healthy": {}},
    }
    table = DefaultsTable.model_validate(calibration.defaults_table_from(protocol, choices, {}))
    fa = table.defaults["feedback_alignment"]
    # knet family: geometric mean sqrt(0.002 * 0.02) = 0.00632, inside the shared range [0.006, 0.02].
    assert fa["knet"].rates == {"learning_rate": 0.00632}
    assert fa["knet"].healthy == {"learning_rate": (0.006, 0.02)}
    own = table.by_architecture["feedback_alignment"]
    assert own["knet4"].rates == {"learning_rate": 0.02} and own["knet"].rates == {"learning_rate": 0.002}
    assert own["knet"].healthy == {"learning_rate": (0.002, 0.02)}
    assert fa["resnet"].rates == {"learning_rate": 0.01} and fa["resnet"].healthy == {}
    assert "resnet18" not in own  # the family's only calibrated net: its entry is the family's
