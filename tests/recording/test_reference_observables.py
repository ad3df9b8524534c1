"""The 45 observables of a small run against the reference's definitions, written out here.

A tiny cohort (two ReLU MLPs of three sites each, two rules) is trained and recorded by the
three built-in rigs with their defaults (the reference-compatible settings: ``percentiles:
nearest``, ``noise_placement: terms``), once noise-free and once with Gaussian noise. Every
observable of every site, session and subject must equal what this file computes from the
snapshots with numpy in float64, following the reference (reference/nayebi2020.md and the
authors' TensorFlow observables code, ``tensorflow/Metrics/functions.py`` of
neuroailab/lr-identify), not simlab's functions:

- median and third quartile as ``tf.contrib.distributions.percentile`` with its default
  interpolation "nearest": the values sorted in descending order (``top_k``), the one at
  index ``round((n - 1) * (1 - q / 100))``, rounded half to even (``tf.round``);
- skew 3 (mean - median) / std with that median and the population std; kurtosis
  E[(x - mean)^4] / var^2; norm, mean, var (ddof 0);
- weights: over the kernel's entries; activations: over the units of each stimulus, then the
  mean over stimuli; activity change: per stimulus, the gradient of the summed outputs with
  respect to each input unit, J_i = sum_j dy_j/dx_i (here W_ij relu'(z_j), by hand), Gaussian
  noise added to each J_i, then sum_i and the division by the number of output units N_post;
  raw/abs/sq of that, averaged over stimuli;
- noise: additive Gaussian of sd ``NOISE`` on each measured value (synapse, unit response,
  input term J_i).

The noisy case needs the rig's own noise draws. This file reproduces them from the key
derivation documented in docs/rigs.md ("Noise draws"), with ``jax.random`` directly: for
rig seed r, the subject's index in the cohort, the session's index in the run and the site's
layer index, eps = normal(fold_in(fold_in(fold_in(key(r), subject), session), layer),
shape of the measured values) in float32. The draws are inputs to the definitions (like the
snapshots), not the thing under test; the test also checks that they matter.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from simlab.pipeline import run_protocol
from simlab.protocol import parse_protocol, plan_cohort
from simlab.recording.contract import open_recording, problems
from simlab.rundir import RunDirectory
from simlab.training.snapshots import read_shard

NOISE = 0.1
SEEDS = {"synapse": 3, "electrophysiology": 4, "paired": 5}  # the noisy rigs' seeds
PROTOCOL = f"""\
name: reference-observables
seed: 0
cohort:
  architecture: [deep]
  task: [digits]
  learning_rule: [sgdm, feedback_alignment]
  batch_size: [16]
  replicates: 2
architectures:
  deep: {{type: mlp, hidden: [16, 8]}}
training:
  steps: 30
recording:
  sessions: 3
  stimuli: 16
rigs:
  synapse: {{seed: 0}}
  electrophysiology: {{seed: 1}}
  paired: {{seed: 2}}
  synapse_noisy: {{type: synapse, noise: {NOISE}, seed: {SEEDS["synapse"]}}}
  electrophysiology_noisy: {{type: electrophysiology, noise: {NOISE}, seed: {SEEDS["electrophysiology"]}}}
  paired_noisy: {{type: paired, noise: {NOISE}, seed: {SEEDS["paired"]}}}
