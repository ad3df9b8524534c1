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
        return max(1, min(available, math.ceil(units * available)))
    return min(available, int(units))


def sample_units(available: int, units, seed: int, subject: int, layer: int, role: int = POST) -> np.ndarray:
    """Sorted indices of the recorded units: the same for every session of a subject."""
    count = units_to_record(available, units)
    if count == available:
        return np.arange(available)
    rng = np.random.default_rng([seed, subject, layer, role])
    return np.sort(rng.choice(available, size=count, replace=False))


def noise_key(seed: int, subject: int, layer: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), subject), layer)


class SiteRecording(NamedTuple):
    """A rig's output for one subject: observables [layer, session, observable] and unit counts."""

    observation: np.ndarray
    n_units: np.ndarray
    n_recorded: np.ndarray


class Rig:
    """One instrument with its settings. ``record(network, params, state, stimuli, subject)``.

    ``params`` / ``state`` are one subject's snapshots (leading session axis); ``subject`` is
    the subject's index in the cohort, which seeds its unit sample and noise.
    """

    def __init__(self, spec: RigSpec):
        self.spec = spec
        self.measure = MEASURE_OF_RIG[spec.type]
        self.observables: tuple[Observable, ...] = observables_for(self.measure)
        self._compiled: dict = {}

    def record(self, network: Network, params, state, stimuli: np.ndarray, subject: int) -> SiteRecording:
        shapes = network.site_shapes(stimuli.shape[1:])
        if self.spec.type == "synapse":
            available = [int(np.prod(params[name]["w"].shape[1:])) for name in network.site_names]
        else:
            available = [int(np.prod(shapes[name][1])) for name in network.site_names]
        post = {
            name: sample_units(n, self.spec.units, self.spec.seed, subject, layer, POST)
            for layer, (name, n) in enumerate(zip(network.site_names, available))
        }
        keys = {name: noise_key(self.spec.seed, subject, layer) for layer, name in enumerate(network.site_names)}
        arguments = [params, state, jnp.asarray(stimuli), post, keys, jnp.float32(self.spec.noise)]
        if self.spec.type == "paired":
            pre = {
                name: sample_units(
                    int(np.prod(shapes[name][0])), self.spec.units, self.spec.seed, subject, layer, PRE
                )
                for layer, name in enumerate(network.site_names)
            }
            arguments.append(pre)
        observation = np.asarray(self._program(network)(*arguments))
        n_recorded = np.array([len(post[name]) for name in network.site_names])
        return SiteRecording(observation, np.array(available), n_recorded)

    def _program(self, network: Network):
        """The compiled recording function of this rig for one network (compiled once, reused)."""
        if network not in self._compiled:
            build = {"synapse": _synapse, "electrophysiology": _electrophysiology, "paired": _paired}[self.spec.type]
            self._compiled[network] = jax.jit(build(network))
        return self._compiled[network]


def _with_noise(values, key, sd):
    return values + sd * jax.random.normal(key, values.shape, values.dtype)


def _synapse(network: Network):
    def record(params, state, stimuli, units, keys, sd):
        per_site = []
        for name in network.site_names:
            kernel = params[name]["w"]
            synapses = kernel.reshape(kernel.shape[0], -1)[:, units[name]]
            per_site.append(weight_observables(_with_noise(synapses, keys[name], sd)))
        return jnp.stack(per_site)

    return record


def _electrophysiology(network: Network):
    def record(params, state, stimuli, units, keys, sd):
        sites = jax.vmap(lambda p, s: network.apply(p, s, stimuli)[1])(params, state)
        per_site = []
        for name in network.site_names:
            output = sites[name].output
            responses = output.reshape(*output.shape[:2], -1)[..., units[name]]
            per_site.append(activation_observables(_with_noise(responses, keys[name], sd)))
        return jnp.stack(per_site)

    return record


def _paired(network: Network):
    def activity_change(params, state, stimuli, post, pre):
        """Per stimulus and site: (1/N_post) sum_{i in pre} sum_{j in post} dy_j / dx_i."""
        _, sites = network.apply(params, state, stimuli)
        probes = {name: jnp.zeros_like(site.input) for name, site in sites.items()}

        def recorded_output(probes):
            _, probed = network.apply(params, state, stimuli, probes)
            return sum(
                jnp.sum(probed[name].output.reshape(len(stimuli), -1)[:, post[name]]) for name in network.site_names
            )

        sensitivity = jax.grad(recorded_output)(probes)
        return {
            name: jnp.sum(sensitivity[name].reshape(len(stimuli), -1)[:, pre[name]], axis=-1) / len(post[name])
            for name in network.site_names
        }

    def record(params, state, stimuli, post, keys, sd, pre):
        changes = jax.vmap(lambda p, s: activity_change(p, s, stimuli, post, pre))(params, state)
        return jnp.stack(
            [activity_change_observables(_with_noise(changes[name], keys[name], sd)) for name in network.site_names]
        )

    return record
