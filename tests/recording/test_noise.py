"""Measurement-noise models against their equations (simlab.recording.noise's docstring).

Each model is checked on large samples of one true value x (including negative x and x = 0):
the sample mean and variance must match E[y] and Var[y] within 5 standard errors, where the
standard error of a sample variance is sqrt((mu4 - Var^2) / n) with mu4 the model's fourth
central moment. Then the same equations through a Rig: a tiny network whose kernels (synapse
rig) or activations (electrophysiology rig, zero kernels and constant biases) are constants,
so every recorded value is x plus the noise.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError

from simlab.recording.noise import add_noise, poisson_rates
from simlab.recording.observables import activation_observables, observables_for, weight_observables
from simlab.recording.rigs import Rig
from simlab.specs.rigs import RigSpec
from simlab.subjects.architectures import Network
from simlab.specs.subjects import MLPSpec

N = 200_000
XS = (-1.5, 0.0, 0.7, 3.0)
Z = 5.0  # standard errors


def moments(model: str, x: float, sigma: float, g: float = 20.0, t: float = 0.5) -> tuple[float, float, float]:
    """(E[y], Var[y], fourth central moment of y) of one measured value x."""
    if model == "gaussian":
        return x, sigma**2, 3 * sigma**4
    if model == "gain":
        return x, x**2 * sigma**2, 3 * x**4 * sigma**4
    if model == "lognormal":  # y = x Z, Z = exp(s eps - s^2 / 2): E[Z^k] = exp(k (k - 1) s^2 / 2)
        s2 = sigma**2
        mu4 = math.exp(6 * s2) - 4 * math.exp(3 * s2) + 6 * math.exp(s2) - 3
        return x, x**2 * (math.exp(s2) - 1), x**4 * mu4
    if model == "poisson":  # y = n / (g T), n ~ Poisson(lambda): Var lambda, mu4 lambda + 3 lambda^2
        scale = g * t
        lam = scale * max(x, 0.0)
        return max(x, 0.0), lam / scale**2, (lam + 3 * lam**2) / scale**4
    raise ValueError(model)


def assert_mean_and_var(y, mean, var, mu4, n_var=None, label=""):
    """Sample mean and (population) variance of ``y`` against E and Var within Z standard errors.

    ``n_var``: the number of values the variance is taken over (its ddof-0 bias (n-1)/n is
    applied), default all of them."""
    y = np.asarray(y, np.float64).ravel()
    n = len(y)
    n_var = n if n_var is None else n_var
    assert abs(y.mean() - mean) <= Z * math.sqrt(var / n) + 1e-9 * max(1.0, abs(mean)), (label, y.mean(), mean)
    expected_var = var * (n_var - 1) / n_var
    assert abs(y.var() - expected_var) <= Z * math.sqrt(max(mu4 - var**2, 0.0) / n) + 1e-12, (label, y.var(), var)


def key(seed: int = 0):
    return jax.random.key(seed)


# --------------------------------------------------------------------------- add_noise


@pytest.mark.parametrize("x", XS)
@pytest.mark.parametrize("model, sigma", [("gaussian", 0.4), ("gain", 0.3), ("lognormal", 0.5)])
def test_add_noise_mean_and_variance_follow_the_equations(model, sigma, x):
    values = jnp.full((N,), x, jnp.float32)
    y = np.asarray(add_noise(model, values, key(1), sigma, 20.0, 0.5, values.shape))
    assert y.shape == (N,) and y.dtype == np.float32
    assert_mean_and_var(y, *moments(model, x, sigma), label=f"{model} x={x}")


@pytest.mark.parametrize("model", ["gain", "lognormal"])
def test_proportional_noise_of_a_zero_value_is_zero(model):
    values = jnp.zeros((1000,), jnp.float32)
    y = np.asarray(add_noise(model, values, key(2), 0.5, 20.0, 0.5, values.shape))
    np.testing.assert_array_equal(y, 0.0)


@pytest.mark.parametrize("x", [-2.0, -0.01, 0.3, 4.0])
def test_lognormal_noise_keeps_the_sign(x):
    values = jnp.full((N,), x, jnp.float32)
    y = np.asarray(add_noise("lognormal", values, key(3), 1.0, 20.0, 0.5, values.shape))
    assert np.all(np.sign(y) == np.sign(x))


def test_gain_is_shared_along_the_axes_set_to_one_in_unit_shape():
    """values [stimulus, unit] with unit_shape (1, unit): one gain per unit (column)."""
    rows = np.array([-2.0, -0.5, 0.25, 1.0, 3.0], np.float32)  # one x per stimulus
    columns = 40_000
    values = jnp.asarray(np.repeat(rows[:, None], columns, axis=1))
    sigma = 0.3
    y = np.asarray(add_noise("gain", values, key(4), sigma, 20.0, 0.5, (1, columns)))
    factor = y[3] / rows[3]  # the gain of each column, read off the row with x = 1
    np.testing.assert_allclose(y, rows[:, None] * factor[None, :], rtol=1e-6, atol=0)
    # gains differ between columns: 1 + sigma * eps with eps ~ N(0, 1)
    assert_mean_and_var(factor, *moments("gain", 1.0, sigma), label="gains")

    # with unit_shape equal to the values' shape every value has its own gain
    own = np.asarray(add_noise("gain", values, key(4), sigma, 20.0, 0.5, values.shape))
    own_factor = own / rows[:, None]
    assert not np.allclose(own_factor[0], own_factor[3])
    assert_mean_and_var(own_factor, *moments("gain", 1.0, sigma), label="independent gains")


@pytest.mark.parametrize("model", ["gaussian", "gain", "lognormal"])
def test_zero_sigma_is_the_identity(model):
    values = jnp.asarray(np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32))
    y = add_noise(model, values, key(5), 0.0, 20.0, 0.5, (1, 32))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(values))


def test_add_noise_is_a_function_of_its_key():
    values = jnp.full((1000,), 0.5, jnp.float32)
    for model in ("gaussian", "gain", "lognormal"):
        a = np.asarray(add_noise(model, values, key(6), 0.3, 20.0, 0.5, values.shape))
        b = np.asarray(add_noise(model, values, key(6), 0.3, 20.0, 0.5, values.shape))
        c = np.asarray(add_noise(model, values, key(7), 0.3, 20.0, 0.5, values.shape))
        np.testing.assert_array_equal(a, b)
        assert not np.any(a == c), model


def test_add_noise_leaves_poisson_to_poisson_rates():
    with pytest.raises(ValueError, match="poisson"):
        add_noise("poisson", jnp.zeros(3), key(0), 0.0, 20.0, 0.5, (3,))


# --------------------------------------------------------------------------- poisson_rates


@pytest.mark.parametrize("g, t", [(20.0, 0.5), (7.5, 0.2)])
@pytest.mark.parametrize("x", [-1.5, 0.0, 0.05, 0.8, 3.0])
def test_poisson_rates_mean_variance_and_integer_counts(x, g, t):
    values = np.full((N,), x, np.float32)
    y = poisson_rates(values, np.random.default_rng(8), g, t)
    assert y.shape == (N,) and y.dtype == np.float32
    counts = y.astype(np.float64) * g * t
    np.testing.assert_allclose(counts, np.round(counts), rtol=0, atol=1e-4)  # y = n / (g T), n integral
    assert counts.min() >= 0
    if x <= 0:
        np.testing.assert_array_equal(y, 0.0)
    assert_mean_and_var(y, *moments("poisson", x, 0.0, g, t), label=f"poisson x={x} gT={g * t}")


def test_poisson_rates_of_mixed_values_and_reproducibility():
    values = np.tile(np.array([-1.0, 0.0, 0.4, 2.0], np.float32), (N // 4, 1))  # [n, 4]
    a = poisson_rates(values, np.random.default_rng(9), 20.0, 0.5)
    assert a.shape == values.shape
    np.testing.assert_array_equal(a[:, :2], 0.0)
    for column, x in [(2, 0.4), (3, 2.0)]:
        assert_mean_and_var(a[:, column], *moments("poisson", x, 0.0), label=f"column {column}")
    np.testing.assert_array_equal(a, poisson_rates(values, np.random.default_rng(9), 20.0, 0.5))
    assert not np.array_equal(a, poisson_rates(values, np.random.default_rng(10), 20.0, 0.5))


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("kind", ["synapse", "paired"])
def test_poisson_needs_an_electrophysiology_rig(kind):
    with pytest.raises(ValidationError, match="electrophysiology"):
        RigSpec(type=kind, noise_model="poisson")


def test_poisson_rejects_a_noise_scale():
    with pytest.raises(ValidationError, match="rate_gain and count_window"):
        RigSpec(type="electrophysiology", noise_model="poisson", noise=0.1)
    RigSpec(type="electrophysiology", noise_model="poisson")  # noise 0 is fine


@pytest.mark.parametrize(
    "bad",
    [{"noise": -0.1}, {"noise_model": "uniform"}, {"rate_gain": 0.0}, {"count_window": -1.0}, {"rate_gain": -5.0}],
)
def test_bad_noise_settings_are_rejected(bad):
    with pytest.raises(ValidationError):
        RigSpec(type="electrophysiology", **bad)


# --------------------------------------------------------------------------- through a rig

HIDDEN, N_IN, N_CLASSES = 1000, 40, 5
NET = Network(MLPSpec(hidden=[HIDDEN]), N_CLASSES, "backprop")  # dense_0: 40,000 synapses, 1000 units
N_STIMULI, N_SESSIONS = 24, 2
WEIGHT = {"dense_0": 0.5, "readout": -0.5}  # the constant kernels (synapse rig)
ACTIVATION = {"dense_0": 0.8, "readout": -0.5}  # zero kernels, these biases: the site outputs
STAT = {o.name.split("_", 1)[1]: i for i, o in enumerate(observables_for("weight"))}
SIGMA = {"gaussian": 0.3, "gain": 0.3, "lognormal": 0.4, "poisson": 0.0}
RATE_GAIN, COUNT_WINDOW = 20.0, 0.5


def constant_params(kernels: dict, biases: dict) -> dict:
    """One session's parameters with every kernel entry and bias of a site set to a constant."""
    shapes = {"dense_0": (N_IN, HIDDEN), "readout": (HIDDEN, N_CLASSES)}
    return {
        name: {
            "w": np.full(shape, kernels[name], np.float32),
            "b": np.full(shape[1], biases[name], np.float32),
        }
        for name, shape in shapes.items()
    }


