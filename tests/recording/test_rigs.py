"""Rigs against references computed outside the rig (numpy in float64, or jax.jacobian).

Each test takes a tiny network, stacks random parameters over three "sessions" (a leading
axis, as in a snapshot) and compares what a rig records with observables computed
independently from the same parameters and stimuli. A rig records a population: parameters
with leading axes [replicate, session] and one cohort index per replicate.

Every rig setting compiles a program per network and array shape, and compiling dominates
the run time, so networks are module constants and rigs are shared through ``rig()``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simlab.recording.observables import observables_for
from simlab.recording.rigs import POST, PRE, Rig, sample_units, units_to_record
from simlab.specs.rigs import RigSpec
from simlab.subjects.architectures import Network
from simlab.specs.subjects import Conv1DSpec, MLPSpec

RTOL, ATOL = 2e-4, 2e-5
N_SESSIONS = 3
N_CLASSES = 5
KINDS = ("synapse", "electrophysiology", "paired")

MLP = Network(MLPSpec(hidden=[12, 12]), N_CLASSES, "backprop")  # dense_1: 12 inputs, 12 outputs
CONV_STRIDE = 2
CONV = Network(Conv1DSpec(channels=[4], kernel_size=3, stride=CONV_STRIDE, hidden=[6]), N_CLASSES, "backprop")
WIDE = Network(MLPSpec(hidden=[200]), N_CLASSES, "backprop")  # dense_0: 40,000 synapses
INPUT_SHAPE = {MLP: (20, 1), CONV: (10, 2), WIDE: (200, 1)}  # [length, channels]

# Sampled recordings: two subjects (cohort indices 4 and 1) recorded as one population.
UNITS, SEED, SUBJECTS = 4, 3, (4, 1)

# position of each "{function}_{statistic}" in a weight or activation observation
STAT = {obs.name.split("_", 1)[1]: i for i, obs in enumerate(observables_for("weight"))}
RAW, ABS, SQ = 0, 1, 2  # activity-change observables


def stimuli_for(network: Network, n: int = 8, seed: int = 0) -> np.ndarray:
    """Random stimuli [n, length, channels] for a network."""
    return np.random.default_rng(seed).normal(size=(n, *INPUT_SHAPE[network])).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _jit(network: Network, method: str):
    return jax.jit(getattr(network, method))


@functools.lru_cache(maxsize=None)
def session_params(network: Network, seed: int = 0, n_sessions: int = N_SESSIONS):
    """Parameters of ``n_sessions`` independent initializations, with random biases so that
    ReLU patterns vary, stacked along a leading session axis (numpy float32, read-only)."""
    rng = np.random.default_rng([seed, 1])
    dummy = jnp.zeros((1, *INPUT_SHAPE[network]), jnp.float32)
    sessions = []
    for s in range(n_sessions):
        params, _ = _jit(network, "init")(jax.random.key(1000 * seed + s), dummy)
        sessions.append(
            {
                name: {"w": np.asarray(p["w"]), "b": rng.normal(0.0, 0.3, np.shape(p["b"])).astype(np.float32)}
                for name, p in params.items()
            }
        )
    stacked = {name: {k: np.stack([s[name][k] for s in sessions]) for k in ("w", "b")} for name in sessions[0]}
    for p in stacked.values():
        for value in p.values():
            value.setflags(write=False)
    return stacked


def at_session(params, s: int):
    return {name: {k: v[s] for k, v in p.items()} for name, p in params.items()}


def site_outputs(network: Network, params, stimuli) -> dict[str, np.ndarray]:
    """Each site's output [stimulus, unit] (flattened), from network.apply outside any rig."""
    _, sites = _jit(network, "apply")(params, {}, stimuli)
    return {name: np.asarray(site.output).reshape(len(stimuli), -1) for name, site in sites.items()}


@functools.lru_cache(maxsize=None)
def _rig(kind: str, units, noise: float, seed: int, **settings) -> Rig:
    return Rig(RigSpec(type=kind, units=units, noise=noise, seed=seed, **settings))


