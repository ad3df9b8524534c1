"""Rig settings, as protocol schema models (``rigs:`` in a protocol, ``simlab record`` flags)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

RIG_TYPES = ("synapse", "electrophysiology", "paired")


class RigSpec(BaseModel):
    """One recording instrument.

    ``units``: ``"all"``, a count (an int >= 1: that many units per site, or all of them when
    the site has fewer), or a fraction (a float in (0, 1]: ceil(fraction * units)). The same
    units are recorded at every session. ``noise``: standard deviation of additive Gaussian
    measurement noise. ``seed``: the rig's own seed for unit sampling and noise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["synapse", "electrophysiology", "paired"]
    units: Union[Literal["all"], int, float] = "all"
    noise: float = Field(0.0, ge=0.0)
    seed: int = 0

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