def population(*replicates: dict) -> dict:
    """Parameters [replicate, session, ...]: each replicate's constants at every session."""
    return jax.tree.map(lambda *a: np.stack([np.stack([v] * N_SESSIONS) for v in a]), *replicates)


STIMULI = np.random.default_rng(0).normal(size=(N_STIMULI, N_IN, 1)).astype(np.float32)
SYNAPSE_PARAMS = population(
    constant_params(WEIGHT, {"dense_0": 0.0, "readout": 0.0}),
    constant_params({"dense_0": 0.0, "readout": 0.0}, {"dense_0": 0.0, "readout": 0.0}),  # silent synapses
)
EPHYS_PARAMS = population(constant_params({"dense_0": 0.0, "readout": 0.0}, ACTIVATION))


def test_constant_network_outputs_are_the_biases():
    _, sites = NET.apply(jax.tree.map(lambda a: a[0, 0], EPHYS_PARAMS), {}, STIMULI)
    np.testing.assert_array_equal(np.asarray(sites["dense_0"].output), np.float32(0.8))
    np.testing.assert_array_equal(np.asarray(sites["readout"].output), np.float32(-0.5))


def spec(kind: str, model: str, seed: int = 1) -> RigSpec:
    return RigSpec(
        type=kind,
        noise_model=model,
        noise=SIGMA[model],
        seed=seed,
        keep_units=True,
        rate_gain=RATE_GAIN,
        count_window=COUNT_WINDOW,
    )