def rig(kind: str, units="all", noise: float = 0.0, seed: int = 0, **settings) -> Rig:
    """One shared Rig per setting (a rig compiles once per network and shape)."""
    return _rig(kind, units, float(noise), seed, **settings)


def record(rig: Rig, network: Network, replicates, stimuli, subjects):
    """Record replicates (each params [session, ...]) as one population -> SiteRecording
    with observation [replicate, layer, session, observable]."""
    population = jax.tree.map(lambda *a: np.stack(a), *replicates)
    result = rig.record(network, population, stimuli, list(subjects), np.arange(N_SESSIONS))
    assert result.observation.shape[:3] == (len(replicates), len(network.site_names), N_SESSIONS)
    assert result.observation.shape[3] == len(rig.observables)
    return result


# --------------------------------------------------------------------------- numpy references


def np_percentile(x, q: float) -> np.ndarray:
    """The reference's percentile (TensorFlow contrib, interpolation "nearest"): sort in
    descending order, take index round((n - 1) (1 - q / 100)), rounded half to even."""
    index = int(np.round((x.shape[-1] - 1) * (1 - q / 100)))
    return -np.sort(-x, axis=-1)[..., index]


def np_statistics(x) -> np.ndarray:
    """norm, mean, median, thirdquartile, var, skew, kurtosis over the last axis (float64)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(-1)
    median = np_percentile(x, 50)
    var = x.var(-1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(std > 0, 3 * (mean - median) / std, np.nan)
        kurtosis = np.where(std > 0, ((x - mean[..., None]) ** 4).mean(-1) / var**2, np.nan)
    return np.stack(
        [np.sqrt((x**2).sum(-1)), mean, median, np_percentile(x, 75), var, skew, kurtosis], -1
    )


def np_functions(x) -> list[np.ndarray]:
    x = np.asarray(x, np.float64)
    return [x, np.abs(x), x**2]


def np_weight_observables(w) -> np.ndarray:
    """w [n_synapses] -> 21 values, function-major."""
    return np.concatenate([np_statistics(f) for f in np_functions(w)])


def np_activation_observables(a) -> np.ndarray:
    """a [n_stimuli, n_units] -> 21 values: statistics over units, then the mean over stimuli."""
    return np.concatenate([np_statistics(f).mean(0) for f in np_functions(a)])


def np_activity_change_observables(v) -> np.ndarray:
    """v [n_stimuli] -> raw, abs, sq, each averaged over stimuli."""
    return np.array([f.mean() for f in np_functions(v)])


def np_mlp_forward(params, x):
    """Per site of a ReLU MLP: (input, pre-activation, output), in float64."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    out = {}
    for name, p in params.items():
        z = h @ p["w"].astype(np.float64) + p["b"]
        y = z if name == "readout" else np.maximum(z, 0.0)
        out[name] = (h, z, y)
        h = y
    return out


def np_dense_activity_change(x, z, w, relu: bool, pre=None, post=None) -> np.ndarray:
    """Per stimulus (1/N_post) sum_{i in pre} sum_{j in post} dy_j/dx_i of y = relu(x W + b),
    with dy_j/dx_i = W_ij relu'(z_j)."""
    pre = np.arange(w.shape[0]) if pre is None else pre
    post = np.arange(w.shape[1]) if post is None else post
    slope = (z > 0).astype(np.float64) if relu else np.ones_like(z)
    return (slope[:, post] @ w[np.ix_(pre, post)].T.astype(np.float64)).sum(-1) / len(post)


def mlp_activity_changes(params, stimuli, pre=None, post=None) -> dict[str, np.ndarray]:
    """Per site of MLP: the activity change of each stimulus (pre/post: indices per site)."""
    forward = np_mlp_forward(params, stimuli)
    return {
        name: np_dense_activity_change(
            x, z, params[name]["w"], name != "readout", (pre or {}).get(name), (post or {}).get(name)
        )
        for name, (x, z, _) in forward.items()
    }


