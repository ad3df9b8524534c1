"""Rig settings, as protocol schema models (``rigs:`` in a protocol, rig YAML files, ``simlab record`` flags).

A rig is what an experimentalist chooses: which units (how many, the same ones every session
or new ones), through what measurement noise, at which sessions, with which stimuli, and
whether to keep the raw per-unit responses next to the observables.

A rig's ``type`` is the name of a registered rig class (:data:`simlab.registry.RIGS`; the
built-ins and :func:`simlab.recording.rigs.register_rig` are in :mod:`simlab.recording.rigs`).
The checks that depend on the type ask the registered class: ``counts_spikes`` (whether its
values are firing rates, which Poisson noise needs) and ``shows_stimuli`` (whether it presents
stimuli at all), so this layer never names a rig type it does not set a default for.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator
from pydantic_core import PydanticCustomError

from simlab.specs.strict import Seed, StrictSpec
from simlab.registry import RIGS, unknown_name_message

RIG_TYPES = RIGS.keys()  # a live view: a rig type registered later is a rig type here too
DEFAULT_RIG_TYPES = ("synapse", "electrophysiology", "paired")  # a protocol without ``rigs:``: one of each
NOISE_MODELS = ("gaussian", "gain", "lognormal", "poisson")
PERCENTILE_METHODS = ("nearest", "linear")  # how median and third quartile pick a value
DEFAULT_PERCENTILES = "nearest"  # the reference's (TensorFlow contrib's default)
NOISE_PLACEMENTS = ("terms", "total")  # where a rig that sums measured terms adds its noise


class _Strict(StrictSpec):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSpec(_Strict):
    """Which of the run's sessions a rig records, applied in this order:

    ``window`` keeps sessions whose training fraction (step / total steps) lies in
    [start, end]; ``every`` keeps every k-th of those (the first included); ``count`` picks
    that many of what remains, spaced ``linear`` (evenly in training steps, each target served
    by the nearest session) or ``log`` (geometrically in session order: positions
    round(geomspace(1, n, count)) - 1 of the n remaining sessions, dense early in training).
    """

    window: tuple[float, float] = (0.0, 1.0)
    every: PositiveInt = 1
    count: Optional[PositiveInt] = None
    spacing: Literal["linear", "log"] = "linear"

    @field_validator("window")
    @classmethod
    def _check_window(cls, value):
        start, end = value
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"a window is [start, end] with 0 <= start <= end <= 1, got [{start}, {end}]")
        return value


class StimulusSpec(_Strict):
    """The rig's own stimulus set: held-out task inputs, or Gaussian noise inputs shaped like them.

    Fixed per run: the same settings always give the same set, saved in the run directory.
    """

    source: Literal["heldout", "noise"] = "heldout"
    size: PositiveInt = 256
    seed: Seed = 0


class RigSpec(_Strict):
    """One recording instrument.

    ``type``: a registered rig type (the built-ins: synapse, electrophysiology, paired).
    ``units``: ``"all"``, a count (an int >= 1: that many units per site, or all of them when
    the site has fewer), or a fraction (a float in (0, 1]: ceil(fraction * units)).
    ``sampling``: ``chronic`` records the same units at every session, ``acute`` draws new
    ones each session. ``noise_model`` and ``noise`` (its scale; see ``simlab.recording.noise``
    for the equations); Poisson spike counts use ``rate_gain`` (firing rate per unit of
    activation, Hz) and ``count_window`` (seconds). ``seed``: the rig's own seed for unit
    sampling and noise.

    Two settings choose between the reference's definitions and simlab's earlier ones:
    ``percentiles`` (median, third quartile and skew's median): ``nearest``, the reference's
    (TensorFlow contrib's ``percentile``, one of the values, see
    :func:`simlab.recording.observables.percentile_index`), or ``linear`` (numpy's default
    interpolation). ``noise_placement``: ``terms``, the reference's, adds noise to every
    measured term before the rig sums anything (for the paired rig each pre-synaptic unit's
    term sum_j dy_j/dx_i, so the activity change carries sd * sqrt(N_pre) / N_post), or
    ``total``: once on the paired rig's per-stimulus activity change (sd). Rigs that sum
    nothing (synapse, electrophysiology) measure the same either way and take ``terms``.
    """

    type: str
    units: Union[Literal["all"], int, float] = "all"
    sampling: Literal["chronic", "acute"] = "chronic"
    noise_model: Literal["gaussian", "gain", "lognormal", "poisson"] = "gaussian"
    noise: float = Field(0.0, ge=0.0)
    rate_gain: PositiveFloat = 20.0
    count_window: PositiveFloat = 0.5
    seed: Seed = 0
    noise_placement: Literal["terms", "total"] = "terms"
    percentiles: Literal["nearest", "linear"] = DEFAULT_PERCENTILES
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    stimuli: Optional[StimulusSpec] = None
    keep_units: bool = False
    max_unit_bytes: PositiveInt = 2**30

    @field_validator("type")
    @classmethod
    def _check_type(cls, value):
        if value not in RIGS:
            raise PydanticCustomError("unknown_rig_type", unknown_name_message("rig type", value, RIGS))
        return value

    @field_validator("units")
    @classmethod
    def _check_units(cls, value):
        if isinstance(value, bool):
            raise ValueError("expected 'all', a count >= 1 or a fraction in (0, 1]")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a unit count must be >= 1, got {value}")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"a unit fraction must be in (0, 1], got {value}")
        return value

    @model_validator(mode="after")
    def _check_settings_of_the_type(self):
        rig = RIGS[self.type]
        if self.noise_model == "poisson" and not rig.counts_spikes:
            spiking = " or ".join(name for name, other in RIGS.items() if other.counts_spikes) or "none registered"
            raise ValueError(f"noise_model poisson counts spikes: it needs a spiking rig ({spiking}), not {self.type}")
        if self.noise_model == "poisson" and self.noise != 0.0:
            raise ValueError("noise_model poisson is set by rate_gain and count_window; leave noise at 0")
        if self.noise_placement == "total" and not rig.sums_terms:
            summing = " or ".join(name for name, other in RIGS.items() if other.sums_terms) or "none registered"
            raise ValueError(
                f"noise_placement total is for rigs that sum measured terms ({summing}); "
                f"a {self.type} rig's values are its terms: leave noise_placement at terms"
            )
        if self.stimuli is not None and not rig.shows_stimuli:
            raise ValueError(f"a {self.type} rig reads {rig.measure}s and shows no stimuli; remove 'stimuli'")
        return self