def record_synapses(rig_spec: RigSpec):
    return Rig(rig_spec).record(NET, SYNAPSE_PARAMS, STIMULI, [0, 1], np.array([0, 1]))


def record_ephys(rig_spec: RigSpec):
    return Rig(rig_spec).record(NET, EPHYS_PARAMS, STIMULI, [2], np.array([3, 5]))


@functools.lru_cache(maxsize=None)
def recorded(kind: str, model: str):
    """The recording of the constant network by the rig of ``spec(kind, model)`` (seed 1), made once:
    a rig compiles a program per setting, and compiling dominates the run time."""
    return (record_synapses if kind == "synapse" else record_ephys)(spec(kind, model))


@pytest.mark.parametrize("model", ["gaussian", "gain", "lognormal"])
def test_synapse_rig_noise_on_constant_kernels_follows_the_equations(model):
    sigma = SIGMA[model]
    result = recorded("synapse", model)
    assert result.observation.shape == (2, 2, N_SESSIONS, 21)
    for layer, name in enumerate(NET.site_names):
        for r, x in enumerate([WEIGHT[name], 0.0]):
            for s in range(N_SESSIONS):
                values = result.responses[name][r, s]
                mean, var, mu4 = moments(model, x, sigma)
                assert_mean_and_var(values, mean, var, mu4, label=f"{model} {name} x={x}")
                obs = result.observation[r, layer, s]
                n = values.size
                # the recorded statistics are those of the noisy synapses
                assert abs(obs[STAT["raw_mean"]] - mean) <= Z * math.sqrt(var / n) + 1e-6
                se_var = Z * math.sqrt(max(mu4 - var**2, 0.0) / n)
                assert abs(obs[STAT["raw_var"]] - var * (n - 1) / n) <= se_var + 1e-6, (name, r, s)
                if model == "lognormal":
                    assert np.all(np.sign(values) == np.sign(x))  # sign kept, 0 stays 0
                if x == 0.0 and model != "gaussian":
                    assert obs[STAT["raw_var"]] == 0.0 and obs[STAT["raw_norm"]] == 0.0
    # each synapse is its own unit: fresh gain and noise for every synapse, session and subject
    d0 = result.responses["dense_0"][0]
    assert len(np.unique(d0[0])) > d0.shape[1] // 2
    assert not np.array_equal(d0[0], d0[1])