# --------------------------------------------------------------------------- every unit, no noise


@pytest.mark.parametrize("network", [MLP, CONV], ids=["mlp", "conv"])
def test_synapse_rig_records_weight_statistics_of_each_kernel(network):
    stimuli = stimuli_for(network)
    params = session_params(network)
    result = record(rig("synapse"), network, [params], stimuli, [0])

    for layer, name in enumerate(network.site_names):
        kernel = params[name]["w"]
        for s in range(N_SESSIONS):
            expected = np_weight_observables(kernel[s].ravel())
            np.testing.assert_allclose(result.observation[0, layer, s], expected, rtol=RTOL, atol=ATOL)
    sizes = [params[name]["w"][0].size for name in network.site_names]
    np.testing.assert_array_equal(result.n_units, sizes)
    np.testing.assert_array_equal(result.n_recorded, sizes)


def test_synapse_rig_ignores_biases():
    stimuli = stimuli_for(MLP)
    params = session_params(MLP)
    shifted = {name: {"w": p["w"], "b": p["b"] + 5.0} for name, p in params.items()}
    a = record(rig("synapse"), MLP, [params], stimuli, [0]).observation
    b = record(rig("synapse"), MLP, [shifted], stimuli, [0]).observation
    np.testing.assert_array_equal(a, b)


