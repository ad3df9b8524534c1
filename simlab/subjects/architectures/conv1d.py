"""``conv1d``: 1-D conv ReLU layers ``conv_0``, ``conv_1``, ..., then hidden dense layers."""

from __future__ import annotations

from simlab.specs.subjects import Conv1DSpec
from simlab.subjects.architectures.network import Architecture, register_architecture
from simlab.subjects.architectures.sites import SitePlan, dense_sites


class Conv1D(Architecture):
    """Reads signals [length, channels]; the forward pass is the sites one after another (the
    first dense layer flattens)."""

    spec: Conv1DSpec

    def sites(self) -> tuple[SitePlan, ...]:
        spec = self.spec
        convs = tuple(
            SitePlan(f"conv_{i}", "conv", channels, spec.kernel_size, spec.stride)
            for i, channels in enumerate(spec.channels)
        )
        return (*convs, *dense_sites(spec.hidden))


register_architecture(Conv1DSpec, Conv1D, layout="signal")
