"""Architectures: a plan of layers (the recording sites) and the Haiku network that runs it.

Every dense or conv layer is a *site*: the synapse rig reads its kernel, the
electrophysiology rig its output after the nonlinearity, the paired rig the change of its
output with its input. The network returns, next to the logits, each site's input and
output, which is all that recording and local learning rules need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from simlab.subjects.layers import Layer
from simlab.subjects.ops import LinearOp, conv1d, dense
from simlab.subjects.specs import Conv1DSpec, MLPSpec


@dataclass(frozen=True)
class SitePlan:
    """One layer: a conv layer reads [batch, length, channels]; a dense layer flattens first."""

    name: str
    kind: str  # "dense" or "conv"
    features: int
    kernel_size: int = 1
    stride: int = 1
    relu: bool = True

    @property
    def op(self) -> LinearOp:
        return dense if self.kind == "dense" else conv1d(self.stride)


class Site(NamedTuple):
    """What one site saw and did on a batch: its input and its output after the nonlinearity."""

    input: jax.Array
    output: jax.Array


def plan_sites(spec: MLPSpec | Conv1DSpec, n_classes: int) -> tuple[SitePlan, ...]:
    """The layers of an architecture, input first; the last is the linear readout."""
    sites: list[SitePlan] = []
    if isinstance(spec, Conv1DSpec):
        sites += [
            SitePlan(f"conv_{i}", "conv", channels, spec.kernel_size, spec.stride)
            for i, channels in enumerate(spec.channels)
        ]
    sites += [SitePlan(f"dense_{i}", "dense", width) for i, width in enumerate(spec.hidden)]
    sites.append(SitePlan("readout", "dense", n_classes, relu=False))
    return tuple(sites)


def _run_sites(plan, credit, x, probes):
    """Apply the sites in order. ``probes``: zeros added to each site's detached input.

    With probes, each site's input is cut from the graph upstream (``stop_gradient``), so the
    gradient with respect to a probe is the *layer-wise* input-output derivative that the
    paired rig measures, not the whole network's.
    """
    sites = {}
    h = x
    for site in plan:
        if site.kind == "dense":
            h = h.reshape(h.shape[0], -1)
        if probes is not None:
            h = jax.lax.stop_gradient(h) + probes[site.name]
        kernel_shape = (
            (site.kernel_size, h.shape[-1], site.features) if site.kind == "conv" else (h.shape[-1], site.features)
        )
        gain = 2.0 if site.relu else 1.0
        y = Layer(site.op, kernel_shape, credit, gain, name=site.name)(h)
        if site.relu:
            y = jax.nn.relu(y)
        sites[site.name] = Site(h, y)
        h = y
    return h, sites


class Network:
    """A Haiku-transformed network of one architecture, number of classes and credit path.

    ``init(key, x) -> (params, state)``; ``apply(params, state, x, probes=None) -> (logits,
    sites)`` where ``sites`` maps site name to :class:`Site`. State holds the feedback kernels
    (empty for backprop).
    """

    def __init__(self, spec: MLPSpec | Conv1DSpec, n_classes: int, credit: str):
        if credit not in ("backprop", "feedback"):
            raise ValueError(f"credit must be 'backprop' or 'feedback', got {credit!r}")
        self.spec, self.n_classes, self.credit = spec, n_classes, credit
        self.plan = plan_sites(spec, n_classes)
        self.ops = {site.name: site.op for site in self.plan}
        self._transformed = hk.without_apply_rng(
            hk.transform_with_state(lambda x, probes=None: _run_sites(self.plan, credit, x, probes))
        )

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self.plan)

    def init(self, key, x):
        return self._transformed.init(key, x)

    def apply(self, params, state, x, probes=None):
        (logits, sites), _ = self._transformed.apply(params, state, x, probes)
        return logits, sites

    def site_shapes(self, input_shape) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Per site, the shapes of one example's input and output (no batch axis)."""
        dummy = jnp.zeros((1, *input_shape), jnp.float32)
        params, state = jax.eval_shape(self.init, jax.random.key(0), dummy)
        _, sites = jax.eval_shape(lambda p, s: self.apply(p, s, dummy), params, state)
        return {name: (site.input.shape[1:], site.output.shape[1:]) for name, site in sites.items()}

    def kernel_sizes(self, input_shape) -> dict[str, int]:
        """Number of synapses (kernel entries, bias excluded) of each site."""
        dummy = jnp.zeros((1, *input_shape), jnp.float32)
        params, _ = jax.eval_shape(self.init, jax.random.key(0), dummy)
        return {name: int(np.prod(params[name]["w"].shape)) for name in self.site_names}
