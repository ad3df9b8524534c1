"""``alexnet``: five conv layers ``conv_0`` .. ``conv_4`` with LRN and max pools between some
of them, then hidden dense layers."""

from __future__ import annotations

import jax

from simlab.ops.linear import local_response_norm, pool2d
from simlab.specs.subjects import AlexNetSpec
from simlab.subjects.architectures.network import Architecture, register_architecture
from simlab.subjects.architectures.sites import SitePlan, SiteRunner, dense_sites, scaled

LRN_AFTER = (0, 1)  # conv layers followed by local response normalization (when ``lrn``)
POOL_AFTER = (0, 1, 4)  # conv layers followed by a stride-2 max pool


class AlexNet(Architecture):
    spec: AlexNetSpec

    def _convs(self) -> tuple[SitePlan, ...]:
        spec = self.spec
        return tuple(
            SitePlan(f"conv_{i}", "conv2d", scaled(c, spec.width), k, s)
            for i, (c, k, s) in enumerate(zip(spec.channels, spec.kernel_sizes, spec.strides))
        )

    def sites(self) -> tuple[SitePlan, ...]:
        return (*self._convs(), *dense_sites(self.spec.hidden))

    def forward(self, site: SiteRunner, x: jax.Array) -> jax.Array:
        # conv -> relu (the site), then LRN, then max pool
        spec, h = self.spec, x
        for i, conv in enumerate(self._convs()):
            h = site(conv.name, h)
            if spec.lrn and i in LRN_AFTER:
                h = local_response_norm(h)
            if i in POOL_AFTER:
                h = pool2d(h, "max", spec.pool_size, 2)
        return site.chain(dense_sites(spec.hidden), h)


register_architecture(AlexNetSpec, AlexNet, layout="image")
