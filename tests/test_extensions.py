"""simlab extended from outside the package: a learning rule, a rig type, an architecture and an
analysis, each defined in this file and registered once with simlab's public ``register_*``
functions, then named together in one protocol and run end to end by ``simlab.run``.

Each is checked against an independent reference:
- the rule (plain SGD written from scratch) trains exactly like the protocol-defined rule
  ``{credit: backprop, optimizer: sgd}`` (optax's SGD through simlab's own path);
- the architecture's layers are the recording's sites, and its forward pass is numpy's;
- the rig's values (squared activations, statistics over units then the mean over stimuli)
  are numpy's, from the snapshots;
- the analysis's result is numpy's mean over subjects of the recording.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt

import simlab
from simlab.protocol import plan_cohort
from simlab.recording.contract import problems
from simlab.recording.observables import activation_observables
from simlab.recording.rigs import Rig
from simlab.registry import ANALYSES, ARCHITECTURES, RIGS, RULES
from simlab.rules import LearningRule
from simlab.specs.rules import RuleHyperparameters
from simlab.subjects.architectures import Architecture, SitePlan
from simlab.training.snapshots import read_shard


# --------------------------------------------------------------------------- a learning rule
class PlainSGD(RuleHyperparameters):
    learning_rate: PositiveFloat = 0.05


def plain_sgd(hyper: PlainSGD) -> LearningRule:
    """W <- W - lr dL/dW, written from scratch as an optax transformation."""

    def update(grads, state, params=None):
        return jax.tree.map(lambda g: -hyper.learning_rate * g, grads), state

    return LearningRule("plain_sgd", "backprop", optax.GradientTransformation(lambda p: optax.EmptyState(), update))


# --------------------------------------------------------------------------- an architecture
class TwoLayerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["two_layer"] = "two_layer"
    width: PositiveInt = 6


class TwoLayer(Architecture):
    """hidden: relu(x W + b), then the readout."""

    def sites(self):
        return (SitePlan("hidden", "dense", self.spec.width),)


def numpy_forward(params, x):
    """Each site's output, in float64, by hand."""
    p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in params.items()}
    h = np.maximum(x.reshape(len(x), -1) @ p["hidden"]["w"] + p["hidden"]["b"], 0.0)
    return {"hidden": h, "readout": h @ p["readout"]["w"] + p["readout"]["b"]}


# --------------------------------------------------------------------------- a rig type
class FluorescenceRig(Rig):
    """An indicator whose signal is the square of each recorded unit's activation."""

    name = "fluorescence"
    measure = "activation"
    observe = staticmethod(activation_observables)
    unit_response_dims = ("stimulus", "unit")

    def measure_session(self, network, params, stimuli, units, inputs):
        _, sites = network.apply(params, {}, stimuli)
        return {n: jnp.square(sites[n].output.reshape(len(stimuli), -1)[:, units[n]]) for n in network.site_names}


# --------------------------------------------------------------------------- an analysis
class RuleMeansSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rigs: list[str] | None = None
    observable: str = "activation_raw_mean"


def rule_means(recording: xr.Dataset, spec: RuleMeansSpec) -> xr.Dataset:
    """The mean over subjects of each learning rule, per layer and session, of one observable."""
    values = recording.observation.sel(observable=spec.observable)
    return values.groupby("learning_rule").mean("subject").to_dataset(name="mean")


def rule_means_table(result: xr.Dataset) -> str:
    return "\n".join(f"{rule}: {float(result['mean'].sel(learning_rule=rule).mean()):.4f}"
                     for rule in result["learning_rule"].values)


PROTOCOL = """\
name: extended
cohort:
  architecture: [net]
  task: [digits]
  learning_rule: [plain_sgd, optax_sgd]
  batch_size: [16]
  replicates: 2
architectures:
  net: {type: two_layer, width: 5}
learning_rules:
  optax_sgd: {credit: backprop, optimizer: sgd, learning_rate: 0.02}
training:
  steps: 6
  rules: {plain_sgd: {learning_rate: 0.02}}
recording: {sessions: 3, stimuli: 12}
rigs:
  fluorescence: {units: 4, seed: 2}
analyses:
  rule_means: {rigs: [fluorescence]}
"""


@pytest.fixture
def extended(tmp_path):
    """The four extensions registered for one test, and unregistered after it."""
    simlab.register_rule("plain_sgd", PlainSGD, credit_mechanism="backprop", optimizer="sgd")(plain_sgd)
    simlab.register_architecture(TwoLayerSpec, TwoLayer, layout=None)
    simlab.register_rig(FluorescenceRig)
    simlab.register_analysis("rule_means", spec=RuleMeansSpec, compute=rule_means, table=rule_means_table)
    try:
        path = tmp_path / "extended.yaml"
        path.write_text(PROTOCOL)
        yield simlab.run(path, tmp_path / "run", progress=False, echo=lambda *a, **k: None)
    finally:
        RULES.unregister("plain_sgd")
        ARCHITECTURES.unregister("two_layer")
        RIGS.unregister("fluorescence")
        ANALYSES.unregister("rule_means")


def test_a_rule_a_rig_an_architecture_and_an_analysis_from_outside(extended):
    run = extended
    plan = plan_cohort(run.protocol)
    shards = {pop.learning_rule: read_shard(run.shard(pop.id)) for pop in plan.populations}

    # the rule: the same subjects (same seeds, same batches) as optax's SGD at the same rate
    for site in ("hidden", "readout"):
        np.testing.assert_allclose(shards["plain_sgd"].params[site]["w"], shards["optax_sgd"].params[site]["w"],
                                   rtol=1e-6, atol=1e-7)
    assert not np.allclose(shards["plain_sgd"].params["hidden"]["w"][:, 0], shards["plain_sgd"].params["hidden"]["w"][:, -1])
    subjects = run.subjects
    assert set(subjects["credit_mechanism"].values) == {"backprop"}
    assert set(subjects["optimizer"].values) == {"sgd"}

    # the architecture and the rig, against numpy from the snapshots
    recording = run.recordings["fluorescence"]
    assert problems(recording) == []
    assert list(recording["layer_name"].values[0]) == ["hidden", "readout"]
    stimuli = run.stimuli("digits")
    shard = shards["plain_sgd"]
    for replicate, subject_id in enumerate(shard.subject_ids):
        for session in range(recording.sizes["session"]):
            params = {site: {k: v[replicate, session] for k, v in leaves.items()} for site, leaves in shard.params.items()}
            outputs = numpy_forward(params, stimuli)
            for layer, site in enumerate(("hidden", "readout")):
                units = recording["unit_index"].sel(subject=subject_id).values[layer]
                signal = outputs[site][:, units[units >= 0]] ** 2
                expected = signal.mean(axis=1).mean()  # the mean over units per stimulus, then over stimuli
                got = recording.observation.sel(subject=subject_id, observable="activation_raw_mean").values[layer, session]
                np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)

    # the analysis, against numpy from the recording
    result = run.analyses["rule_means"]
    values = recording.observation.sel(observable="activation_raw_mean")
    for rule in ("plain_sgd", "optax_sgd"):
        by_hand = values.values[recording["learning_rule"].values == rule].mean(axis=0)
        np.testing.assert_allclose(result["mean"].sel(learning_rule=rule).values, by_hand, rtol=1e-6)
    assert run.analysis("rule_means", "txt").read_text().startswith(("optax_sgd: ", "plain_sgd: "))
