"""Sites: the recorded layers of a network, and the runner that applies them in a forward pass.

Every dense or conv layer is a *site*: the synapse rig reads its kernel, the
electrophysiology rig its output, the paired rig the change of its output with its input.
The network returns, next to its outputs, each site's input and output, which is all that
recording and local learning rules need.

A site's map, from its input x to its output y, is always

    y = relu?( normalize?( op(x, W) + b ) + shortcut? )

with ``op`` a dense product or a 1-D/2-D convolution (:mod:`simlab.ops.linear`),
``normalize`` the parameter-free per-example ``rms_normalize`` (ResNets only, where the papers
have batch norm), ``shortcut`` the residual input added by the last conv of a residual block
(a constant of the site's map: it is detached when the paired rig probes), and relu present
unless the site feeds a residual stream linearly or is the readout. Everything else happens
*between* sites, in an architecture's forward pass, on the way to the next site's input:
flattening before dense layers (done here), pooling and local response normalization (KNet,
AlexNet), the stem max pool, the pre-activation ``relu(rms_normalize(.))`` of ResNet v2
blocks, global average pooling. So the paired rig's dy/dx is the derivative of the map above,
and the electrophysiology rig records y, before any pooling or LRN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import jax

from simlab.errors import SimlabError
from simlab.ops.linear import LinearOp, conv1d, conv2d, dense, rms_normalize
from simlab.subjects.layers import Layer

__all__ = ["Site", "SitePlan", "SiteRunner", "dense_sites", "scaled"]


@dataclass(frozen=True)
class SitePlan:
    """One layer. ``kind``: "dense" (flattens its input first), "conv" (1-D, [batch, length,
    channels]) or "conv2d" ([batch, height, width, channels]); ``kernel_size`` is the conv
    window (square for conv2d). ``normalize`` and ``relu`` are parts of the site's map (see
    the module docstring); ``residual`` says that the site adds a shortcut."""

    name: str
    kind: str
    features: int
    kernel_size: int = 1
    stride: int = 1
    relu: bool = True
    normalize: bool = False
    residual: bool = False

    @property
    def op(self) -> LinearOp:
        if self.kind == "dense":
            return dense
        return conv1d(self.stride) if self.kind == "conv" else conv2d(self.stride)

    def kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        if self.kind == "conv":
            return (self.kernel_size, in_channels, self.features)
        if self.kind == "conv2d":
            return (self.kernel_size, self.kernel_size, in_channels, self.features)
        return (in_channels, self.features)


class Site(NamedTuple):
    """What one site saw and did on a batch: its input and its output (see the module docstring)."""

    input: jax.Array
    output: jax.Array


def dense_sites(widths: Iterable[int]) -> tuple[SitePlan, ...]:
    """Hidden dense ReLU layers ``dense_0``, ``dense_1``, ... of these widths."""
    return tuple(SitePlan(f"dense_{i}", "dense", width) for i, width in enumerate(widths))


def scaled(channels: int, width: float) -> int:
    """A layer's channels times an architecture's ``width`` multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


class SiteRunner:
    """Runs a network's sites, in the order of its plan, and keeps what each saw and did.

    An architecture's forward pass calls it once per site, ``site(name, h)`` (a residual site:
    ``site(name, h, shortcut)``). A site run out of the plan's order, or a shortcut where the
    plan has none (or none where it has one), is a :class:`SimlabError` that names
    ``architecture``: the plan and the forward pass disagree.

    ``probes``: zeros added to each site's detached input. With probes, each site's input is
    cut from the graph upstream (``stop_gradient``), and so is a shortcut entering a site, so
    the gradient with respect to a probe is the *layer-wise* input-output derivative that the
    paired rig measures, not the whole network's.

    ``perturbations``: arrays added to each site's pre-activation ``op(x, W) + b`` (before any
    normalization, shortcut or relu), of the shape of the site's output: the noise of node
    perturbation. The readout's perturbation is added to the logits.
    """

    def __init__(self, plan: tuple[SitePlan, ...], credit: str, probes=None, perturbations=None, architecture: str = ""):
        self.plan, self.architecture = plan, architecture
        self.credit, self.probes, self.perturbations = credit, probes, perturbations
        self.readout = plan[-1]
        self.seen: dict[str, Site] = {}

    def __call__(self, name: str, h: jax.Array, shortcut: jax.Array | None = None) -> jax.Array:
        site = self._next(name, shortcut is not None)
        if site.kind == "dense":
            h = h.reshape(h.shape[0], -1)
        if self.probes is not None:
            h = jax.lax.stop_gradient(h) + self.probes[name]
            shortcut = None if shortcut is None else jax.lax.stop_gradient(shortcut)
        gain = 2.0 if site.relu else 1.0
        # direct feedback: hidden layers hold B (outputs x units); the readout has none
        outputs = self.readout.features if site is not self.readout else None
        y = Layer(site.op, site.kernel_shape(h.shape[-1]), self.credit, gain, name=name, outputs=outputs)(h)
        if self.perturbations is not None:
            y = y + self.perturbations[name]
        if site.normalize:
            y = rms_normalize(y)
        if shortcut is not None:
            y = y + shortcut
        if site.relu:
            y = jax.nn.relu(y)
        self.seen[name] = Site(h, y)
        return y

    def chain(self, sites: Iterable[SitePlan], h: jax.Array) -> jax.Array:
        """Run ``sites`` one after another, each on the previous one's output."""
        for site in sites:
            h = self(site.name, h)
        return h

    def _next(self, name: str, has_shortcut: bool) -> SitePlan:
        """The plan's next site, which must be ``name`` (and take a shortcut when it is residual)."""
        ran = len(self.seen)
        expected = self.plan[ran] if ran < len(self.plan) else None
        if expected is None or expected.name != name:
            turn = f"{expected.name!r} is next" if expected is not None else "all have run"
            raise SimlabError(
                f"architecture {self.architecture!r}: the forward pass runs site {name!r} out of turn: "
                f"the sites are {', '.join(site.name for site in self.plan)} (sites(), then the output sites), "
                f"and {turn}"
            )
        if has_shortcut != expected.residual:
            given = "passes a shortcut to" if has_shortcut else "passes no shortcut to"
            raise SimlabError(
                f"architecture {self.architecture!r}: the forward pass {given} site {name!r}, "
                f"which sites() declares with residual={expected.residual}"
            )
        return expected
