"""A rig type added from outside the package: defined here, registered, named in a protocol.

``CalciumRig`` images each unit through an indicator whose fluorescence is the square of the
unit's activation (a stand-in for calcium imaging, where the signal grows faster than
activity). It is one class, registered once with ``register_rig``; a tiny protocol then names
it under ``rigs:``, and ``simlab run`` records it like a built-in. Its recording must pass the
contract, and its values must be what numpy computes by hand from the snapshots: the MLP's
forward pass, the squares of the sampled units, and the activation statistics (over units
per stimulus, then the mean over stimuli).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from simlab.errors import SimlabError
from simlab.pipeline import run_protocol
from simlab.protocol import parse_protocol, plan_cohort
from simlab.recording.contract import open_recording, problems
from simlab.recording.observables import activation_observables, observables_for
from simlab.recording.rigs import ElectrophysiologyRig, Rig, register_rig
from simlab.registry import RIGS
from simlab.rundir import RunDirectory
from simlab.specs.rigs import RIG_TYPES, RigSpec
from simlab.training.snapshots import read_shard


class CalciumRig(Rig):
    """Fluorescence of the recorded units for every stimulus: the square of their activation."""

    name = "calcium"
    measure = "activation"
    observe = staticmethod(activation_observables)
    unit_response_dims = ("stimulus", "unit")

    def measure_session(self, network, params, stimuli, units, inputs):
        _, sites = network.apply(params, {}, stimuli)
        return {
            name: jnp.square(sites[name].output.reshape(len(stimuli), -1)[:, units[name]])
            for name in network.site_names
        }


PROTOCOL = """\
name: calcium-test
cohort:
  architecture: [mlp]
  task: [digits]
  learning_rule: [sgdm]
  batch_size: [16]
  replicates: 2
architectures:
  mlp: {type: mlp, hidden: [12, 6]}
training:
  steps: 8
recording:
  sessions: 3
  stimuli: 10
rigs:
  calcium: {units: 5, seed: 4, keep_units: true}
  synapse: {}
analyses: {}
"""
HIDDEN = ["dense_0", "dense_1"]  # the ReLU sites; "readout" is linear
UNITS = {"dense_0": 12, "dense_1": 6, "readout": 10}


@pytest.fixture(scope="module")
def calcium_rig():
    """The calcium rig, registered for this module's tests only."""
    register_rig(CalciumRig)
    try:
        yield CalciumRig
    finally:
        RIGS.unregister("calcium")