analyses: {{}}
"""
SITES = ("dense_0", "dense_1", "readout")  # dense_0 and dense_1 are ReLU, the readout linear
FUNCTIONS = ("raw", "abs", "sq")
STATISTICS = ("norm", "mean", "median", "thirdquartile", "var", "skew", "kurtosis")
RTOL, ATOL = 2e-4, 1e-6  # float32 arithmetic in simlab, float64 here


# --------------------------------------------------------------------------- the reference, by hand


def tf_percentile(x: np.ndarray, q: float) -> np.ndarray:
    """tf.contrib.distributions.percentile(x, q, axis=-1), interpolation "nearest"."""
    descending = -np.sort(-x, axis=-1)
    return descending[..., int(np.round((x.shape[-1] - 1) * (1.0 - q / 100.0)))]


def linear_percentile(x: np.ndarray, q: float) -> np.ndarray:
    return np.percentile(x, q, axis=-1)


def stats(x: np.ndarray, percentile=tf_percentile) -> np.ndarray:
    """The seven statistics over the last axis, in STATISTICS order."""
    mean, var = x.mean(-1), x.var(-1)
    median, std = percentile(x, 50.0), x.std(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = 3.0 * (mean - median) / std
        kurtosis = ((x - mean[..., None]) ** 4).mean(-1) / var**2
    out = np.stack([np.sqrt((x**2).sum(-1)), mean, median, percentile(x, 75.0), var, skew, kurtosis], -1)
    return np.where(np.isfinite(out), out, np.nan)


def functions(x: np.ndarray) -> list[np.ndarray]:
    return [x, np.abs(x), x**2]


def weight_observables(kernel: np.ndarray, percentile=tf_percentile) -> np.ndarray:
    flat = kernel.reshape(-1)
    return np.concatenate([stats(f, percentile) for f in functions(flat)])


def activation_observables(outputs: np.ndarray, percentile=tf_percentile) -> np.ndarray:
    """outputs [stimulus, unit]: statistics over units per stimulus, then the mean over stimuli."""
    return np.concatenate([stats(f, percentile).mean(0) for f in functions(outputs)])


def activity_change_observables(per_stimulus: np.ndarray) -> np.ndarray:
    return np.array([f.mean() for f in functions(per_stimulus)])


def forward(params: dict, stimuli: np.ndarray) -> dict:
    """Per site: (pre-activation z, output y) of the MLP, float64."""
    h = stimuli.reshape(len(stimuli), -1).astype(np.float64)
    out = {}
    for name in SITES:
        z = h @ params[name]["w"].astype(np.float64) + params[name]["b"].astype(np.float64)
        h = z if name == "readout" else np.maximum(z, 0.0)
        out[name] = (z, h)
    return out


def input_terms(params: dict, site: str, z: np.ndarray) -> np.ndarray:
    """J[stimulus, i] = sum_j dy_j/dx_i for y = relu(x W + b) (the readout: y = x W + b)."""
    slope = np.ones_like(z) if site == "readout" else (z > 0).astype(np.float64)
    return slope @ params[site]["w"].astype(np.float64).T


def noise(seed: int, subject: int, session: int, layer: int, shape) -> np.ndarray:
    """The rig's Gaussian draws (docs/rigs.md, "Noise draws"), sd 1."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), subject), session), layer)
    return np.asarray(jax.random.normal(key, shape, np.float32), np.float64)


def reference(params, stimuli, subject, session, sd, percentile=tf_percentile, paired_on_total=False):
    """measure -> [site, observable] by the reference's definitions (noise sd ``sd``)."""
    out = {"weight": [], "activation": [], "activity_change": []}
    for layer, (site, (z, y)) in enumerate(forward(params, stimuli).items()):
        w = params[site]["w"].astype(np.float64)
        if sd:
            w = w + sd * noise(SEEDS["synapse"], subject, session, layer, (w.size,)).reshape(w.shape)
            y = y + sd * noise(SEEDS["electrophysiology"], subject, session, layer, y.shape)
        terms = input_terms(params, site, z)
        n_post = z.shape[1]
        if sd and not paired_on_total:
            terms = terms + sd * noise(SEEDS["paired"], subject, session, layer, terms.shape)
        change = terms.sum(-1) / n_post
        if sd and paired_on_total:  # not the reference: one draw per stimulus on the result
            change = change + sd * noise(SEEDS["paired"], subject, session, layer, change.shape)
        out["weight"].append(weight_observables(w, percentile))
        out["activation"].append(activation_observables(y, percentile))
        out["activity_change"].append(activity_change_observables(change))
    return {measure: np.stack(values) for measure, values in out.items()}


