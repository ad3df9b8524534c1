"""``resnet``: a stem conv, residual stages of basic blocks, global average pooling.

Residual blocks (basic blocks, two 3x3 convs ``conv1``, ``conv2``, and a 1x1 ``shortcut``
projection site where the shape changes), named ``stage{s}_block{b}_{conv1,shortcut,conv2}``:

- v1: conv1: relu(norm(conv(h))); shortcut: norm(conv1x1(h)) (linear); conv2:
  relu(norm(conv(a)) + s) with s the shortcut site's output or h. conv2's output is the
  block's output (the post-activation after the addition).
- v2 (pre-activation): p = relu(norm(h)) between sites; conv1: relu(norm(conv(p))) (the
  norm and relu before conv2 sit in conv1's map); shortcut: conv1x1(p) (linear); conv2:
  conv(a) + s (linear), with s the shortcut site's output or h itself. conv2's output is the
  block's output, the residual stream; the stem is linear, and relu(norm(.)) follows the
  last block.

(norm: :func:`simlab.ops.linear.rms_normalize`, see :class:`simlab.specs.subjects.ResNetSpec`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from simlab.ops.linear import pool2d, rms_normalize
from simlab.specs.subjects import ResNetSpec
from simlab.subjects.architectures.network import Architecture, register_architecture
from simlab.subjects.architectures.sites import SitePlan, SiteRunner, scaled


@dataclass(frozen=True)
class Block:
    """The sites of one residual block, in the order the input reaches them; ``shortcut`` is
    None where the block keeps the shape (its shortcut is the identity)."""

    conv1: SitePlan
    shortcut: SitePlan | None
    conv2: SitePlan


class ResNet(Architecture):
    spec: ResNetSpec

    def _stem(self) -> SitePlan:
        spec, v1 = self.spec, self.spec.version == 1
        channels = scaled(spec.stem_channels, spec.width)
        return SitePlan("stem", "conv2d", channels, spec.stem_kernel, spec.stem_stride, relu=v1, normalize=v1)

    def _blocks(self) -> Iterator[Block]:
        spec, v1 = self.spec, self.spec.version == 1
        channels = scaled(spec.stem_channels, spec.width)
        for stage, (n_blocks, width) in enumerate(zip(spec.blocks, spec.widths)):
            features = scaled(width, spec.width)
            for block in range(n_blocks):
                prefix = f"stage{stage + 1}_block{block + 1}"
                stride = 2 if stage > 0 and block == 0 else 1
                projection = stride != 1 or channels != features
                yield Block(
                    SitePlan(f"{prefix}_conv1", "conv2d", features, 3, stride, normalize=True),
                    SitePlan(f"{prefix}_shortcut", "conv2d", features, 1, stride, relu=False, normalize=v1)
                    if projection
                    else None,
                    SitePlan(f"{prefix}_conv2", "conv2d", features, 3, 1, relu=v1, normalize=v1, residual=True),
                )
                channels = features

    def sites(self) -> tuple[SitePlan, ...]:
        sites = [self._stem()]
        for block in self._blocks():
            sites += [site for site in (block.conv1, block.shortcut, block.conv2) if site is not None]
        return tuple(sites)

    def forward(self, site: SiteRunner, x: jax.Array) -> jax.Array:
        spec = self.spec
        h = site("stem", x)
        if spec.stem_pool:
            h = pool2d(h, "max", 3, 2)
        for block in self._blocks():
            entry = h if spec.version == 1 else jax.nn.relu(rms_normalize(h))
            a = site(block.conv1.name, entry)
            shortcut = h if block.shortcut is None else site(block.shortcut.name, entry)
            h = site(block.conv2.name, a, shortcut)
        if spec.version == 2:
            h = jax.nn.relu(rms_normalize(h))
        return jnp.mean(h, axis=(1, 2))


register_architecture(ResNetSpec, ResNet, layout="image")
