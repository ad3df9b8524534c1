"""Architectures: a plan of layers (the recording sites) and the Haiku network that runs it.

Every dense or conv layer is a *site*: the synapse rig reads its kernel, the
electrophysiology rig its output, the paired rig the change of its output with its input.
The network returns, next to the logits, each site's input and output, which is all that
recording and local learning rules need. A contrastive subject has, in place of the readout,
a projection head of two dense sites (:class:`ProjectionHead`); its representation is the
head's input.

A site's map, from its input x to its output y, is always

    y = relu?( normalize?( op(x, W) + b ) + shortcut? )

with ``op`` a dense product or a 1-D/2-D convolution (:mod:`simlab.ops.linear`),
``normalize`` the parameter-free per-example ``rms_normalize`` (ResNets only, where the papers
have batch norm), ``shortcut`` the residual input added by the last conv of a residual block
(a constant of the site's map: it is detached when the paired rig probes), and relu present
unless the site feeds a residual stream linearly or is the readout. Everything else happens
*between* sites, on the way to the next site's input: flattening before dense layers,
pooling and local response normalization (KNet, AlexNet), the stem max pool, the
pre-activation ``relu(rms_normalize(.))`` of ResNet v2 blocks, global average pooling.
So the paired rig's dy/dx is the derivative of the map above, and the electrophysiology rig
records y, before any pooling or LRN.

Residual blocks (basic blocks, two 3x3 convs ``conv1``, ``conv2``, and a 1x1 ``shortcut``
projection site where the shape changes):

- v1: conv1: relu(norm(conv(h))); shortcut: norm(conv1x1(h)) (linear); conv2:
  relu(norm(conv(a)) + s) with s the shortcut site's output or h. conv2's output is the
  block's output (the post-activation after the addition).
- v2 (pre-activation): p = relu(norm(h)) between sites; conv1: relu(norm(conv(p))) (the
  norm and relu before conv2 sit in conv1's map); shortcut: conv1x1(p) (linear); conv2:
  conv(a) + s (linear), with s the shortcut site's output or h itself. conv2's output is the
  block's output, the residual stream; the stem is linear, and relu(norm(.)) follows the
  last block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel

from simlab.errors import SimlabError
from simlab.subjects.layers import Layer
from simlab.ops.linear import LinearOp, conv1d, conv2d, dense, local_response_norm, pool2d, rms_normalize
from simlab.specs.subjects import AlexNetSpec, Conv1DSpec, KNetSpec, MLPSpec, ResNetSpec


CREDITS = ("backprop", "feedback", "direct_feedback")


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


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _knet_channels(spec: KNetSpec) -> list[int]:
    channels = list(spec.channels) + ([spec.channels[-1]] if spec.extra_conv else [])
    return [_scaled(c, spec.width) for c in channels]


class _Block(NamedTuple):
    prefix: str
    features: int
    stride: int
    projection: bool


def _resnet_blocks(spec: ResNetSpec) -> Iterator[_Block]:
    channels = _scaled(spec.stem_channels, spec.width)
    for stage, (n_blocks, width) in enumerate(zip(spec.blocks, spec.widths)):
        features = _scaled(width, spec.width)
        for block in range(n_blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            yield _Block(f"stage{stage + 1}_block{block + 1}", features, stride, stride != 1 or channels != features)
            channels = features


@dataclass(frozen=True)
class ProjectionHead:
    """The output of a contrastive subject (SimCLR's projection head g), in place of the
    readout: ``projection_0`` (dense, ``hidden`` ReLU units) then ``projection_1`` (dense,
    ``dim`` linear units). The representation a linear probe reads is the head's input."""

    hidden: int
    dim: int


def output_sites(n_classes: int, head: ProjectionHead | None = None) -> tuple[SitePlan, ...]:
    """The sites after the backbone: the linear readout, or a projection head's two layers."""
    if head is None:
        return (SitePlan("readout", "dense", n_classes, relu=False),)
    return (SitePlan("projection_0", "dense", head.hidden), SitePlan("projection_1", "dense", head.dim, relu=False))


def plan_sites(spec: BaseModel, n_classes: int, head: ProjectionHead | None = None) -> tuple[SitePlan, ...]:
    """The layers of an architecture in the order the input reaches them; the last are the
    :func:`output_sites` (the linear readout, or a projection head). (In a residual block:
    conv1, then the shortcut projection, then conv2.)"""
    sites: list[SitePlan] = []
    if isinstance(spec, Conv1DSpec):
        sites += [
            SitePlan(f"conv_{i}", "conv", channels, spec.kernel_size, spec.stride)
            for i, channels in enumerate(spec.channels)
        ]
    elif isinstance(spec, KNetSpec):
        sites += [SitePlan(f"conv_{i}", "conv2d", c, spec.kernel_size) for i, c in enumerate(_knet_channels(spec))]
    elif isinstance(spec, AlexNetSpec):
        sites += [
            SitePlan(f"conv_{i}", "conv2d", _scaled(c, spec.width), k, s)
            for i, (c, k, s) in enumerate(zip(spec.channels, spec.kernel_sizes, spec.strides))
        ]
    elif isinstance(spec, ResNetSpec):
        v1 = spec.version == 1
        stem = SitePlan("stem", "conv2d", _scaled(spec.stem_channels, spec.width), spec.stem_kernel,
                        spec.stem_stride, relu=v1, normalize=v1)
        sites.append(stem)
        for block in _resnet_blocks(spec):
            sites.append(SitePlan(f"{block.prefix}_conv1", "conv2d", block.features, 3, block.stride, normalize=True))
            if block.projection:
                sites.append(
                    SitePlan(f"{block.prefix}_shortcut", "conv2d", block.features, 1, block.stride, relu=False, normalize=v1)
                )
            sites.append(
                SitePlan(f"{block.prefix}_conv2", "conv2d", block.features, 3, 1, relu=v1, normalize=v1, residual=True)
            )
    elif not isinstance(spec, MLPSpec):
        raise TypeError(f"unknown architecture spec {spec!r}")
    if not isinstance(spec, ResNetSpec):
        sites += [SitePlan(f"dense_{i}", "dense", width) for i, width in enumerate(spec.hidden)]
    return (*sites, *output_sites(n_classes, head))


class _Sites:
    """Runs sites by name and keeps what each saw and did.

    ``probes``: zeros added to each site's detached input. With probes, each site's input is
    cut from the graph upstream (``stop_gradient``), and so is a shortcut entering a site, so
    the gradient with respect to a probe is the *layer-wise* input-output derivative that the
    paired rig measures, not the whole network's.

    ``perturbations``: arrays added to each site's pre-activation ``op(x, W) + b`` (before any
    normalization, shortcut or relu), of the shape of the site's output: the noise of node
    perturbation. The readout's perturbation is added to the logits.
    """

    def __init__(self, plan: tuple[SitePlan, ...], credit: str, probes, outputs: tuple[str, ...], perturbations=None):
        self.plan = {site.name: site for site in plan}
        self.outputs = outputs
        self.credit, self.probes, self.perturbations = credit, probes, perturbations
        self.readout = plan[-1]
        self.seen: dict[str, Site] = {}

    def __call__(self, name: str, h: jax.Array, shortcut: jax.Array | None = None) -> jax.Array:
        site = self.plan[name]
        assert (shortcut is not None) == site.residual, name
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

    def dense_layers(self, h: jax.Array) -> jax.Array:
        """The hidden dense layers ``dense_i`` that the plan has, then the output sites."""
        i = 0
        while f"dense_{i}" in self.plan:
            h = self(f"dense_{i}", h)
            i += 1
        for name in self.outputs:
            h = self(name, h)
        return h


def _forward(spec: BaseModel, sites: _Sites, x: jax.Array) -> jax.Array:
    """The logits of one architecture; ``sites`` runs the layers, the rest is between sites."""
    h = x
    if isinstance(spec, Conv1DSpec):
        i = 0
        while f"conv_{i}" in sites.plan:
            h = sites(f"conv_{i}", h)
            i += 1
    elif isinstance(spec, KNetSpec):
        # conv -> relu (the site), then pool, then LRN (TensorFlow's CIFAR-10 settings)
        for i in range(len(_knet_channels(spec))):
            h = pool2d(sites(f"conv_{i}", h), spec.pool, spec.pool_size, 2)
            if spec.lrn:
                h = local_response_norm(h, radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)
    elif isinstance(spec, AlexNetSpec):
        # conv -> relu (the site), LRN after the 1st and 2nd, max pool after the 1st, 2nd, 5th
        for i in range(5):
            h = sites(f"conv_{i}", h)
            if spec.lrn and i in (0, 1):
                h = local_response_norm(h)
            if i in (0, 1, 4):
                h = pool2d(h, "max", spec.pool_size, 2)
    elif isinstance(spec, ResNetSpec):
        h = sites("stem", h)
        if spec.stem_pool:
            h = pool2d(h, "max", 3, 2)
        for block in _resnet_blocks(spec):
            entry = h if spec.version == 1 else jax.nn.relu(rms_normalize(h))
            a = sites(f"{block.prefix}_conv1", entry)
            shortcut = sites(f"{block.prefix}_shortcut", entry) if block.projection else h
            h = sites(f"{block.prefix}_conv2", a, shortcut)
        if spec.version == 2:
            h = jax.nn.relu(rms_normalize(h))
        h = jnp.mean(h, axis=(1, 2))
    return sites.dense_layers(h)


def _run_sites(spec, plan, credit, x, probes, outputs, perturbations):
    sites = _Sites(plan, credit, probes, outputs, perturbations)
    logits = _forward(spec, sites, x)
    assert list(sites.seen) == [site.name for site in plan], "sites ran out of plan order"
    return logits, sites.seen


class Network:
    """A Haiku-transformed network of one architecture, number of classes and credit path.

    ``init(key, x) -> (params, state)``; ``apply(params, state, x, probes=None,
    perturbations=None) -> (outputs, sites)`` where ``sites`` maps site name to :class:`Site`
    (``probes`` and ``perturbations``: see :class:`_Sites`) and ``outputs`` are the logits, or
    with a projection ``head`` the projections of a contrastive subject. State holds the
    feedback kernels (empty for backprop). ``credit``: "backprop", "feedback" (errors through
    B, per layer) or "direct_feedback" (a plain network whose hidden layers hold a fixed random
    B from the outputs, for direct feedback alignment; MLPs only, as in Nøkland 2016).
    """

    def __init__(self, spec: BaseModel, n_classes: int, credit: str, head: ProjectionHead | None = None):
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {', '.join(map(repr, CREDITS))}, got {credit!r}")
        if credit == "direct_feedback" and not isinstance(spec, MLPSpec):
            raise SimlabError(
                "direct feedback (learning rule direct_feedback_alignment) needs an mlp (dense layers only), "
                f"got a {getattr(spec, 'type', type(spec).__name__)} architecture"
            )
        self.spec, self.n_classes, self.credit, self.head = spec, n_classes, credit, head
        self.plan = plan_sites(spec, n_classes, head)
        self.ops = {site.name: site.op for site in self.plan}
        outputs = tuple(site.name for site in output_sites(n_classes, head))
        self.representation_site = outputs[0]
        self._transformed = hk.without_apply_rng(
            hk.transform_with_state(
                lambda x, probes=None, perturbations=None: _run_sites(
                    spec, self.plan, credit, x, probes, outputs, perturbations
                )
            )
        )

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self.plan)

    def init(self, key, x):
        return self._transformed.init(key, x)

    def apply(self, params, state, x, probes=None, perturbations=None):
        (logits, sites), _ = self._transformed.apply(params, state, x, probes, perturbations)
        return logits, sites

    def representation(self, params, state, x) -> jax.Array:
        """The features the output sites read (flattened, [batch, features]): what a linear
        probe of a contrastive subject is fitted on."""
        _, sites = self.apply(params, state, x)
        return sites[self.representation_site].input

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
