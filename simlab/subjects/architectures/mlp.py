"""``mlp``: hidden dense ReLU layers ``dense_0``, ``dense_1``, ... (then the output sites)."""

from __future__ import annotations

from simlab.specs.subjects import MLPSpec
from simlab.subjects.architectures.network import Architecture, register_architecture
from simlab.subjects.architectures.sites import SitePlan, dense_sites


class MLP(Architecture):
    """Reads any input, flattened; the forward pass is the sites one after another."""

    spec: MLPSpec

    def sites(self) -> tuple[SitePlan, ...]:
        return dense_sites(self.spec.hidden)


register_architecture(MLPSpec, MLP, layout=None)
