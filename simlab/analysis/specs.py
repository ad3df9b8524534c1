"""Analysis settings, as protocol schema models (``analyses:`` in a protocol)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

CLASSIFIERS = ("random_forest", "linear_svm")


class IdentifySpec(BaseModel):
    """Identify the learning rule from session trajectories of the observables.

    ``group_by: subject`` keeps all layers of a subject on one side of every split;
    ``layer`` reproduces the reference's splits over layers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classifiers: list[Literal["random_forest", "linear_svm"]] = Field(
        default_factory=lambda: list(CLASSIFIERS), min_length=1
    )
    splits: PositiveInt = 10
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    group_by: Literal["subject", "layer"] = "subject"
    target: str = "learning_rule"
    seed: int = 0


ANALYSES: dict[str, type[BaseModel]] = {"identify": IdentifySpec}
