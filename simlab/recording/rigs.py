"""Rigs: simulated instruments that turn snapshots and a stimulus set into observables.

Every rig records each site (layer) of a subject at every session:
- ``synapse``: the layer's kernel (synapses; bias excluded) -> weight observables;
- ``electrophysiology``: the layer's outputs after the nonlinearity, one row per stimulus
  -> activation observables (statistics over units per stimulus, then the mean over stimuli);
- ``paired``: the layer-wise activity change, per stimulus
  (1/N_post) sum_{i in pre} sum_{j in post} dy_j/dx_i -> activity-change observables.

Imperfections: a seeded subset of units (synapses for the synapse rig; pre- and
post-synaptic units drawn independently for the paired rig), the same units at every session
(``chronic``) or new ones each session (``acute``), and measurement noise on each measured
value (synapse, unit response, or per-stimulus activity change; models in
:mod:`simlab.recording.noise`). Sampling is seeded by (rig seed, subject index in the cohort,
layer, pre/post[, session]) and noise by (rig seed, subject, layer, session), so
re-recording gives the same numbers, a schedule that keeps a session gives it the same values,
and another rig seed gives other draws.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from simlab.recording.observables import (
    Observable,
    activation_observables,
    activity_change_observables,
    observables_for,
    weight_observables,
)
from simlab.recording.noise import add_noise, poisson_rates
from simlab.specs.rigs import RigSpec
from simlab.subjects.architectures import Network

MEASURE_OF_RIG = {"synapse": "weight", "electrophysiology": "activation", "paired": "activity_change"}
POST, PRE = 0, 1  # which population of units a draw is for (the paired rig draws both)
SAMPLING_STREAM, SPIKE_STREAM = 0, 1  # keeps unit draws and spike counts on separate random streams


def units_to_record(available: int, units) -> int:
    """How many of ``available`` units a rig keeps: all, a count (at most all), or ceil(fraction * n)."""
    if units == "all":
        return available
    if isinstance(units, float):
        # round first: 0.07 * 100 is 7.000000000000001 in floating point, and ceil would give 8
        return max(1, min(available, math.ceil(round(units * available, 9))))
    return min(available, int(units))


def sample_units(
    available: int, units, seed: int, subject: int, layer: int, role: int = POST, session: int | None = None
) -> np.ndarray:
    """Sorted indices of the recorded units; ``session`` is given only for acute sampling."""
    count = units_to_record(available, units)
    if count == available:
        return np.arange(available)
    entropy = [seed, SAMPLING_STREAM, subject, layer, role] + ([] if session is None else [session])
    return np.sort(np.random.default_rng(entropy).choice(available, size=count, replace=False))


class PopulationRecording(NamedTuple):
    """A rig's output for the replicates of a population.

    ``observation`` [replicate, layer, session, observable]; per layer ``n_units`` (units or
    synapses available) and ``n_recorded``; per site the recorded unit indices
    ``units[name]`` [replicate, session, k] (and ``inputs[name]``, the pre-synaptic ones, for
    the paired rig); ``responses[name]`` the measured values the observables were computed
    from (only with ``keep_units``): [replicate, session, k] synapses, [replicate, session,
    stimulus, k] unit responses, or [replicate, session, stimulus] activity changes.
    """

    observation: np.ndarray
    n_units: np.ndarray
    n_recorded: np.ndarray
    units: dict
    inputs: dict
    responses: dict | None


OBSERVE = {
    "synapse": weight_observables,
    "electrophysiology": activation_observables,
    "paired": activity_change_observables,
}


class Rig:
    """One instrument with its settings.

    ``record(network, params, stimuli, subjects, sessions)`` records the replicates of a
    population: ``params`` has leading axes [replicate, session] (the sessions to record, in
    order); ``subjects`` holds each replicate's index in the cohort and ``sessions`` each
    recorded session's index in the run, which together seed unit samples and noise.
    Measuring (forward passes, sampling, noise) is one compiled program per network;
    statistics run on the host with numpy on CPU backends (XLA's CPU sort is slow) and inside
    the program elsewhere.
    """

    def __init__(self, spec: RigSpec):
        self.spec = spec
        self.measure = MEASURE_OF_RIG[spec.type]
        self.observables: tuple[Observable, ...] = observables_for(self.measure)
        self._programs: dict = {}

    def available_units(self, network: Network, input_shape) -> dict[str, tuple[int, int]]:
        """Per site: (post-synaptic units or synapses, pre-synaptic units) the rig can reach."""
        if self.spec.type == "synapse":
            sizes = network.kernel_sizes(input_shape)
            return {name: (sizes[name], 0) for name in network.site_names}
        shapes = network.site_shapes(input_shape)
        return {name: (int(np.prod(shapes[name][1])), int(np.prod(shapes[name][0]))) for name in network.site_names}

    def sample(self, network: Network, available: dict, subjects, sessions) -> tuple[dict, dict]:
        """Recorded unit indices per site, [replicate, session, k]: (post, pre), out of the
        ``available`` units of :meth:`available_units`."""
        spec = self.spec
        acute = spec.sampling == "acute"

        def indices(available_units: int, role: int, subject: int, layer: int) -> np.ndarray:
            if acute:
                return np.stack(
                    [sample_units(available_units, spec.units, spec.seed, subject, layer, role, int(s)) for s in sessions]
                )
            chronic = sample_units(available_units, spec.units, spec.seed, subject, layer, role)
            return np.tile(chronic, (len(sessions), 1))

        def draws(role: int, which: int) -> dict[str, np.ndarray]:
            return {
                name: np.stack([indices(available[name][which], role, subject, layer) for subject in subjects])
                for layer, name in enumerate(network.site_names)
            }

        post = draws(POST, 0)
        pre = draws(PRE, 1) if spec.type == "paired" else {}
        return post, pre

    def record(self, network: Network, params, stimuli: np.ndarray, subjects, sessions) -> PopulationRecording:
        sessions = np.asarray(sessions)
        available = self.available_units(network, stimuli.shape[1:])
        post, pre = self.sample(network, available, subjects, sessions)
        spike_counts = self.spec.noise_model == "poisson"  # drawn on the host, see recording.noise
        observe_inside = jax.default_backend() != "cpu" and not spike_counts
        program = self._program(network, observe_inside)
        observed, measured = program(
            params,
            jnp.asarray(stimuli),
            post,
            pre,
            jnp.asarray(subjects, jnp.int32),
            jnp.asarray(sessions, jnp.int32),
            jnp.float32(self.spec.noise),
        )
        measured = {name: np.asarray(values) for name, values in measured.items()}
        if spike_counts:
            measured = {
                name: self._spike_counts(measured[name], subjects, sessions, layer)
                for layer, name in enumerate(network.site_names)
            }
        observe = OBSERVE[self.spec.type]
        per_site = [
            np.asarray(observed[name]) if observe_inside else observe(measured[name], xp=np)
            for name in network.site_names
        ]
        return PopulationRecording(
            observation=np.stack(per_site, axis=1),
            n_units=np.array([available[name][0] for name in network.site_names]),
            n_recorded=np.array([post[name].shape[-1] for name in network.site_names]),
            units=post,
            inputs=pre,
            responses={name: measured[name] for name in network.site_names} if self.spec.keep_units else None,
        )

    def _spike_counts(self, rates, subjects, sessions, layer: int) -> np.ndarray:
        """Poisson noise on [replicate, session, ...] values, seeded per (subject, session, layer)."""
        noisy = np.empty_like(rates)
        for r, subject in enumerate(subjects):
            for s, session in enumerate(sessions):
                rng = np.random.default_rng([self.spec.seed, SPIKE_STREAM, int(subject), int(session), layer])
                noisy[r, s] = poisson_rates(rates[r, s], rng, self.spec.rate_gain, self.spec.count_window)
        return noisy

    def _program(self, network: Network, observe_inside: bool):
        """The compiled measuring function of this rig for one network (compiled once, reused).

        The noise scale is an argument (a grid of noise levels reuses one program); a
        noiseless gaussian rig leaves the random-number code out, which saves seconds of
        compilation. Measured values are returned only when they are needed (statistics on
        the host, or kept unit responses), so large tensors stay on the device otherwise.
        """
        spec = self.spec
        noisy = spec.noise > 0 and spec.noise_model != "poisson"
        return_measured = not observe_inside or spec.keep_units
        cache_key = (network, observe_inside, noisy, return_measured)
        if cache_key not in self._programs:
            measure_session = {"synapse": _synapse, "electrophysiology": _electrophysiology, "paired": _paired}[
                spec.type
            ](network)
            observe = OBSERVE[spec.type]
            shared_stimulus_axis = spec.type != "synapse"  # one gain per unit, shared by stimuli

            def one_session(params, stimuli, post, pre, subject, session, sigma):
                values = measure_session(params, stimuli, post, pre)
                if noisy:
                    base = jax.random.fold_in(jax.random.fold_in(jax.random.key(spec.seed), subject), session)
                    noisy_values = {}
                    for layer, name in enumerate(network.site_names):
                        value = values[name]
                        unit_shape = (1, *value.shape[1:]) if shared_stimulus_axis and value.ndim else value.shape
                        noisy_values[name] = add_noise(
                            spec.noise_model,
                            value,
                            jax.random.fold_in(base, layer),
                            sigma,
                            spec.rate_gain,
                            spec.count_window,
                            unit_shape,
                        )
                    values = noisy_values
                observed = {name: observe(v) for name, v in values.items()} if observe_inside else {}
                return observed, (values if return_measured else {})

            def one_subject(params, stimuli, post, pre, subject, sessions, sigma):
                return jax.vmap(one_session, in_axes=(0, None, 0, 0, None, 0, None))(
                    params, stimuli, post, pre, subject, sessions, sigma
                )

            def measure_population(params, stimuli, post, pre, subjects, sessions, sigma):
                return jax.vmap(one_subject, in_axes=(0, None, 0, 0, 0, None, None))(
                    params, stimuli, post, pre, subjects, sessions, sigma
                )

            self._programs[cache_key] = jax.jit(measure_population)
        return self._programs[cache_key]


def _synapse(network: Network):
    def measure(params, stimuli, units, _):
        """Kernel entries of the recorded synapses of one session: [k] per site."""
        return {name: params[name]["w"].reshape(-1)[units[name]] for name in network.site_names}

    return measure


def _electrophysiology(network: Network):
    def measure(params, stimuli, units, _):
        """Responses of the recorded units of one session: [stimulus, k] per site."""
        _, sites = network.apply(params, {}, stimuli)
        return {name: sites[name].output.reshape(len(stimuli), -1)[:, units[name]] for name in network.site_names}

    return measure


def _paired(network: Network):
    def measure(params, stimuli, post, pre):
        """Per stimulus and site: (1/N_post) sum_{i in pre} sum_{j in post} dy_j / dx_i."""
        _, sites = network.apply(params, {}, stimuli)
        probes = {name: jnp.zeros_like(site.input) for name, site in sites.items()}

        def recorded_output(probes):
            _, probed = network.apply(params, {}, stimuli, probes)
            return sum(
                jnp.sum(probed[name].output.reshape(len(stimuli), -1)[:, post[name]]) for name in network.site_names
            )

        sensitivity = jax.grad(recorded_output)(probes)
        return {
            name: jnp.sum(sensitivity[name].reshape(len(stimuli), -1)[:, pre[name]], axis=-1) / post[name].shape[0]
            for name in network.site_names
        }

    return measure
