"""A new architecture type from outside the package: its settings model and its Architecture
(sites and forward pass side by side), registered once, run through a protocol end to end."""

from __future__ import annotations

import re
import textwrap
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, PositiveInt

from simlab.errors import SimlabError
from simlab.pipeline import run_protocol
from simlab.protocol import ProtocolError, load_protocol, parse_protocol
from simlab.recording.contract import open_recording
from simlab.registry import ARCHITECTURES
from simlab.subjects.architectures import Architecture, Network, SitePlan, register_architecture
from simlab.training.snapshots import read_shard


class SkipMLPSpec(BaseModel):
    """Two dense ReLU layers of ``width`` units; the second adds the first's output."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["skip_mlp"] = "skip_mlp"
    width: PositiveInt = 8


class SkipMLP(Architecture):
    """skip_0: h0 = relu(x W0 + b0); skip_1: h1 = relu(h0 W1 + b1 + h0) (a residual site)."""

    def sites(self):
        width = self.spec.width
        return (SitePlan("skip_0", "dense", width), SitePlan("skip_1", "dense", width, residual=True))

    def forward(self, site, x):
        h = site("skip_0", x)
        return site("skip_1", h, h)


@pytest.fixture
def skip_mlp():
    entry = register_architecture(SkipMLPSpec, SkipMLP, layout=None)
    yield entry
    if "skip_mlp" in ARCHITECTURES:
        ARCHITECTURES.unregister("skip_mlp")


def np_forward(params: dict, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each site's (input, output), by hand in float64."""
    p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in params.items()}
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    h0 = np.maximum(x @ p["skip_0"]["w"] + p["skip_0"]["b"], 0)
    h1 = np.maximum(h0 @ p["skip_1"]["w"] + p["skip_1"]["b"] + h0, 0)
    logits = h1 @ p["readout"]["w"] + p["readout"]["b"]
    return {"skip_0": (x, h0), "skip_1": (h0, h1), "readout": (h1, logits)}


PROTOCOL = """\
name: skip-extension
cohort:
  architecture: skip
  task: digits
  learning_rule: [sgdm, feedback_alignment]
  batch_size: 16
  replicates: 1
architectures:
  skip: {type: skip_mlp, width: 6}
training: {steps: 4}
recording: {sessions: 3, stimuli: 8}
rigs: {electrophysiology: {}}
analyses: {}
"""


def test_a_registered_architecture_runs_through_a_protocol(tmp_path, skip_mlp):
    path = tmp_path / "skip.yaml"
    path.write_text(PROTOCOL)
    assert load_protocol(path).architecture_spec("skip") == SkipMLPSpec(width=6)

    run = run_protocol(path, tmp_path / "run", progress=False, echo=lambda *args, **kwargs: None)
    recording = open_recording(run.recording("electrophysiology"))
    assert recording.sizes["subject"] == 2 and recording.sizes["layer"] == 3
    assert (recording.layer_name.values == ["skip_0", "skip_1", "readout"]).all()
    assert (recording.n_units.values == [6, 6, 10]).all()  # digits: 10 classes

    # the recorded activations are those of the trained snapshot, computed by hand: per
    # stimulus the mean over a site's units, then the mean over stimuli (no noise, all units)
    shards = [read_shard(path) for path in sorted((run.path / "snapshots").glob("*.npz"))]
    assert len(shards) == 2  # one population per learning rule
    for shard in shards:
        params = jax.tree.map(lambda a: a[0, -1], shard.params)  # its one replicate, last session
        sites = np_forward(params, run.stimuli("digits"))
        observed = recording.observation.sel(subject=shard.subject_ids[0], observable="activation_raw_mean")
        expected = [sites[name][1].mean(axis=1).mean() for name in ("skip_0", "skip_1", "readout")]
        np.testing.assert_allclose(observed.isel(session=-1).values, expected, rtol=1e-4, atol=1e-6)