# --------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDirectory:
    folder = tmp_path_factory.mktemp("reference")
    protocol = folder / "reference-observables.yaml"
    protocol.write_text(PROTOCOL)
    run_protocol(protocol, folder / "run", progress=False, echo=lambda *args, **kwargs: None)
    return RunDirectory(folder / "run")


MEASURE_OF = {"synapse": "weight", "electrophysiology": "activation", "paired": "activity_change"}


def recorded(run: RunDirectory, noisy: bool) -> dict:
    """measure -> observation [subject, layer, session, observable] of the run's recordings."""
    suffix = "_noisy" if noisy else ""
    return {
        measure: open_recording(run.recording(rig + suffix))["observation"].values.astype(np.float64)
        for rig, measure in MEASURE_OF.items()
    }


def expected(run: RunDirectory, noisy: bool, **options) -> dict:
    """measure -> the reference's values, laid out like ``recorded``."""
    stimuli = run.stimuli("digits")
    plan = plan_cohort(parse_protocol(PROTOCOL))
    n_sessions = 3
    out = {m: np.full((len(plan.subjects), len(SITES), n_sessions, 3 if m == "activity_change" else 21), np.nan)
           for m in MEASURE_OF.values()}
    for population in plan.populations:
        shard = read_shard(run.shard(population.id))
        for replicate, subject in enumerate(population.subjects):
            for session in range(n_sessions):
                params = {
                    site: {k: v[replicate, session] for k, v in leaves.items()} for site, leaves in shard.params.items()
                }
                values = reference(params, stimuli, subject.index, session, NOISE if noisy else 0.0, **options)
                for measure, v in values.items():
                    out[measure][subject.index, :, session] = v
    return out


@pytest.mark.parametrize("noisy", [False, True], ids=["noise-free", "gaussian-noise"])
def test_every_observable_equals_the_reference_definitions(run, noisy):
    got, want = recorded(run, noisy), expected(run, noisy)
    assert sum(v.shape[-1] for v in got.values()) == 45
    for measure in MEASURE_OF.values():
        names = open_recording(run.recording(next(r for r, m in MEASURE_OF.items() if m == measure)))["observable"]
        assert got[measure].shape == want[measure].shape
        for k, name in enumerate(names.values):
            np.testing.assert_allclose(
                got[measure][..., k], want[measure][..., k], rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name
            )


def test_the_recordings_pass_the_contract_and_state_the_settings(run):
    for rig in MEASURE_OF:
        for suffix in ("", "_noisy"):
            path = run.recording(rig + suffix)
            assert problems(path) == []
            attrs = open_recording(path).attrs["rig"]
            assert "percentiles: nearest" in attrs and "noise_placement: terms" in attrs


def test_the_comparison_tells_the_definitions_apart(run):
    """Not vacuous: linear percentiles, noise on the total and no noise all give other values."""
    clean, noisy = recorded(run, False), recorded(run, True)
    linear = expected(run, False, percentile=linear_percentile)
    medians = [i for i, (f, s) in enumerate((f, s) for f in FUNCTIONS for s in STATISTICS) if s == "median"]
    for measure in ("weight", "activation"):
        assert not np.allclose(clean[measure][..., medians], linear[measure][..., medians], rtol=RTOL, atol=ATOL)
        assert not np.allclose(noisy[measure], clean[measure], rtol=RTOL, atol=ATOL, equal_nan=True)
    on_total = expected(run, True, paired_on_total=True)["activity_change"]
    assert not np.allclose(noisy["activity_change"], on_total, rtol=RTOL, atol=ATOL)
    assert not np.allclose(noisy["activity_change"], clean["activity_change"], rtol=RTOL, atol=ATOL)
