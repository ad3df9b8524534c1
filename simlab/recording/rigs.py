"""Rigs: simulated instruments that turn snapshots and a stimulus set into observables.

Every rig records each site (layer) of a subject at every session:
- ``synapse``: the layer's kernel (synapses; bias excluded) -> weight observables;
- ``electrophysiology``: the layer's outputs after the nonlinearity, one row per stimulus
  -> activation observables (statistics over units per stimulus, then the mean over stimuli);
- ``paired``: the layer-wise activity change, per stimulus
  (1/N_post) sum_{i in pre} sum_{j in post} dy_j/dx_i -> activity-change observables.

Imperfections, as in the reference: a seeded subset of units (synapses for the synapse rig;
pre- and post-synaptic units drawn independently for the paired rig), the same units at
every session, and additive Gaussian noise of standard deviation ``noise`` on each measured
value (synapse, unit response, or per-stimulus activity change). Sampling and noise are
seeded by (rig seed, subject index in the cohort, layer), so re-recording gives the same
numbers and another rig seed gives other draws.
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
from simlab.recording.specs import RigSpec
from simlab.subjects.architectures import Network

MEASURE_OF_RIG = {"synapse": "weight", "electrophysiology": "activation", "paired": "activity_change"}
POST, PRE = 0, 1  # which population of units a draw is for (the paired rig draws both)


def units_to_record(available: int, units) -> int:
    """How many of ``available`` units a rig keeps: all, a count (at most all), or ceil(fraction * n)."""
    if units == "all":
        return available
    if isinstance(units, float):
        # round first: 0.07 * 100 is 7.000000000000001 in floating point, and ceil would give 8
        return max(1, min(available, math.ceil(round(units * available, 9))))
    return min(available, int(units))


def sample_units(available: int, units, seed: int, subject: int, layer: int, role: int = POST) -> np.ndarray:
    """Sorted indices of the recorded units: the same for every session of a subject."""
    count = units_to_record(available, units)
    if count == available:
        return np.arange(available)
    rng = np.random.default_rng([seed, subject, layer, role])
    return np.sort(rng.choice(available, size=count, replace=False))


class SiteRecording(NamedTuple):
    """A rig's output for a population: observables [replicate, layer, session, observable]
    and, per layer, the units available and recorded."""

    observation: np.ndarray
    n_units: np.ndarray
    n_recorded: np.ndarray


OBSERVE = {
    "synapse": weight_observables,
    "electrophysiology": activation_observables,
    "paired": activity_change_observables,
}


class Rig:
    """One instrument with its settings.

    ``record(network, params, stimuli, subjects)`` records the replicates of a population:
    ``params`` has leading axes [replicate, session]; ``subjects`` holds each replicate's
    index in the cohort, which seeds its unit sample and noise. Measuring (forward passes,
    sampling, noise) is one compiled program per network; statistics run on the host with
    numpy on CPU backends (XLA's CPU sort is slow) and inside the program elsewhere.
    """

    def __init__(self, spec: RigSpec):
        self.spec = spec
        self.measure = MEASURE_OF_RIG[spec.type]
        self.observables: tuple[Observable, ...] = observables_for(self.measure)
        self._programs: dict = {}

    def available_units(self, network: Network, input_shape) -> dict[str, tuple[int, int]]:
        """Per site: (post-synaptic units or synapses, pre-synaptic units) the rig can reach."""
        shapes = network.site_shapes(input_shape)
        if self.spec.type == "synapse":
            sizes = network.kernel_sizes(input_shape)
            return {name: (sizes[name], 0) for name in network.site_names}
        return {name: (int(np.prod(shapes[name][1])), int(np.prod(shapes[name][0]))) for name in network.site_names}

    def sample(self, network: Network, input_shape, subjects) -> tuple[dict, dict]:
        """Recorded unit indices per site, stacked over replicates: (post [R, k], pre [R, k'])."""
        available = self.available_units(network, input_shape)
        units, seed = self.spec.units, self.spec.seed

        def stacked(role: int, pick) -> dict[str, np.ndarray]:
            return {
                name: np.stack([sample_units(pick(available[name]), units, seed, s, layer, role) for s in subjects])
                for layer, name in enumerate(network.site_names)
            }

        post = stacked(POST, lambda counts: counts[0])
        pre = stacked(PRE, lambda counts: counts[1]) if self.spec.type == "paired" else {}
        return post, pre

    def record(self, network: Network, params, stimuli: np.ndarray, subjects) -> SiteRecording:
        post, pre = self.sample(network, stimuli.shape[1:], subjects)
        on_host = jax.default_backend() == "cpu"
        program = self._program(network, observe_inside=not on_host, noisy=self.spec.noise > 0)
        measured = program(
            params, jnp.asarray(stimuli), post, pre, jnp.asarray(subjects, jnp.int32), jnp.float32(self.spec.noise)
        )
        observe = OBSERVE[self.spec.type]
        per_site = [
            observe(np.asarray(measured[name]), xp=np) if on_host else np.asarray(measured[name])
            for name in network.site_names
        ]
        available = self.available_units(network, stimuli.shape[1:])
        return SiteRecording(
            observation=np.stack(per_site, axis=1),
            n_units=np.array([available[name][0] for name in network.site_names]),
            n_recorded=np.array([post[name].shape[1] for name in network.site_names]),
        )

    def _program(self, network: Network, observe_inside: bool, noisy: bool):
        """The compiled measuring function of this rig for one network (compiled once, reused).

        The noise level is an argument (a grid of noise levels reuses one program), but a
        noiseless rig leaves the random-number code out: it costs seconds of compilation.
        """
        if (network, observe_inside, noisy) not in self._programs:
            measure = {"synapse": _synapse, "electrophysiology": _electrophysiology, "paired": _paired}[self.spec.type]
            measure_one = measure(network)
            observe = OBSERVE[self.spec.type]
            seed = self.spec.seed

            def measure_population(params, stimuli, post, pre, subjects, sd):
                def one(params, post, pre, subject):
                    values = measure_one(params, stimuli, post, pre)
                    if noisy:
                        base = jax.random.fold_in(jax.random.key(seed), subject)
                        values = {
                            name: _with_noise(values[name], jax.random.fold_in(base, layer), sd)
                            for layer, name in enumerate(network.site_names)
                        }
                    return {name: observe(v) for name, v in values.items()} if observe_inside else values

                return jax.vmap(one)(params, post, pre, subjects)

            self._programs[network, observe_inside, noisy] = jax.jit(measure_population)
        return self._programs[network, observe_inside, noisy]


def _with_noise(values, key, sd):
    return values + sd * jax.random.normal(key, values.shape, values.dtype)


def _synapse(network: Network):
    def measure(params, stimuli, units, _):
        """Kernel entries of the recorded synapses: [session, k] per site."""
        return {
            name: params[name]["w"].reshape(params[name]["w"].shape[0], -1)[:, units[name]]
            for name in network.site_names
        }

    return measure


def _electrophysiology(network: Network):
    def measure(params, stimuli, units, _):
        """Responses of the recorded units: [session, stimulus, k] per site."""
        sites = jax.vmap(lambda p: network.apply(p, {}, stimuli)[1])(params)
        return {
            name: sites[name].output.reshape(*sites[name].output.shape[:2], -1)[..., units[name]]
            for name in network.site_names
        }

    return measure


def _paired(network: Network):
    def activity_change(params, stimuli, post, pre):
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

    def measure(params, stimuli, post, pre):
        """Activity change of each stimulus: [session, stimulus] per site."""
        return jax.vmap(lambda p: activity_change(p, stimuli, post, pre))(params)

    return measure