def test_its_forward_pass_matches_numpy(skip_mlp):
    network = Network(SkipMLPSpec(width=5), 3, "backprop")
    x = np.random.default_rng(0).standard_normal((4, 7, 1)).astype(np.float32)
    params, _ = network.init(jax.random.key(0), jnp.asarray(x))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: (0.5 * rng.standard_normal(a.shape)).astype(np.float32), params)
    logits, sites = network.apply(params, {}, jnp.asarray(x))
    expected = np_forward(params, x)
    assert network.site_names == tuple(expected) == tuple(sites)
    for name, (inputs, outputs) in expected.items():
        np.testing.assert_allclose(np.asarray(sites[name].input), inputs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(sites[name].output), outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), expected["readout"][1], rtol=1e-5, atol=1e-5)


def _problems(text: str) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(ProtocolError) as info:
        parse_protocol(textwrap.dedent(text))
    return {p.location: (p.line, p.message) for p in info.value.problems}


def test_protocols_know_the_type_while_it_is_registered(skip_mlp):
    bad_key = PROTOCOL.replace("width: 6", "widht: 6")
    assert _problems(bad_key)["architectures.skip.widht"] == (
        9, "unknown key 'widht' (expected one of: type, width)"
    )
    no_type = PROTOCOL.replace("type: skip_mlp, ", "")
    assert _problems(no_type)["architectures.skip"] == (
        9, "missing key 'type' (one of: 'mlp', 'conv1d', 'knet', 'alexnet', 'resnet', 'skip_mlp')"
    )
    ARCHITECTURES.unregister("skip_mlp")
    assert _problems(PROTOCOL)["architectures.skip"] == (
        9, "unknown type 'skip_mlp' (expected one of: 'mlp', 'conv1d', 'knet', 'alexnet', 'resnet')"
    )


class _Declared(Architecture):
    """Declares skip_0 and skip_1; subclasses run them wrongly."""

    def sites(self):
        return (SitePlan("skip_0", "dense", 3), SitePlan("skip_1", "dense", 3))


class _SkipsASite(_Declared):
    def forward(self, site, x):
        return site("skip_0", x)


class _OutOfOrder(_Declared):
    def forward(self, site, x):
        return site("skip_0", site("skip_1", x))


class _UndeclaredShortcut(_Declared):
    def forward(self, site, x):
        h = site("skip_0", x)
        return site("skip_1", h, h)


@pytest.mark.parametrize(
    "implementation, message",
    [
        (_SkipsASite, "its forward pass ran the sites skip_0, but its sites() are skip_0, skip_1"),
        (_OutOfOrder, "runs site 'skip_1' out of turn: the sites are skip_0, skip_1, readout"),
        (_UndeclaredShortcut, "passes a shortcut to site 'skip_1', which sites() declares with residual=False"),
    ],
)
def test_a_forward_pass_that_disagrees_with_its_sites_is_refused(implementation, message):
    register_architecture(SkipMLPSpec, implementation, layout=None)
    try:
        network = Network(SkipMLPSpec(), 2, "backprop")
        with pytest.raises(SimlabError, match=re.escape("architecture 'skip_mlp': ") + ".*" + re.escape(message)):
            network.init(jax.random.key(0), jnp.zeros((1, 4)))
    finally:
        ARCHITECTURES.unregister("skip_mlp")


def test_registration_checks_what_it_is_given(skip_mlp):
    class NoType(BaseModel):
        width: int = 3

    with pytest.raises(SimlabError, match="field `type: Literal"):
        register_architecture(NoType, SkipMLP, layout=None)
    with pytest.raises(SimlabError, match="expected a subclass of Architecture"):
        register_architecture(SkipMLPSpec, object, layout=None, replace=True)
    with pytest.raises(SimlabError, match="layout='1d'"):
        register_architecture(SkipMLPSpec, SkipMLP, layout="1d", replace=True)
    with pytest.raises(SimlabError, match="'skip_mlp' is already registered"):
        register_architecture(SkipMLPSpec, SkipMLP, layout=None)
    assert ARCHITECTURES["skip_mlp"] is skip_mlp and skip_mlp.implementation is SkipMLP
