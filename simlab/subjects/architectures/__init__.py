"""Architectures: one module per architecture type, each owning its sites and its forward pass.

:mod:`~simlab.subjects.architectures.sites` is what every architecture is made of (a site:
one recorded layer, and the runner that applies them); :mod:`~simlab.subjects.architectures.network`
the contract of an architecture type (:class:`Architecture`: ``sites()`` and ``forward()``),
its registration (:func:`register_architecture`, into :data:`simlab.registry.ARCHITECTURES`)
and :class:`Network`, the Haiku transform the trainer and the rigs use. The built-in types
are :mod:`.mlp`, :mod:`.conv1d`, :mod:`.knet`, :mod:`.alexnet` and :mod:`.resnet`; a new
type is one such module (its settings model, its Architecture, one register call).
"""

from simlab.subjects.architectures.network import (
    CREDITS,
    LAYOUTS,
    Architecture,
    ArchitectureEntry,
    Network,
    ProjectionHead,
    architecture_of,
    output_sites,
    plan_sites,
    register_architecture,
)
from simlab.subjects.architectures.sites import Site, SitePlan, SiteRunner, dense_sites, scaled

# the built-in types, registered in this order (the order in which protocol errors list them)
from simlab.subjects.architectures import mlp, conv1d, knet, alexnet, resnet  # noqa: E402,F401

__all__ = [
    "CREDITS",
    "LAYOUTS",
    "Architecture",
    "ArchitectureEntry",
    "Network",
    "ProjectionHead",
    "Site",
    "SitePlan",
    "SiteRunner",
    "architecture_of",
    "dense_sites",
    "output_sites",
    "plan_sites",
    "register_architecture",
    "scaled",
]
