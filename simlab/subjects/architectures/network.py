"""A network: an architecture's sites and forward pass, the output sites, as a Haiku transform.

An architecture type is one :class:`Architecture` subclass that owns both its sites and its
forward pass, registered once with :func:`register_architecture` next to the model of its
protocol settings. A contrastive subject has, in place of the readout, a projection head of
two dense sites (:class:`ProjectionHead`); its representation is the head's input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel

from simlab.errors import SimlabError
from simlab.registry import ARCHITECTURES
from simlab.subjects.architectures.sites import SitePlan, SiteRunner

__all__ = [
    "CREDITS",
    "LAYOUTS",
    "Architecture",
    "ArchitectureEntry",
    "Network",
    "ProjectionHead",
    "architecture_of",
    "output_sites",
    "plan_sites",
    "register_architecture",
]

CREDITS = ("backprop", "feedback", "direct_feedback")
LAYOUTS = ("signal", "image", None)


class Architecture(ABC):
    """One architecture type: its sites and its forward pass, side by side, built from the
    type's protocol settings (``self.spec``).

    - :meth:`sites`: the layers before the output sites, in the order :meth:`forward` runs them;
    - :meth:`forward`: runs each of them by calling ``site(name, h)`` (a residual site:
      ``site(name, h, shortcut)``; ``site.chain(sites, h)`` runs several in a row), does what
      lies between sites, and returns what the output sites read. By default it runs the
      sites one after another.

    The network appends the output sites (the readout, or a projection head) and checks on
    every trace that the forward pass runs the declared sites, each once, in their order (a
    :class:`SimlabError` naming the sites when not). The sites are declared rather than found
    by tracing the forward pass because trainers and rigs need them before any input shape
    is known.
    """

    def __init__(self, spec: BaseModel):
        self.spec = spec

    @abstractmethod
    def sites(self) -> tuple[SitePlan, ...]:
        """The layers before the output sites, in the order the input reaches them."""

    def forward(self, site: SiteRunner, x: jax.Array) -> jax.Array:
        """The features the output sites read; ``site`` runs the layers."""
        return site.chain(self.sites(), x)


@dataclass(frozen=True)
class ArchitectureEntry:
    """A registered architecture type: ``spec``, the model of its settings in a protocol (its
    ``type`` field names the type); ``layout``, the inputs it reads ("signal": [length,
    channels], "image": [height, width, channels], None: either, flattened); and
    ``implementation``, the :class:`Architecture` subclass built from those settings."""

    spec: type[BaseModel]
    layout: str | None
    implementation: type[Architecture]


def register_architecture(
    spec: type[BaseModel], implementation: type[Architecture], *, layout: str | None, replace: bool = False
) -> ArchitectureEntry:
    """Make an architecture type known to protocols, the trainer and the rigs, under the name
    that ``spec``'s ``type`` field holds (``type: Literal["name"] = "name"``).

    Parameters
    ----------
    spec : type of pydantic.BaseModel
        The model of its settings (``architectures: {NAME: {type: ..., ...}}`` in a protocol).
    implementation : type of Architecture
        Its sites and forward pass, built from the settings.
    layout : str or None
        The inputs it reads, one of :data:`LAYOUTS` (None: any).
    replace : bool
        Replace a registered type of that name instead of refusing it.

    Returns
    -------
    ArchitectureEntry
        The entry stored in :data:`simlab.registry.ARCHITECTURES`.

    Examples
    --------
    >>> register_architecture(SkipMLPSpec, SkipMLP, layout=None)  # doctest: +SKIP
    """
    field = spec.model_fields.get("type") if isinstance(spec, type) and issubclass(spec, BaseModel) else None
    if field is None or not isinstance(field.default, str):
        raise SimlabError(
            f"spec={spec!r}: expected a pydantic model with a field `type: Literal[NAME] = NAME` "
            "(NAME: the architecture type's name in protocols)"
        )
    if not (isinstance(implementation, type) and issubclass(implementation, Architecture)):
        raise SimlabError(f"implementation={implementation!r}: expected a subclass of Architecture")
    if layout not in LAYOUTS:
        raise SimlabError(f"layout={layout!r}: expected one of {', '.join(map(repr, LAYOUTS))}")
    return ARCHITECTURES.register(field.default, ArchitectureEntry(spec, layout, implementation), replace=replace)


def architecture_of(spec: BaseModel) -> Architecture:
    """The registered implementation of ``spec``'s type, built from it."""
    entry = ARCHITECTURES.get_entry(getattr(spec, "type", None))
    if not isinstance(spec, entry.spec):
        raise SimlabError(f"architecture {spec.type!r} is registered with settings {entry.spec.__name__}, got {spec!r}")
    return entry.implementation(spec)


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
    :func:`output_sites` (the linear readout, or a projection head)."""
    return (*architecture_of(spec).sites(), *output_sites(n_classes, head))


class Network:
    """A Haiku-transformed network of one architecture, number of classes and credit path.

    ``init(key, x) -> (params, state)``; ``apply(params, state, x, probes=None,
    perturbations=None) -> (outputs, sites)`` where ``sites`` maps site name to
    :class:`~simlab.subjects.architectures.sites.Site` (``probes`` and ``perturbations``: see
    :class:`~simlab.subjects.architectures.sites.SiteRunner`) and ``outputs`` are the logits,
    or with a projection ``head`` the projections of a contrastive subject. State holds the
    feedback kernels (empty for backprop). ``credit``: "backprop", "feedback" (errors through
    B, per layer) or "direct_feedback" (a plain network whose hidden layers hold a fixed random
    B from the outputs, for direct feedback alignment; dense layers only, as in Nøkland 2016).
    """

    def __init__(self, spec: BaseModel, n_classes: int, credit: str, head: ProjectionHead | None = None):
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {', '.join(map(repr, CREDITS))}, got {credit!r}")
        self.spec, self.n_classes, self.credit, self.head = spec, n_classes, credit, head
        self.architecture = architecture_of(spec)
        backbone = tuple(self.architecture.sites())
        if credit == "direct_feedback" and any(site.kind != "dense" for site in backbone):
            raise SimlabError(
                "direct feedback (learning rule direct_feedback_alignment) needs an mlp (dense layers only), "
                f"got a {spec.type} architecture"
            )
        outputs = output_sites(n_classes, head)
        self.plan = (*backbone, *outputs)
        names = [site.name for site in self.plan]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise SimlabError(
                f"architecture {spec.type!r}: site names must be distinct (one set of parameters each), "
                f"got {', '.join(map(repr, repeated))} more than once in {', '.join(names)}"
            )
        self.ops = {site.name: site.op for site in self.plan}
        self.representation_site = outputs[0].name
        self._outputs = outputs
        self._transformed = hk.without_apply_rng(hk.transform_with_state(self._forward))

    def _forward(self, x, probes=None, perturbations=None):
        """The architecture's forward pass, then the output sites, checked against the plan."""
        site = SiteRunner(self.plan, self.credit, probes, perturbations, architecture=self.spec.type)
        h = self.architecture.forward(site, x)
        backbone = self.plan[: len(self.plan) - len(self._outputs)]
        if list(site.seen) != [s.name for s in backbone]:
            raise SimlabError(
                f"architecture {self.spec.type!r}: its forward pass ran the sites {', '.join(site.seen) or 'none'}, "
                f"but its sites() are {', '.join(s.name for s in backbone)}"
            )
        return site.chain(self._outputs, h), site.seen

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
