"""Divergence is marked at its step and the run goes on; gradient clipping, when asked for."""

from __future__ import annotations

import numpy as np
import optax
import jax.numpy as jnp
import xarray as xr

import simlab
from simlab.rules.rules import LearningRule
from simlab.training.cohort import with_clipping
from simlab.training.population import EXPLOSION_FACTOR, divergence_step

PROTOCOL = """\
name: diverging
seed: 0
cohort:
  architecture: [mlp]
  task: [digits]
  learning_rule: [sgdm]
  batch_size: [16, 32]
  replicates: 2
architectures:
  mlp: {type: mlp, hidden: [16]}
training:
  steps: 40
  rules:
    sgdm: {by_batch_size: {32: {learning_rate: 300.0}}}
  {clip}
recording: {sessions: 3, stimuli: 8}
rigs:
  synapse: {}
analyses: {}
"""


def _first_bad_step(losses: np.ndarray) -> int:
    """By hand: 1 + the first index where the loss is non-finite, else, where the last 10
    losses' median is above 10x the first loss (>= 1), 1 + the index after the last loss
    under that limit, else -1."""
    for t, value in enumerate(losses):
        if not np.isfinite(value):
            return t + 1
    limit = 10 * max(losses[0], 1.0)
    if np.median(losses[-10:]) <= limit:
        return -1
    last_below = max(t for t, value in enumerate(losses) if value <= limit)
    return last_below + 2


def test_a_planted_diverging_population_is_marked_at_its_step_and_the_run_completes(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROTOCOL.replace("{clip}", ""))
    printed = []
    run = simlab.run(path, out=tmp_path / "run", progress=False, echo=printed.append)
    subjects = run.subjects
    losses = subjects["loss"].values
    steps = subjects["diverged_step"].values
    for i, batch in enumerate(subjects["batch_size"].values):
        expected = _first_bad_step(losses[i])
        assert steps[i] == expected
        assert (expected > 0) == (batch == 32)  # only the planted population diverged
        assert subjects["status"].values[i] == ("diverged" if batch == 32 else "ok")
    assert (tmp_path / "run" / "recordings" / "synapse.nc").exists()  # the run went on
    (warning,) = [line for line in printed if line.startswith("warning:")]
    assert "2 of 2 subjects of mlp-digits-sgdm-b32 diverged" in warning and "learning_rate=300" in warning
    assert "simlab calibrate" in warning
    np.testing.assert_array_equal(subjects["clip_grad_norm"].values, np.nan)


def test_divergence_step_by_hand():
    finite = np.array([2.3, 2.2, 2.0, 1.9])
    assert divergence_step(finite, {"w": np.ones(3)}) == -1
    assert divergence_step(np.array([2.3, 2.2, np.nan, 1.0]), {"w": np.ones(3)}) == 3
    limit = 2.3 * EXPLOSION_FACTOR  # 10x the first loss
    # exploded from step 13 on (index 12), after a spike at step 6 that it came back from
    exploding = np.array([2.3, 2.2, 2.1, 2.2, 2.0, limit + 5, 2.0, 1.9, 1.8, 1.7, 1.8, 1.7] + [limit + 1] * 12)
    assert divergence_step(exploding, {"w": np.ones(3)}) == 13
    spike = np.array([2.3, 2.2, 2.1, 2.2, 2.0, limit * 5] + [2.0] * 12)  # recovered: not diverged
    assert divergence_step(spike, {"w": np.ones(3)}) == -1
    # losses that never showed it, parameters that did: the last step
    assert divergence_step(finite, {"w": np.array([1.0, np.inf])}) == 4


def test_clipping_scales_the_update_direction_to_the_norm():
    rule = with_clipping(LearningRule("sgd", "backprop", optax.sgd(0.1)), 1.0)
    grads = {"w": jnp.array([3.0, 4.0])}  # norm 5
    updates, _ = rule.optimizer.update(grads, rule.optimizer.init(grads), grads)
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([3.0, 4.0]) / 5.0, rtol=1e-6)
    small = {"w": jnp.array([0.3, 0.4])}  # norm 0.5: unchanged
    updates, _ = rule.optimizer.update(small, rule.optimizer.init(small), small)
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([0.3, 0.4]), rtol=1e-6)


def test_clipping_keeps_the_planted_population_finite_and_is_recorded(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROTOCOL.replace("{clip}", "clip_grad_norm: 0.001"))
    run = simlab.run(path, out=tmp_path / "run", progress=False, echo=lambda *a: None)
    subjects = run.subjects
    np.testing.assert_array_equal(subjects["clip_grad_norm"].values, 0.001)
    assert np.isfinite(subjects["loss"].values).all()
    synapse = xr.open_dataset(tmp_path / "run" / "recordings" / "synapse.nc")
    assert float(synapse["clip_grad_norm"].values[0]) == 0.001
