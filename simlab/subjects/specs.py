"""Architecture and task settings, as protocol schema models.

A protocol names architectures and tasks in ``cohort``; a name is either a built-in preset
(``PRESET_ARCHITECTURES``, ``PRESET_TASKS``) or an entry of the protocol's top-level
``architectures:`` / ``tasks:`` mappings, which define variants of a ``type``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLPSpec(_Strict):
    """Fully connected ReLU network: hidden dense layers, then a linear readout."""

    type: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 128], min_length=1)


class Conv1DSpec(_Strict):
    """1-D convolutional ReLU network: conv layers, then a dense layer and a linear readout."""

    type: Literal["conv1d"] = "conv1d"
    channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32], min_length=1)
    kernel_size: PositiveInt = 5
    stride: PositiveInt = 2
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64])


ArchitectureSpec = Annotated[Union[MLPSpec, Conv1DSpec], Field(discriminator="type")]


class MNIST1DSpec(_Strict):
    """mnist1d (Greydanus 2020): 10 classes of 1-D signals of length 40, generated locally."""

    type: Literal["mnist1d"] = "mnist1d"
    num_samples: PositiveInt = 5000
    data_seed: int = 42


class DigitsSpec(_Strict):
    """scikit-learn's 8x8 handwritten digits (shipped with scikit-learn), as 64-long signals."""

    type: Literal["digits"] = "digits"
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    data_seed: int = 0


TaskSpec = Annotated[Union[MNIST1DSpec, DigitsSpec], Field(discriminator="type")]

PRESET_ARCHITECTURES: dict[str, BaseModel] = {"mlp": MLPSpec(), "conv1d": Conv1DSpec()}
PRESET_TASKS: dict[str, BaseModel] = {"mnist1d": MNIST1DSpec(), "digits": DigitsSpec()}
