"""``knet``: the reference's small CIFAR-10 net, conv layers ``conv_i`` each followed by a pool
(and LRN), then hidden dense layers."""

from __future__ import annotations

import jax

from simlab.ops.linear import local_response_norm, pool2d
from simlab.specs.subjects import KNetSpec
from simlab.subjects.architectures.network import Architecture, register_architecture
from simlab.subjects.architectures.sites import SitePlan, SiteRunner, dense_sites, scaled


class KNet(Architecture):
    spec: KNetSpec

    def _convs(self) -> tuple[SitePlan, ...]:
        spec = self.spec
        channels = list(spec.channels) + ([spec.channels[-1]] if spec.extra_conv else [])
        return tuple(
            SitePlan(f"conv_{i}", "conv2d", scaled(c, spec.width), spec.kernel_size) for i, c in enumerate(channels)
        )

    def sites(self) -> tuple[SitePlan, ...]:
        return (*self._convs(), *dense_sites(self.spec.hidden))

    def forward(self, site: SiteRunner, x: jax.Array) -> jax.Array:
        # conv -> relu (the site), then pool, then LRN (TensorFlow's CIFAR-10 settings)
        spec, h = self.spec, x
        for conv in self._convs():
            h = pool2d(site(conv.name, h), spec.pool, spec.pool_size, 2)
            if spec.lrn:
                h = local_response_norm(h, radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)
        return site.chain(dense_sites(spec.hidden), h)


register_architecture(KNetSpec, KNet, layout="image")