def test_numpy_reference_forward_is_the_networks_forward():
    """The forward pass the paired references use is the network's own."""
    stimuli = stimuli_for(MLP)
    params = at_session(session_params(MLP), 1)
    _, sites = _jit(MLP, "apply")(params, {}, stimuli)
    ours = np_mlp_forward(params, stimuli)
    for name in MLP.site_names:
        np.testing.assert_allclose(sites[name].input, ours[name][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sites[name].output, ours[name][2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("network", [MLP, CONV], ids=["mlp", "conv"])
def test_electrophysiology_rig_records_activation_statistics_of_site_outputs(network):
    stimuli = stimuli_for(network)
    params = session_params(network)
    result = record(rig("electrophysiology"), network, [params], stimuli, [0])

    for s in range(N_SESSIONS):
        outputs = site_outputs(network, at_session(params, s), stimuli)
        for layer, name in enumerate(network.site_names):
            expected = np_activation_observables(outputs[name])
            np.testing.assert_allclose(result.observation[0, layer, s], expected, rtol=RTOL, atol=ATOL)
    units = [outputs[name].shape[1] for name in network.site_names]
    np.testing.assert_array_equal(result.n_units, units)
    np.testing.assert_array_equal(result.n_recorded, units)
    if network is CONV:
        assert units[0] == 5 * 4  # conv_0: 5 positions (length 10, stride 2, SAME) x 4 channels


def test_paired_rig_on_dense_relu_layers_matches_hand_jacobian():
    stimuli = stimuli_for(MLP)
    params = session_params(MLP)
    result = record(rig("paired"), MLP, [params], stimuli, [0])

    for s in range(N_SESSIONS):
        changes = mlp_activity_changes(at_session(params, s), stimuli)
        for layer, name in enumerate(MLP.site_names):
            np.testing.assert_allclose(
                result.observation[0, layer, s],
                np_activity_change_observables(changes[name]),
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"site {name}, session {s}",
            )
    np.testing.assert_array_equal(result.n_units, [12, 12, N_CLASSES])
    np.testing.assert_array_equal(result.n_recorded, [12, 12, N_CLASSES])


def _conv_net_layers(p):
    """The layers of CONV written independently, with XLA's own convolution (SAME padding)."""

    def conv_0(h):
        z = jax.lax.conv_general_dilated(
            h, p["conv_0"]["w"], (CONV_STRIDE,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
        )
        return jax.nn.relu(z + p["conv_0"]["b"])

    def dense_0(h):
        return jax.nn.relu(h @ p["dense_0"]["w"] + p["dense_0"]["b"])

    def readout(h):
        return h @ p["readout"]["w"] + p["readout"]["b"]

    return {"conv_0": conv_0, "dense_0": dense_0, "readout": readout}


@jax.jit
def _conv_net_activity_changes(p, stimuli):
    """Per site: its input, and per stimulus sum(jacobian of output by input) / N_post."""
    layers = _conv_net_layers(p)
    inputs, changes, h = {}, {}, stimuli
    for name, layer in layers.items():
        if name != "conv_0":
            h = h.reshape(len(h), -1)
        inputs[name] = h

        def change(x, layer=layer):
            jacobian = jax.jacobian(lambda v: layer(v[None])[0])(x)  # [*output, *input]
            n_post = math.prod(jacobian.shape[: jacobian.ndim - x.ndim])
            return jnp.sum(jacobian) / n_post

        changes[name] = jax.vmap(change)(h)
        h = layer(h)
    return inputs, changes


def test_paired_rig_on_conv_layer_matches_jax_jacobian():
    stimuli = stimuli_for(CONV)
    params = session_params(CONV)
    result = record(rig("paired"), CONV, [params], stimuli, [0])

    for s in range(N_SESSIONS):
        p = at_session(params, s)
        inputs, changes = _conv_net_activity_changes(p, stimuli)
        _, sites = _jit(CONV, "apply")(p, {}, stimuli)
        for layer, name in enumerate(CONV.site_names):
            # the reference network is the rig's network: same input at every site
            np.testing.assert_allclose(sites[name].input, inputs[name], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(
                result.observation[0, layer, s],
                np_activity_change_observables(np.asarray(changes[name])),
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"site {name}, session {s}",
            )
    np.testing.assert_array_equal(result.n_units, [20, 6, N_CLASSES])


# --------------------------------------------------------------------------- unit sampling


@pytest.mark.parametrize(
    "available, units, expected",
    [
        (10, "all", 10),
        (10, 3, 3),
        (10, 10, 10),
        (10, 11, 10),  # a count larger than the site: all of it
        (10, 1000, 10),
        (10, 1, 1),
        (10, 0.25, 3),  # ceil(2.5)
        (10, 0.5, 5),
        (10, 1.0, 10),
        (10, 0.01, 1),  # ceil(0.1): never zero units
        (7, 0.3, 3),  # ceil(2.1)
        (1, 0.5, 1),
    ],
)
def test_units_to_record(available, units, expected):
    assert units_to_record(available, units) == expected


@pytest.mark.parametrize("available, units, expected", [(100, 0.07, 7), (100, 0.14, 14), (200, 0.035, 7)])
def test_units_to_record_fraction_of_an_exact_product_is_not_rounded_up(available, units, expected):
    assert units_to_record(available, units) == expected


@pytest.mark.parametrize("available, units", [(50, 7), (50, 0.3), (50, 49), (3, 2), (1000, 0.01)])
@pytest.mark.parametrize("role", [POST, PRE])
def test_sample_units_are_sorted_unique_in_range(available, units, role):
    idx = sample_units(available, units, seed=3, subject=2, layer=1, role=role)
    assert len(idx) == units_to_record(available, units)
    assert np.issubdtype(idx.dtype, np.integer)
    assert np.all(np.diff(idx) > 0)  # sorted and unique
    assert idx.min() >= 0 and idx.max() < available


@pytest.mark.parametrize("units", ["all", 50, 51, 10_000, 1.0])
def test_sample_units_of_the_whole_site_are_all_indices(units):
    np.testing.assert_array_equal(sample_units(50, units, 0, 0, 0), np.arange(50))


def test_sample_units_is_seeded_by_rig_subject_layer_and_role():
    base = dict(available=100, units=10, seed=1, subject=2, layer=3, role=POST)
    draw = sample_units(**base)
    np.testing.assert_array_equal(draw, sample_units(**base))  # reproducible
    for key, other in [("seed", 2), ("subject", 3), ("layer", 4), ("role", PRE)]:
        assert not np.array_equal(draw, sample_units(**{**base, key: other})), key


def _two_subjects(network):
    """Two subjects' params (different initializations), recorded as cohort indices SUBJECTS."""
    return [session_params(network, seed=0), session_params(network, seed=1)]


def test_synapse_rig_records_each_subjects_sampled_synapses_at_every_session():
    stimuli = stimuli_for(MLP)
    replicates = _two_subjects(MLP)
    result = record(rig("synapse", UNITS, 0.0, SEED), MLP, replicates, stimuli, SUBJECTS)
    for r, (params, subject) in enumerate(zip(replicates, SUBJECTS)):
        for layer, name in enumerate(MLP.site_names):
            kernel = params[name]["w"].reshape(N_SESSIONS, -1)
            idx = sample_units(kernel.shape[1], UNITS, SEED, subject, layer)
            for s in range(N_SESSIONS):
                np.testing.assert_allclose(
                    result.observation[r, layer, s], np_weight_observables(kernel[s, idx]), rtol=RTOL, atol=ATOL
                )
    np.testing.assert_array_equal(result.n_units, [20 * 12, 12 * 12, 12 * N_CLASSES])
    np.testing.assert_array_equal(result.n_recorded, [UNITS] * 3)


def test_electrophysiology_rig_records_each_subjects_sampled_units_at_every_session():
    stimuli = stimuli_for(MLP)
    replicates = _two_subjects(MLP)
    result = record(rig("electrophysiology", UNITS, 0.0, SEED), MLP, replicates, stimuli, SUBJECTS)
    for r, (params, subject) in enumerate(zip(replicates, SUBJECTS)):
        for s in range(N_SESSIONS):
            outputs = site_outputs(MLP, at_session(params, s), stimuli)
            for layer, name in enumerate(MLP.site_names):
                idx = sample_units(outputs[name].shape[1], UNITS, SEED, subject, layer)
                np.testing.assert_allclose(
                    result.observation[r, layer, s],
                    np_activation_observables(outputs[name][:, idx]),
                    rtol=RTOL,
                    atol=ATOL,
                )
    np.testing.assert_array_equal(result.n_units, [12, 12, N_CLASSES])
    np.testing.assert_array_equal(result.n_recorded, [UNITS] * 3)


def test_paired_rig_draws_pre_and_post_units_independently():
    stimuli = stimuli_for(MLP)
    replicates = _two_subjects(MLP)
    result = record(rig("paired", UNITS, 0.0, SEED), MLP, replicates, stimuli, SUBJECTS)

    # dense_1 has 12 inputs and 12 outputs: one stream for both roles would give pre == post
    for subject in SUBJECTS:
        assert not np.array_equal(
            sample_units(12, UNITS, SEED, subject, 1, PRE), sample_units(12, UNITS, SEED, subject, 1, POST)
        )
    sizes = {"dense_0": (20, 12), "dense_1": (12, 12), "readout": (12, N_CLASSES)}  # (inputs, outputs)
    for r, (params, subject) in enumerate(zip(replicates, SUBJECTS)):
        pre, post = {}, {}
        for layer, (name, (n_in, n_out)) in enumerate(sizes.items()):
            pre[name] = sample_units(n_in, UNITS, SEED, subject, layer, PRE)
            post[name] = sample_units(n_out, UNITS, SEED, subject, layer, POST)
        for s in range(N_SESSIONS):
            changes = mlp_activity_changes(at_session(params, s), stimuli, pre, post)
            for layer, name in enumerate(MLP.site_names):
                np.testing.assert_allclose(
                    result.observation[r, layer, s],
                    np_activity_change_observables(changes[name]),
                    rtol=RTOL,
                    atol=ATOL,
                    err_msg=f"subject {subject}, site {name}, session {s}",
                )
    np.testing.assert_array_equal(result.n_units, [12, 12, N_CLASSES])
    np.testing.assert_array_equal(result.n_recorded, [UNITS] * 3)


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_units_do_not_depend_on_the_session(kind):
    """Chronic recording: reordering the sessions reorders the observations and nothing else."""
    stimuli = stimuli_for(MLP)
    replicates = _two_subjects(MLP)
    order = [2, 0, 1]
    shuffled = [jax.tree.map(lambda a: a[order], params) for params in replicates]
    direct = record(rig(kind, UNITS, 0.0, SEED), MLP, replicates, stimuli, SUBJECTS).observation
    reordered = record(rig(kind, UNITS, 0.0, SEED), MLP, shuffled, stimuli, SUBJECTS).observation
    np.testing.assert_allclose(reordered, direct[:, :, order], rtol=1e-6, atol=1e-7)


def test_same_rig_seed_gives_identical_recordings_and_another_seed_other_draws():
    stimuli = stimuli_for(MLP)
    replicates = _two_subjects(MLP)
    first = record(rig("synapse", UNITS, 0.0, SEED), MLP, replicates, stimuli, SUBJECTS)
    fresh = Rig(RigSpec(type="synapse", units=UNITS, seed=SEED))  # as in another process
    again = record(fresh, MLP, replicates, stimuli, SUBJECTS)
    np.testing.assert_array_equal(first.observation, again.observation)

    other = record(rig("synapse", UNITS, 0.0, SEED + 1), MLP, replicates, stimuli, SUBJECTS)
    np.testing.assert_array_equal(first.n_recorded, other.n_recorded)
    for r in range(len(SUBJECTS)):
        for layer in range(len(MLP.site_names)):
            assert not np.allclose(first.observation[r, layer], other.observation[r, layer]), (r, layer)


# --------------------------------------------------------------------------- measurement noise

SD = 0.5


def _silent(params):
    """The same network with every kernel 0: a synapse recording is then the noise alone."""
    return {name: {"w": np.zeros_like(p["w"]), "b": p["b"]} for name, p in params.items()}


def test_synapse_noise_on_silent_synapses_is_gaussian_with_the_set_sd():
    stimuli = stimuli_for(WIDE, n=4)
    silent = _silent(session_params(WIDE))
    result = record(rig("synapse", "all", SD, 1), WIDE, [silent, silent], stimuli, [0, 1])
    n = silent["dense_0"]["w"][0].size  # 40,000 synapses
    obs = result.observation[:, 0]  # dense_0: [subject, session, observable]
    assert np.all(np.abs(obs[..., STAT["raw_mean"]]) < 5 * SD / math.sqrt(n))
    np.testing.assert_allclose(obs[..., STAT["raw_var"]], SD**2, rtol=5 * math.sqrt(2 / n))
    np.testing.assert_allclose(obs[..., STAT["sq_mean"]], SD**2, rtol=5 * math.sqrt(2 / n))
    np.testing.assert_allclose(obs[..., STAT["raw_norm"]], SD * math.sqrt(n), rtol=5 * math.sqrt(0.5 / n))
    np.testing.assert_allclose(obs[..., STAT["abs_mean"]], SD * math.sqrt(2 / math.pi), rtol=0.01)
    np.testing.assert_allclose(obs[..., STAT["abs_median"]], SD * 0.6744898, rtol=0.02)
    np.testing.assert_allclose(obs[..., STAT["raw_kurtosis"]], 3.0, atol=5 * math.sqrt(24 / n))
    # fresh noise for every session and every subject, though the synapses are the same
    assert len(np.unique(obs[..., STAT["raw_var"]])) == 2 * N_SESSIONS


def test_synapse_noise_adds_its_variance_to_the_weights():
    """E[var(w + e)] = var(w) + sd^2 and E[mean(w + e)] = mean(w), for noise independent of w."""
    stimuli = stimuli_for(WIDE, n=4)
    params = session_params(WIDE)
    result = record(rig("synapse", "all", SD, 1), WIDE, [params, params], stimuli, [0, 1])
    for s in range(N_SESSIONS):
        w = params["dense_0"]["w"][s].astype(np.float64).ravel()
        n = w.size
        # sampling sd of var(e) is sd^2 sqrt(2/n); of the cross term 2 cov(w, e), 2 sd sqrt(var(w)/n)
        tolerance = 5 * (SD**2 * math.sqrt(2 / n) + 2 * SD * math.sqrt(w.var() / n))
        for r in range(2):
            recorded = result.observation[r, 0, s]
            assert abs(recorded[STAT["raw_var"]] - (w.var() + SD**2)) < tolerance, (r, s)
            assert abs(recorded[STAT["raw_mean"]] - w.mean()) < 5 * SD / math.sqrt(n), (r, s)


def test_noise_is_reproducible_and_seeded_by_the_rig_seed():
    stimuli = stimuli_for(WIDE, n=4)
    silent = _silent(session_params(WIDE))
    a = record(rig("synapse", "all", SD, 1), WIDE, [silent, silent], stimuli, [0, 1]).observation
    fresh = Rig(RigSpec(type="synapse", noise=SD, seed=1))  # as in another process
    np.testing.assert_array_equal(a, record(fresh, WIDE, [silent, silent], stimuli, [0, 1]).observation)
    other_seed = record(rig("synapse", "all", SD, 2), WIDE, [silent, silent], stimuli, [0, 1]).observation
    assert not np.any(np.isclose(a[..., STAT["raw_var"]], other_seed[..., STAT["raw_var"]], rtol=1e-7, atol=0))


def test_electrophysiology_noise_adds_its_variance_to_each_unit_response():
    stimuli = stimuli_for(WIDE, n=64)
    params = session_params(WIDE)
    sd = 1.0
    noisy = record(rig("electrophysiology", "all", sd, 1), WIDE, [params], stimuli, [0]).observation[0]
    for s in range(N_SESSIONS):
        clean = np_activation_observables(site_outputs(WIDE, at_session(params, s), stimuli)["dense_0"])
        # dense_0: 200 units x 64 stimuli; the mean over stimuli of the variance over units grows
        # by sd^2 (sampling sd of that: about 1.3% from the noise, 2% from the cross term)
        added = noisy[0, s, STAT["raw_var"]] - clean[STAT["raw_var"]]
        np.testing.assert_allclose(added, sd**2, rtol=0.1)
        shift = noisy[0, s, STAT["raw_mean"]] - clean[STAT["raw_mean"]]
        assert abs(shift) < 5 * sd / math.sqrt(200 * 64)


MLP_PRE_POST = {"dense_0": (20, 12), "dense_1": (12, 12), "readout": (12, N_CLASSES)}


@pytest.mark.parametrize("placement", ["terms", "total"])
def test_paired_noise_is_added_to_each_input_term_or_to_the_activity_change(placement):
    """``terms`` (the reference's): sd on each of the N_pre terms sum_j dy_j/dx_i, then the sum
    and the division by N_post, so the activity change carries sd sqrt(N_pre) / N_post;
    ``total``: sd on each per-stimulus activity change."""
    stimuli = stimuli_for(MLP, n=2000, seed=1)
    params = session_params(MLP)
    noisy = record(rig("paired", "all", 0.4, 1, noise_placement=placement), MLP, [params], stimuli, [0]).observation[0]
    n = len(stimuli)
    for s in range(N_SESSIONS):
        changes = mlp_activity_changes(at_session(params, s), stimuli)
        for layer, name in enumerate(MLP.site_names):
            n_pre, n_post = MLP_PRE_POST[name]
            sd = 0.4 * math.sqrt(n_pre) / n_post if placement == "terms" else 0.4
            clean = np_activity_change_observables(changes[name])
            # raw: mean(v + e) - mean(v) = mean(e);
            # sq: mean((v + e)^2) - mean(v^2) = sd^2 + mean(e^2 - sd^2) + 2 mean(v e)
            assert abs(noisy[layer, s, RAW] - clean[RAW]) < 5 * sd / math.sqrt(n), (name, s)
            tolerance = 5 * (sd**2 * math.sqrt(2 / n) + 2 * sd * math.sqrt(clean[SQ] / n))
            assert abs(noisy[layer, s, SQ] - clean[SQ] - sd**2) < tolerance, (name, s)