@pytest.fixture(scope="module")
def calcium_run(calcium_rig, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calcium")
    protocol = folder / "calcium-test.yaml"
    protocol.write_text(PROTOCOL)
    run_protocol(protocol, folder / "run", progress=False, echo=lambda *args, **kwargs: None)
    return RunDirectory(folder / "run")


def nearest_percentile(x: np.ndarray, q: float) -> np.ndarray:
    """The rigs' default percentile, the reference's (TensorFlow contrib's "nearest"): the
    value at index round((n - 1) (1 - q / 100)), half to even, of the descending sort."""
    return -np.sort(-x, axis=-1)[..., int(np.round((x.shape[-1] - 1) * (1 - q / 100)))]


def numpy_statistics(x: np.ndarray) -> np.ndarray:
    """norm, mean, median, third quartile, var, skew, kurtosis over the last axis (float64)."""
    mean, median, std = x.mean(-1), nearest_percentile(x, 50), x.std(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(std > 0, 3 * (mean - median) / std, np.nan)
        kurtosis = np.where(std > 0, ((x - mean[..., None]) ** 4).mean(-1) / std**4, np.nan)
    return np.stack(
        [np.sqrt((x**2).sum(-1)), mean, median, nearest_percentile(x, 75), x.var(-1), skew, kurtosis], axis=-1
    )


def numpy_activation_observables(responses: np.ndarray) -> np.ndarray:
    """[stimulus, unit] -> the 21 activation observables: raw, abs, sq, each statistic over units
    per stimulus, averaged over stimuli."""
    return np.concatenate([numpy_statistics(f).mean(0) for f in (responses, np.abs(responses), responses**2)])


def mlp_outputs(params: dict, stimuli: np.ndarray) -> dict[str, np.ndarray]:
    """Each site's output by hand: dense layers with ReLU, then the linear readout (float64)."""
    h = stimuli.reshape(len(stimuli), -1).astype(np.float64)
    outputs = {}
    for name in [*HIDDEN, "readout"]:
        y = h @ params[name]["w"].astype(np.float64) + params[name]["b"]
        h = outputs[name] = np.maximum(y, 0) if name in HIDDEN else y
    return outputs


def test_a_registered_rig_type_is_a_rig_type_everywhere(calcium_rig):
    assert "calcium" in RIG_TYPES
    spec = RigSpec(type="calcium", units=3)
    assert isinstance(Rig(spec), CalciumRig)
    # the settings checks ask the class: it shows stimuli, and its values are not spike rates
    RigSpec(type="calcium", stimuli={"source": "noise"})
    with pytest.raises(ValueError, match="poisson counts spikes.*not calcium"):
        RigSpec(type="calcium", noise_model="poisson")
    # a protocol names it under rigs:, its type taken from the name
    assert parse_protocol(PROTOCOL).rigs["calcium"] == RigSpec(type="calcium", units=5, seed=4, keep_units=True)


def test_the_calcium_recording_passes_the_contract(calcium_run):
    path = calcium_run.recording("calcium")
    assert problems(path) == []
    ds = open_recording(path)
    settings = yaml.safe_load(ds.attrs["rig"])
    assert (settings["type"], settings["measure"], settings["units"], settings["seed"]) == ("calcium", "activation", 5, 4)
    assert list(ds["observable"].values) == [o.name for o in observables_for("activation")]
    assert ds["unit_response"].dims == ("subject", "layer", "session", "stimulus", "unit")
    assert ds["unit_index"].dims == ("subject", "layer", "unit")  # chronic
    np.testing.assert_array_equal(ds["n_units"].values, [list(UNITS.values())] * 2)
    np.testing.assert_array_equal(ds["n_recorded"].values, [[5, 5, 5]] * 2)
    # the default rigs are the built-ins only: the protocol's own rigs are what was recorded
    assert sorted(p.name for p in calcium_run.path.joinpath("recordings").glob("*.nc")) == ["calcium.nc", "synapse.nc"]


def test_the_calcium_recording_is_the_square_of_the_snapshots_activations(calcium_run):
    ds = open_recording(calcium_run.recording("calcium"))
    stimuli = calcium_run.stimuli("digits")
    (population,) = plan_cohort(parse_protocol(PROTOCOL)).populations  # the run's protocol
    shard = read_shard(calcium_run.shard(population.id))
    for replicate, subject in enumerate(population.subjects):
        recorded = ds.sel(subject=subject.id)
        for session in range(ds.sizes["session"]):
            params = {site: {k: v[replicate, session] for k, v in leaves.items()} for site, leaves in shard.params.items()}
            for layer, (name, output) in enumerate(mlp_outputs(params, stimuli).items()):
                units = recorded["unit_index"].values[layer]
                assert len(set(units)) == 5 and 0 <= units.min() and units.max() < UNITS[name]
                fluorescence = output[:, units] ** 2  # [stimulus, unit]
                at = dict(layer=layer, session=session)
                np.testing.assert_allclose(
                    recorded["unit_response"].sel(**at).values, fluorescence, rtol=1e-5, atol=1e-7, err_msg=name
                )
                np.testing.assert_allclose(
                    recorded["observation"].sel(**at).values,
                    numpy_activation_observables(fluorescence),
                    rtol=2e-4,
                    atol=1e-5,
                    equal_nan=True,
                    err_msg=name,
                )


def test_unregistering_takes_the_type_away(calcium_rig):
    """Unregistered (in a fixture's teardown), a type is unknown again; a built-in stays."""
    RIGS.unregister("calcium")
    try:
        with pytest.raises(ValueError, match="unknown rig type 'calcium'"):
            RigSpec(type="calcium")
        assert "synapse" in RIG_TYPES
    finally:
        register_rig(CalciumRig)


@pytest.mark.parametrize(
    "attributes, says",
    [
        ({"name": "bad", "measure": "fluorescence"}, "measure 'fluorescence' is not one of the recording contract's"),
        ({"name": "bad", "unit_response_dims": ("unit", "time")}, "unit_response_dims"),
        ({"name": "bad", "shows_stimuli": False}, "need shows_stimuli"),
        ({"name": "bad", "measure_session": Rig.measure_session}, "does not define measure_session"),
        ({"name": "electrophysiology"}, "already registered"),
    ],
)
def test_register_rig_checks_the_contract(attributes, says):
    broken = type("BrokenRig", (ElectrophysiologyRig,), {"counts_spikes": False, **attributes})
    with pytest.raises(SimlabError, match=says):
        register_rig(broken)
    assert "bad" not in RIGS and RIGS["electrophysiology"] is ElectrophysiologyRig


def test_register_rig_refuses_what_is_not_a_rig_class():
    with pytest.raises(SimlabError, match="subclass of simlab.recording.rigs.Rig"):
        register_rig(object)
