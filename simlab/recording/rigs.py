"""Rigs: simulated instruments that turn snapshots and a stimulus set into observables.

A rig type is one class (scikit-learn style), registered once under its ``name`` with
:func:`register_rig`; ``Rig(spec)`` builds the registered class of ``spec.type``. Every rig
records each site (layer) of a subject at every session; the built-ins:
- :class:`SynapseRig` (``synapse``): the layer's kernel (synapses; bias excluded) -> weight
  observables;
- :class:`ElectrophysiologyRig` (``electrophysiology``): the layer's outputs after the
  nonlinearity, one row per stimulus -> activation observables (statistics over units per
  stimulus, then the mean over stimuli);
- :class:`PairedRig` (``paired``): the layer-wise activity change, per stimulus
  (1/N_post) sum_{i in pre} sum_{j in post} dy_j/dx_i -> activity-change observables.

A new rig type subclasses :class:`Rig`, sets the class attributes of its contract and
writes ``measure_session`` (see :class:`Rig`); sampling, noise, the compiled program and
the recording's layout come from the base class and from what the class declares.

Imperfections: a seeded subset of units (synapses for the synapse rig; pre- and
post-synaptic units drawn independently for the paired rig), the same units at every session
(``chronic``) or new ones each session (``acute``), and measurement noise on each measured
term (synapse, unit response, or each pre-synaptic unit's term of the activity change, as
the reference; ``noise_placement: total`` puts it on the per-stimulus activity change instead;
models in :mod:`simlab.recording.noise`). Median and third quartile use the rig's
``percentiles`` method (the reference's ``nearest`` by default). Sampling is seeded by (rig seed, subject index in the cohort,
layer, pre/post[, session]) and noise by (rig seed, subject, layer, session), so
re-recording gives the same numbers, a schedule that keeps a session gives it the same values,
and another rig seed gives other draws.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from simlab.errors import SimlabError
from simlab.recording.noise import add_noise, poisson_rates
from simlab.recording.observables import (
    MEASURES,
    Observable,
    activation_observables,
    activity_change_observables,
    observables_for,
    weight_observables,
)
from simlab.registry import RIGS
from simlab.specs.rigs import RigSpec
from simlab.subjects.architectures import Network

__all__ = [
    "ElectrophysiologyRig",
    "PairedRig",
    "PopulationRecording",
    "Rig",
    "SynapseRig",
    "register_rig",
    "sample_units",
    "units_to_record",
]

POST, PRE = 0, 1  # which population of units a draw is for (the paired rig draws both)
SAMPLING_STREAM, SPIKE_STREAM = 0, 1  # keeps unit draws and spike counts on separate random streams


def units_to_record(available: int, units) -> int:
    """How many of ``available`` units a rig keeps: all, a count (at most all), or ceil(fraction * n)."""
    if units == "all":
        return available
    if isinstance(units, float):
        # round first: 0.07 * 100 is 7.000000000000001 in floating point, and ceil would give 8
        return max(1, min(available, math.ceil(round(units * available, 9))))
    return min(available, int(units))


def sample_units(
    available: int, units, seed: int, subject: int, layer: int, role: int = POST, session: int | None = None
) -> np.ndarray:
    """Sorted indices of the recorded units; ``session`` is given only for acute sampling."""
    count = units_to_record(available, units)
    if count == available:
        return np.arange(available)
    entropy = [seed, SAMPLING_STREAM, subject, layer, role] + ([] if session is None else [session])
    return np.sort(np.random.default_rng(entropy).choice(available, size=count, replace=False))


class PopulationRecording(NamedTuple):
    """A rig's output for the replicates of a population.

    ``observation`` [replicate, layer, session, observable]; per layer ``n_units`` (units or
    synapses available) and ``n_recorded``; per site the recorded unit indices
    ``units[name]`` [replicate, session, k] (and ``inputs[name]``, the pre-synaptic ones, for
    the paired rig); ``responses[name]`` the measured values the observables were computed
    from (only with ``keep_units``): [replicate, session, k] synapses, [replicate, session,
    stimulus, k] unit responses, or [replicate, session, stimulus] activity changes.
    """

    observation: np.ndarray
    n_units: np.ndarray
    n_recorded: np.ndarray
    units: dict
    inputs: dict
    responses: dict | None


UNIT_RESPONSE_DIMS = ("stimulus", "unit")  # the axes a site's measured values may have


class Rig:
    """A rig type: one instrument class; an instance is that instrument with its settings.

    ``Rig(spec)`` builds the class registered for ``spec.type`` (as ``pathlib.Path()`` builds
    the path class of the system), so callers never name a rig type.

    The contract of a rig class (class attributes, then one method to write):

    - ``name``: the rig type, as ``type:`` in a protocol's ``rigs:``.
    - ``measure``: what it measures, one of the recording contract's measures (weight,
      activation, activity_change); its observables are ``observables_for(measure)``.
    - ``observe``: observables of one site's measured values (a staticmethod taking
      ``xp=np`` or ``xp=jnp``): ``[..., *unit_response_dims] -> [..., observable]``, in the
      order of ``observables_for(measure)``.
    - ``unit_response_dims``: the axes of one site's measured values in one session, from
      ("stimulus", "unit"); they name the axes of kept unit responses (``keep_units``) and
      noise shares one gain per unit across the "stimulus" axis.
    - ``unit_index_meaning``: what a recorded unit's index counts (the ``unit_index`` variable).
    - ``shows_stimuli``: whether it presents stimuli (a rig that reads parameters shows none).
    - ``samples_inputs``: whether it also samples pre-synaptic units (``inputs`` below).
    - ``counts_spikes``: whether its values are firing rates, so Poisson noise applies.
    - ``sums_terms``: whether its measured values are sums of terms (the paired rig's, one
      term per pre-synaptic unit): it then writes ``measure_terms`` and ``sum_terms`` (below)
      and ``noise_placement`` chooses where noise goes; ``term_dims`` names the terms' axes.
    - ``available_units(network, input_shape)``: per site, (units it can reach, pre-synaptic
      units it can reach); by default the layer's output units and input units.
    - ``measure_session(network, params, stimuli, units, inputs)``: a pure JAX function of one
      session's parameters (site -> {"w", "b"}), the stimuli [stimulus, ...] and the recorded
      indices per site (``units[site]`` [k] into what ``available_units`` counts first,
      ``inputs[site]`` into what it counts second); returns site -> the measured values
      (axes ``unit_response_dims``). Noise, sampling and statistics are the base class's;
      ``observe`` is called with the rig's ``percentiles`` method by keyword.
    - ``measure_terms(...)`` (same arguments) and ``sum_terms(terms, units, inputs)``: for a
      rig that ``sums_terms``, the terms before the sum (axes ``term_dims``) and the sum that
      makes them the measured values, so that ``measure_session`` is ``sum_terms`` of
      ``measure_terms`` and noise can be added to each term first (``noise_placement: terms``).

    ``record(network, params, stimuli, subjects, sessions)`` records the replicates of a
    population: ``params`` has leading axes [replicate, session] (the sessions to record, in
    order); ``subjects`` holds each replicate's index in the cohort and ``sessions`` each
    recorded session's index in the run, which together seed unit samples and noise.
    Measuring (forward passes, sampling, noise) is one compiled program per network;
    statistics run on the host with numpy on CPU backends (XLA's CPU sort is slow) and inside
    the program elsewhere.
    """

    name: ClassVar[str]
    measure: ClassVar[str]
    observe: ClassVar[Callable]
    unit_response_dims: ClassVar[tuple[str, ...]]
    unit_index_meaning: ClassVar[str] = "index of each recorded (post-synaptic) unit in the flattened layer output"
    shows_stimuli: ClassVar[bool] = True
    samples_inputs: ClassVar[bool] = False
    counts_spikes: ClassVar[bool] = False
    sums_terms: ClassVar[bool] = False
    term_dims: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, spec: RigSpec):
        return super().__new__(RIGS.get_entry(spec.type) if cls is Rig else cls)

    def __init__(self, spec: RigSpec):
        if spec.type != self.name:
            raise SimlabError(f"{type(self).__name__} is the {self.name!r} rig; got settings of a {spec.type!r} rig")
        self.spec = spec
        self.observables: tuple[Observable, ...] = observables_for(self.measure)
        self._programs: dict = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def available_units(self, network: Network, input_shape) -> dict[str, tuple[int, int]]:
        """Per site: (post-synaptic units or synapses, pre-synaptic units) the rig can reach."""
        shapes = network.site_shapes(input_shape)
        return {name: (int(np.prod(shapes[name][1])), int(np.prod(shapes[name][0]))) for name in network.site_names}

    def measure_session(self, network: Network, params, stimuli, units, inputs) -> dict:
        """Site -> measured values of one session (a pure JAX function; see the class)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it measures a session")

    def measure_terms(self, network: Network, params, stimuli, units, inputs) -> dict:
        """Site -> the terms a ``sums_terms`` rig sums into its measured values (see the class)."""
        raise NotImplementedError(f"{type(self).__name__} does not measure terms (it does not sum any)")

    def sum_terms(self, terms: dict, units, inputs) -> dict:
        """Site -> measured values from the terms of :meth:`measure_terms` (see the class)."""
        raise NotImplementedError(f"{type(self).__name__} does not sum terms")

    def _observe(self, values, xp):
        return self.observe(values, xp=xp, percentiles=self.spec.percentiles)

    def sample(self, network: Network, available: dict, subjects, sessions) -> tuple[dict, dict]:
        """Recorded unit indices per site, [replicate, session, k]: (post, pre), out of the
        ``available`` units of :meth:`available_units`."""
        spec = self.spec
        acute = spec.sampling == "acute"

        def indices(available_units: int, role: int, subject: int, layer: int) -> np.ndarray:
            if acute:
                return np.stack(
                    [sample_units(available_units, spec.units, spec.seed, subject, layer, role, int(s)) for s in sessions]
                )
            chronic = sample_units(available_units, spec.units, spec.seed, subject, layer, role)
            return np.tile(chronic, (len(sessions), 1))

        def draws(role: int, which: int) -> dict[str, np.ndarray]:
            return {
                name: np.stack([indices(available[name][which], role, subject, layer) for subject in subjects])
                for layer, name in enumerate(network.site_names)
            }

        post = draws(POST, 0)
        pre = draws(PRE, 1) if self.samples_inputs else {}
        return post, pre

    def record(self, network: Network, params, stimuli: np.ndarray, subjects, sessions) -> PopulationRecording:
        sessions = np.asarray(sessions)
        available = self.available_units(network, stimuli.shape[1:])
        post, pre = self.sample(network, available, subjects, sessions)
        spike_counts = self.spec.noise_model == "poisson"  # drawn on the host, see recording.noise
        observe_inside = jax.default_backend() != "cpu" and not spike_counts
        program = self._program(network, observe_inside)
        observed, measured = program(
            params,
            jnp.asarray(stimuli),
            post,
            pre,
            jnp.asarray(subjects, jnp.int32),
            jnp.asarray(sessions, jnp.int32),
            jnp.float32(self.spec.noise),
        )
        measured = {name: np.asarray(values) for name, values in measured.items()}
        if spike_counts:
            measured = {
                name: self._spike_counts(measured[name], subjects, sessions, layer)
                for layer, name in enumerate(network.site_names)
            }
        per_site = [
            np.asarray(observed[name]) if observe_inside else self._observe(measured[name], xp=np)
            for name in network.site_names
        ]
        return PopulationRecording(
            observation=np.stack(per_site, axis=1),
            n_units=np.array([available[name][0] for name in network.site_names]),
            n_recorded=np.array([post[name].shape[-1] for name in network.site_names]),
            units=post,
            inputs=pre,
            responses={name: measured[name] for name in network.site_names} if self.spec.keep_units else None,
        )

    def _spike_counts(self, rates, subjects, sessions, layer: int) -> np.ndarray:
        """Poisson noise on [replicate, session, ...] values, seeded per (subject, session, layer)."""
        noisy = np.empty_like(rates)
        for r, subject in enumerate(subjects):
            for s, session in enumerate(sessions):
                rng = np.random.default_rng([self.spec.seed, SPIKE_STREAM, int(subject), int(session), layer])
                noisy[r, s] = poisson_rates(rates[r, s], rng, self.spec.rate_gain, self.spec.count_window)
        return noisy

    @staticmethod
    def _gain_shape(value, dims: tuple[str, ...]) -> tuple[int, ...]:
        """The shape of one draw of per-unit gains for values with axes ``dims``: the
        stimulus axis shared (size 1)."""
        return tuple(1 if dim == "stimulus" else n for dim, n in zip(dims, value.shape))

    def _program(self, network: Network, observe_inside: bool):
        """The compiled measuring function of this rig for one network (compiled once, reused).

        The noise scale is an argument (a grid of noise levels reuses one program); a
        noiseless gaussian rig leaves the random-number code out, which saves seconds of
        compilation. Measured values are returned only when they are needed (statistics on
        the host, or kept unit responses), so large tensors stay on the device otherwise.
        """
        spec = self.spec
        noisy = spec.noise > 0 and spec.noise_model != "poisson"
        noisy_terms = noisy and self.sums_terms and spec.noise_placement == "terms"
        return_measured = not observe_inside or spec.keep_units
        cache_key = (network, observe_inside, noisy, return_measured)  # noisy_terms follows from spec
        if cache_key not in self._programs:

            def one_session(params, stimuli, post, pre, subject, session, sigma):
                def with_noise(values: dict, dims: tuple[str, ...]) -> dict:
                    base = jax.random.fold_in(jax.random.fold_in(jax.random.key(spec.seed), subject), session)
                    return {
                        name: add_noise(
                            spec.noise_model,
                            values[name],
                            jax.random.fold_in(base, layer),
                            sigma,
                            spec.rate_gain,
                            spec.count_window,
                            self._gain_shape(values[name], dims),
                        )
                        for layer, name in enumerate(network.site_names)
                    }

                if noisy_terms:  # noise on each term, then the sum (the reference's paired rig)
                    terms = self.measure_terms(network, params, stimuli, post, pre)
                    values = self.sum_terms(with_noise(terms, self.term_dims), post, pre)
                else:
                    values = self.measure_session(network, params, stimuli, post, pre)
                    if noisy:
                        values = with_noise(values, self.unit_response_dims)
                observed = {name: self._observe(v, jnp) for name, v in values.items()} if observe_inside else {}
                return observed, (values if return_measured else {})

            def one_subject(params, stimuli, post, pre, subject, sessions, sigma):
                return jax.vmap(one_session, in_axes=(0, None, 0, 0, None, 0, None))(
                    params, stimuli, post, pre, subject, sessions, sigma
                )

            def measure_population(params, stimuli, post, pre, subjects, sessions, sigma):
                return jax.vmap(one_subject, in_axes=(0, None, 0, 0, 0, None, None))(
                    params, stimuli, post, pre, subjects, sessions, sigma
                )

            self._programs[cache_key] = jax.jit(measure_population)
        return self._programs[cache_key]


def register_rig(rig_class: type[Rig], *, replace: bool = False) -> type[Rig]:
    """Register a rig class under its ``name`` (a class decorator), after checking its contract.

    From then on ``type: NAME`` is a rig type in protocols, rig files and ``simlab record``;
    ``RIGS.unregister(name)`` removes one.

    Parameters
    ----------
    rig_class : type of Rig
        The rig type: ``name``, ``measure``, ``observe``, ``unit_response_dims`` and
        ``measure_session`` set (see :class:`Rig`).
    replace : bool
        Replace a rig type of that name instead of refusing it.

    Returns
    -------
    type of Rig
        ``rig_class`` itself, so that this works as a class decorator.

    Examples
    --------
    >>> @register_rig  # doctest: +SKIP
    ... class FluorescenceRig(Rig):
    ...     name, measure = "fluorescence", "activation"
    ...     observe = staticmethod(activation_observables)
    ...     unit_response_dims = ("stimulus", "unit")
    ...     def measure_session(self, network, params, stimuli, units, inputs): ...
    """
    if not (isinstance(rig_class, type) and issubclass(rig_class, Rig)):
        raise SimlabError(f"a rig type is a subclass of simlab.recording.rigs.Rig, got {rig_class!r}")
    what = f"rig class {rig_class.__name__}"
    for attribute in ("name", "measure", "observe", "unit_response_dims"):
        if not hasattr(rig_class, attribute):
            raise SimlabError(f"{what} does not set {attribute!r} (see simlab.recording.rigs.Rig)")
    if rig_class.measure not in MEASURES:
        raise SimlabError(
            f"{what}: measure {rig_class.measure!r} is not one of the recording contract's ({', '.join(MEASURES)})"
        )
    dims = tuple(rig_class.unit_response_dims)
    if not set(dims) <= set(UNIT_RESPONSE_DIMS) or len(set(dims)) != len(dims):
        raise SimlabError(f"{what}: unit_response_dims {dims} are not distinct axes of {UNIT_RESPONSE_DIMS}")
    if "stimulus" in dims and not rig_class.shows_stimuli:
        raise SimlabError(f"{what}: measured values over stimuli need shows_stimuli = True")
    if rig_class.measure_session is Rig.measure_session:
        raise SimlabError(f"{what} does not define measure_session (see simlab.recording.rigs.Rig)")
    if rig_class.sums_terms and (rig_class.measure_terms is Rig.measure_terms or rig_class.sum_terms is Rig.sum_terms):
        raise SimlabError(f"{what} sums terms but does not define measure_terms and sum_terms (see simlab.recording.rigs.Rig)")
    if rig_class.sums_terms and not set(rig_class.term_dims) <= set(UNIT_RESPONSE_DIMS):
        raise SimlabError(f"{what}: term_dims {tuple(rig_class.term_dims)} are not axes of {UNIT_RESPONSE_DIMS}")
    return RIGS.register(rig_class.name, rig_class, replace=replace)


@register_rig
class SynapseRig(Rig):
    """Reads each site's kernel: the recorded synapses' weights (bias excluded)."""

    name = "synapse"
    measure = "weight"
    observe = staticmethod(weight_observables)
    unit_response_dims = ("unit",)
    unit_index_meaning = "index of each recorded synapse in the flattened kernel"
    shows_stimuli = False

    def available_units(self, network: Network, input_shape) -> dict[str, tuple[int, int]]:
        sizes = network.kernel_sizes(input_shape)
        return {name: (sizes[name], 0) for name in network.site_names}

    def measure_session(self, network, params, stimuli, units, inputs):
        """Kernel entries of the recorded synapses of one session: [k] per site."""
        return {name: params[name]["w"].reshape(-1)[units[name]] for name in network.site_names}


@register_rig
class ElectrophysiologyRig(Rig):
    """Records each site's output units (after the nonlinearity) for every stimulus."""

    name = "electrophysiology"
    measure = "activation"
    observe = staticmethod(activation_observables)
    unit_response_dims = ("stimulus", "unit")
    counts_spikes = True

    def measure_session(self, network, params, stimuli, units, inputs):
        """Responses of the recorded units of one session: [stimulus, k] per site."""
        _, sites = network.apply(params, {}, stimuli)
        return {name: sites[name].output.reshape(len(stimuli), -1)[:, units[name]] for name in network.site_names}


@register_rig
class PairedRig(Rig):
    """Stimulates each site's (pre-synaptic) inputs and records its (post-synaptic) outputs."""

    name = "paired"
    measure = "activity_change"
    observe = staticmethod(activity_change_observables)
    unit_response_dims = ("stimulus",)
    samples_inputs = True

    sums_terms = True
    term_dims = ("stimulus", "unit")  # one term per stimulus and recorded pre-synaptic unit

    def measure_terms(self, network, params, stimuli, units, inputs):
        """Per stimulus, site and recorded pre-synaptic unit i: sum_{j in post} dy_j / dx_i."""
        _, sites = network.apply(params, {}, stimuli)
        probes = {name: jnp.zeros_like(site.input) for name, site in sites.items()}

        def recorded_output(probes):
            _, probed = network.apply(params, {}, stimuli, probes)
            return sum(
                jnp.sum(probed[name].output.reshape(len(stimuli), -1)[:, units[name]]) for name in network.site_names
            )

        sensitivity = jax.grad(recorded_output)(probes)
        return {name: sensitivity[name].reshape(len(stimuli), -1)[:, inputs[name]] for name in network.site_names}

    def sum_terms(self, terms, units, inputs):
        """(1/N_post) times the sum over the recorded pre-synaptic units, per stimulus."""
        return {name: jnp.sum(value, axis=-1) / units[name].shape[0] for name, value in terms.items()}

    def measure_session(self, network, params, stimuli, units, inputs):
        """Per stimulus and site: (1/N_post) sum_{i in pre} sum_{j in post} dy_j / dx_i."""
        return self.sum_terms(self.measure_terms(network, params, stimuli, units, inputs), units, inputs)
