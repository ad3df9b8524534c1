"""Rig settings, as protocol schema models (``rigs:`` in a protocol, rig YAML files, ``simlab record`` flags).

A rig is what an experimentalist chooses: which units (how many, the same ones every session
or new ones), through what measurement noise, at which sessions, with which stimuli, and
whether to keep the raw per-unit responses next to the observables.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

RIG_TYPES = ("synapse", "electrophysiology", "paired")
NOISE_MODELS = ("gaussian", "gain", "lognormal", "poisson")


class _Strict(BaseModel):
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
    seed: int = Field(0, ge=0)


class RigSpec(_Strict):
    """One recording instrument.

    ``units``: ``"all"``, a count (an int >= 1: that many units per site, or all of them when
    the site has fewer), or a fraction (a float in (0, 1]: ceil(fraction * units)).
    ``sampling``: ``chronic`` records the same units at every session, ``acute`` draws new
    ones each session. ``noise_model`` and ``noise`` (its scale; see ``simlab.recording.noise``
    for the equations); Poisson spike counts use ``rate_gain`` (firing rate per unit of
    activation, Hz) and ``count_window`` (seconds). ``seed``: the rig's own seed for unit
    sampling and noise.
    """

    type: Literal["synapse", "electrophysiology", "paired"]
    units: Union[Literal["all"], int, float] = "all"
    sampling: Literal["chronic", "acute"] = "chronic"
    noise_model: Literal["gaussian", "gain", "lognormal", "poisson"] = "gaussian"
    noise: float = Field(0.0, ge=0.0)
    rate_gain: PositiveFloat = 20.0
    count_window: PositiveFloat = 0.5
    seed: int = Field(0, ge=0)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    stimuli: Optional[StimulusSpec] = None
    keep_units: bool = False
    max_unit_bytes: PositiveInt = 2**30

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
    def _check_noise_model(self):
        if self.noise_model == "poisson" and self.type != "electrophysiology":
            raise ValueError(f"noise_model poisson counts spikes: it needs an electrophysiology rig, not {self.type}")
        if self.noise_model == "poisson" and self.noise != 0.0:
            raise ValueError("noise_model poisson is set by rate_gain and count_window; leave noise at 0")
        if self.stimuli is not None and self.type == "synapse":
            raise ValueError("a synapse rig reads weights and shows no stimuli; remove 'stimuli'")
        return self