@pytest.mark.parametrize("model", ["gaussian", "gain", "lognormal", "poisson"])
def test_electrophysiology_rig_noise_on_constant_activations_follows_the_equations(model):
    sigma = SIGMA[model]
    result = recorded("electrophysiology", model)
    shared = model == "gain"  # one gain per unit, shared by the stimuli
    for layer, name in enumerate(NET.site_names):
        x = ACTIVATION[name]
        mean, var, mu4 = moments(model, x, sigma, RATE_GAIN, COUNT_WINDOW)
        for s in range(N_SESSIONS):
            values = result.responses[name][0, s]  # [stimulus, unit]
            n_units = values.shape[1]
            assert values.shape == (N_STIMULI, n_units)
            if shared:
                np.testing.assert_array_equal(values, np.broadcast_to(values[:1], values.shape))
                independent = values[0]
            else:
                independent = values
            assert_mean_and_var(independent, mean, var, mu4, label=f"{model} {name}")
            # activation observables: statistics over units, then the mean over stimuli
            obs = result.observation[0, layer, s]
            n = independent.size
            assert abs(obs[STAT["raw_mean"]] - mean) <= Z * math.sqrt(var / n) + 1e-6, (name, s)
            # the mean over stimuli of per-stimulus variances over the units: independent noise
            # averages N_STIMULI independent variances, a shared gain gives the same one each time
            se_var = Z * math.sqrt(max(mu4 - var**2, 0.0) / n)
            expected_var = var * (n_units - 1) / n_units
            assert abs(obs[STAT["raw_var"]] - expected_var) <= se_var + 1e-6, (name, s, obs[STAT["raw_var"]], expected_var)
            if model == "poisson":
                counts = values.astype(np.float64) * RATE_GAIN * COUNT_WINDOW
                np.testing.assert_allclose(counts, np.round(counts), rtol=0, atol=1e-4)
                if x <= 0:
                    np.testing.assert_array_equal(values, 0.0)
            if model == "lognormal":
                assert np.all(np.sign(values) == np.sign(x))
    # noise is fresh at every session
    assert not np.array_equal(result.responses["dense_0"][0, 0], result.responses["dense_0"][0, 1])


# noise drawn in the compiled program (per synapse; per unit and stimulus) and on the host (spike counts)
@pytest.mark.parametrize(
    "kind, model", [("synapse", "gain"), ("electrophysiology", "lognormal"), ("electrophysiology", "poisson")]
)
def test_rig_noise_is_reproducible_by_seed(kind, model):
    record = record_synapses if kind == "synapse" else record_ephys
    first = recorded(kind, model)  # seed 1
    again = record(spec(kind, model, seed=1))  # a fresh rig, as in another process
    other = record(spec(kind, model, seed=2))
    np.testing.assert_array_equal(first.observation, again.observation)
    for name in NET.site_names:
        np.testing.assert_array_equal(first.responses[name], again.responses[name])
    real = first.responses["dense_0"][0]  # non-zero true values: noise visible
    assert not np.array_equal(real, other.responses["dense_0"][0])
    observe = weight_observables if kind == "synapse" else activation_observables
    np.testing.assert_allclose(
        first.observation[:, 0], observe(first.responses["dense_0"], xp=np), rtol=1e-6, atol=1e-7
    )
