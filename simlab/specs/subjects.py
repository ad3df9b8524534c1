"""Architecture and task settings, as protocol schema models.

A protocol names architectures and tasks in ``cohort``; a name is either a built-in preset
(``PRESET_ARCHITECTURES``, ``PRESET_TASKS``) or an entry of the protocol's top-level
``architectures:`` / ``tasks:`` mappings, which define variants of a ``type``. An
architecture's ``type`` is a name in :data:`simlab.registry.ARCHITECTURES`, whose entry holds
the settings model (the built-in ones are here) and the input layout; the types are registered
with their implementation by :mod:`simlab.subjects.architectures`.

Inputs come in two layouts: *signals* ``[length, channels]`` (mnist1d, digits, the vector
teacher task) and *images* ``[height, width, channels]`` (cifar10, the image teacher task).
``mlp`` reads either (it flattens); ``conv1d`` needs signals; ``knet``, ``alexnet`` and
``resnet`` need images (each type's registered ``layout``). A protocol that pairs an architecture with a task of the other layout
is refused by ``simlab validate`` (:func:`input_layout_conflict`).

Presets of the image architectures come in two sizes: the plain names (``knet``,
``alexnet_lrn``, ``resnet18v2``, ...) are small, for 16x16 or 32x32 inputs on a laptop CPU;
the ``*_paper`` names are the sizes of the reference (Nayebi et al. 2020), for accelerators.

Every task has an ``objective``: ``supervised`` (cross-entropy on the labels) or
``contrastive`` (SimCLR-style self-supervision, settings in :class:`ContrastiveSpec`); the
``*_simclr`` presets are the contrastive versions of the built-in tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from simlab.specs.strict import Seed, StrictSpec
from simlab.registry import ARCHITECTURES


class _Strict(StrictSpec):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- architectures


class MLPSpec(_Strict):
    """Fully connected ReLU network: hidden dense layers, then a linear readout.

    ``hidden`` lists the widths; ``depth`` and ``width`` are a shorthand for ``depth`` layers
    of ``width`` units (``hidden`` is then filled in; giving both forms must agree).
    """

    type: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 128], min_length=1)
    depth: PositiveInt | None = None
    width: PositiveInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _depth_and_width(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or (data.get("depth") is None and data.get("width") is None):
            return data
        depth, width = data.get("depth"), data.get("width")
        if not (isinstance(depth, int) and isinstance(width, int)) or depth < 1 or width < 1:
            return data  # the field errors say what is wrong
        hidden = [width] * depth
        if data.get("hidden") is not None and list(data["hidden"]) != hidden:
            raise ValueError(f"hidden {data['hidden']} disagrees with depth {depth} x width {width}")
        return {**data, "hidden": hidden}

    @model_validator(mode="after")
    def _both_or_neither(self) -> "MLPSpec":
        if (self.depth is None) != (self.width is None):
            raise ValueError("give depth and width together (or hidden alone)")
        return self


class Conv1DSpec(_Strict):
    """1-D convolutional ReLU network: conv layers, then a dense layer and a linear readout."""

    type: Literal["conv1d"] = "conv1d"
    channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32], min_length=1)
    kernel_size: PositiveInt = 5
    stride: PositiveInt = 2
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64])


class KNetSpec(_Strict):
    """The reference's small CIFAR-10 net (cuda-convnet's): conv 32 5x5, pool; conv 32 5x5,
    pool; conv 64 5x5, pool; then ``hidden`` dense layers (none in the reference) and a
    linear readout.

    ``extra_conv`` adds a 4th conv layer (``channels[-1]`` channels, same kernel) with its
    pool; ``lrn`` adds local response normalization after each pool; ``width`` scales every
    conv's channels (at least 1). Pools are ``pool_size`` x ``pool_size`` with stride 2.
    """

    type: Literal["knet"] = "knet"
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 32, 64], min_length=1)
    kernel_size: PositiveInt = 5
    extra_conv: bool = False
    lrn: bool = False
    pool: Literal["max", "avg"] = "max"
    pool_size: PositiveInt = 3
    width: PositiveFloat = 1.0
    hidden: list[PositiveInt] = Field(default_factory=list)


class AlexNetSpec(_Strict):
    """AlexNet (Krizhevsky et al. 2012), one tower: five conv layers (max pools after the
    1st, 2nd and 5th; LRN after the 1st and 2nd when ``lrn``), two dense layers, a linear
    readout. ``width`` scales conv channels and dense widths; kernel sizes and strides are
    fields so that small inputs keep a sensible spatial size."""

    type: Literal["alexnet"] = "alexnet"
    channels: list[PositiveInt] = Field(default_factory=lambda: [96, 256, 384, 384, 256], min_length=5, max_length=5)
    kernel_sizes: list[PositiveInt] = Field(default_factory=lambda: [11, 5, 3, 3, 3], min_length=5, max_length=5)
    strides: list[PositiveInt] = Field(default_factory=lambda: [4, 1, 1, 1, 1], min_length=5, max_length=5)
    hidden: list[PositiveInt] = Field(default_factory=lambda: [4096, 4096])
    lrn: bool = False
    pool_size: PositiveInt = 3
    width: PositiveFloat = 1.0


class ResNetSpec(_Strict):
    """ResNet with basic blocks (two 3x3 convs): ``version`` 1 (He et al. 2016a: the
    addition, then ReLU) or 2 (He et al. 2016b: pre-activation, identity path untouched).

    ``blocks`` per stage ([2, 2, 2, 2]: ResNet-18; [3, 4, 6, 3]: ResNet-34), ``widths`` per
    stage (stages after the first halve the resolution), a stem conv (``stem_kernel``,
    ``stem_stride``, then a 3x3 stride-2 max pool when ``stem_pool``), global average
    pooling and a linear readout; ``width`` scales every conv's channels.

    No batch normalization (its running statistics are mutable state and it mixes examples,
    which breaks per-example layer-local derivatives): where BN sits in the papers, a
    parameter-free per-example scale-only normalization (``rms_normalize``: each example
    divided by the root mean square of its units) is used, see
    :mod:`simlab.subjects.architectures.resnet` for where it enters the sites.
    """

    type: Literal["resnet"] = "resnet"
    version: Literal[1, 2] = 1
    blocks: list[PositiveInt] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1)
    widths: list[PositiveInt] = Field(default_factory=lambda: [64, 128, 256, 512], min_length=1)
    stem_channels: PositiveInt = 64
    stem_kernel: PositiveInt = 7
    stem_stride: PositiveInt = 2
    stem_pool: bool = True
    width: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _one_width_per_stage(self) -> "ResNetSpec":
        if len(self.blocks) != len(self.widths):
            raise ValueError(f"blocks has {len(self.blocks)} stages but widths has {len(self.widths)}")
        return self


# --------------------------------------------------------------------------- tasks


class SignalAugmentSpec(_Strict):
    """Random augmentations of a 1-D signal [length, channels] (one contrastive view), drawn
    independently per example, in this order (:func:`simlab.training.augment.augment_signals`):

    - ``crop``: crop-and-resize: keep a random window of at least ``crop`` x length samples
      and stretch it back to the full length by linear interpolation (1: off);
    - ``shift``: move the signal by a random whole number of samples in [-shift, shift],
      wrapping around (``shift_mode: circular``) or filling with zeros (``zero``);
    - ``scale``: multiply by a random amplitude in [scale[0], scale[1]];
    - ``noise``: add Gaussian jitter of this standard deviation;
    - ``mask``: zero one contiguous block of round(mask x length) samples at a random place
      (0: off).
    """

    crop: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    shift: NonNegativeInt = 4
    shift_mode: Literal["circular", "zero"] = "zero"
    scale: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: [0.8, 1.2]
    )
    noise: NonNegativeFloat = 0.1
    mask: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @model_validator(mode="after")
    def _scale_range(self) -> "SignalAugmentSpec":
        if self.scale[0] > self.scale[1]:
            raise _field_error(("scale",), f"expected [low, high] with low <= high, got {self.scale}", self.scale)
        return self


class ImageAugmentSpec(_Strict):
    """Random augmentations of an image [height, width, channels] (one contrastive view),
    drawn independently per example, in this order
    (:func:`simlab.training.augment.augment_images`):

    - ``crop_padding``: random crop with padding: pad each side with this many zero pixels and
      cut a window of the original size at a random offset (0: off);
    - ``flip``: mirror left-right with probability 1/2;
    - ``brightness``: add a random offset in [-brightness, brightness] to every pixel;
    - ``contrast``: scale deviations from the image's mean by a random factor in
      [1 - contrast, 1 + contrast];
    - ``noise``: add Gaussian pixel noise of this standard deviation.
    """

    crop_padding: NonNegativeInt = 2
    flip: bool = True
    brightness: NonNegativeFloat = 0.2
    contrast: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    noise: NonNegativeFloat = 0.1


class ContrastiveSpec(_Strict):
    """Self-supervised contrastive learning (SimCLR, Chen et al. 2020) of a task's inputs.

    Each batch becomes two augmented views of every example (``signal_augment`` for 1-D
    signals, ``image_augment`` for images: the one of the task's layout is used, the other
    must keep its defaults); the network's readout is replaced by a projection head of two
    dense layers (``projection_hidden`` ReLU units, then ``projection_dim`` linear units);
    the loss is NT-Xent with ``temperature``. The subject's health is the accuracy of a
    linear probe on the frozen representation (the projection head's input): ridge
    regression (penalty ``probe_ridge`` x examples, on standardized features) to one-hot
    labels, fitted on ``probe_examples`` examples of the train split (a fixed subsample when
    the split is larger) and scored on the whole test split.
    """

    temperature: PositiveFloat = 0.2
    projection_hidden: PositiveInt = 128
    projection_dim: PositiveInt = 64
    signal_augment: SignalAugmentSpec = Field(default_factory=SignalAugmentSpec)
    image_augment: ImageAugmentSpec = Field(default_factory=ImageAugmentSpec)
    probe_examples: PositiveInt = 5000
    probe_ridge: PositiveFloat = 0.01


def _field_error(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A validation error located at ``loc`` (field names) inside the model being validated, so
    that the protocol loader points at that key."""
    error = InitErrorDetails(type=PydanticCustomError("invalid_setting", message), loc=loc, input=value)
    return ValidationError.from_exception_data(".".join(loc), [error])


class _TaskSpec(_Strict):
    """What every task has: its ``type`` and its ``objective``.

    ``objective: supervised`` (the default) trains on the labels (cross-entropy of a linear
    readout); ``objective: contrastive`` ignores the labels during training and learns by
    contrasting augmented views (settings in ``contrastive``, defaults when left out); the
    labels then only score a linear probe.
    """

    type: str
    objective: Literal["supervised", "contrastive"] = "supervised"
    contrastive: ContrastiveSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_contrastive(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("objective") == "contrastive" and data.get("contrastive") is None:
            return {**data, "contrastive": {}}
        return data

    @model_serializer(mode="wrap")
    def _supervised_as_before(self, handler: Any) -> dict:
        """A supervised task is written without these two keys, so that the protocol text of
        a run (what tells a rerun of the same protocol from another one) stays as it was."""
        data = handler(self)
        if self.objective == "supervised" and isinstance(data, dict):
            data.pop("objective", None)
            data.pop("contrastive", None)
        return data

    @model_validator(mode="after")
    def _contrastive_settings(self) -> "_TaskSpec":
        if self.objective != "contrastive":
            if self.contrastive is not None:
                message = "contrastive settings need objective: contrastive (got supervised)"
                raise _field_error(("contrastive",), message, self.contrastive.model_dump())
            return self
        layout = task_layout(self)
        unused = {"signal": "image_augment", "image": "signal_augment"}.get(layout)
        if unused is not None and getattr(self.contrastive, unused) != type(getattr(self.contrastive, unused))():
            used = "signal_augment" if unused == "image_augment" else "image_augment"
            what = "1-D signals" if layout == "signal" else "images"
            message = f"{unused} is for the other input layout: this task gives {what}; set {used}"
            raise _field_error(("contrastive", unused), message, getattr(self.contrastive, unused).model_dump())
        return self


class MNIST1DSpec(_TaskSpec):
    """mnist1d (Greydanus 2020): 10 classes of 1-D signals of length 40, generated locally."""

    type: Literal["mnist1d"] = "mnist1d"
    num_samples: PositiveInt = 5000
    data_seed: Seed = 42


class DigitsSpec(_TaskSpec):
    """scikit-learn's 8x8 handwritten digits (shipped with scikit-learn): as 64-long signals read
    row by row (``layout: signal``, for MLPs and 1-D conv nets) or as [8, 8, 1] images
    (``layout: image``, for the image nets: a real image task small enough for 2 CPU cores)."""

    type: Literal["digits"] = "digits"
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    data_seed: Seed = 0
    layout: Literal["signal", "image"] = "signal"


class CIFAR10Spec(_TaskSpec):
    """CIFAR-10 from a local directory in the official python format (``data_batch_1`` ..
    ``data_batch_5``, ``test_batch``, ``batches.meta``), as [32, 32, 3] images normalized per
    channel with training-split statistics. ``max_train`` / ``max_test`` keep the first
    examples; ``resolution`` (32, 16 or 8) averages 32 / resolution pixel blocks."""

    type: Literal["cifar10"] = "cifar10"
    path: str = Field(min_length=1)  # "" would be the working directory
    max_train: PositiveInt | None = None
    max_test: PositiveInt | None = None
    resolution: Literal[32, 16, 8] = 32


class TeacherSpec(_TaskSpec):
    """Labels from a fixed random teacher network: Gaussian inputs, a ReLU MLP teacher with
    ``teacher_hidden`` layers, label = argmax of its ``n_classes`` outputs (centered so that
    classes are about balanced). Inputs are signals [input_dim, 1], or images when
    ``image_shape`` [height, width, channels] is given (then input_dim is their product).
    An image is a coarse Gaussian image of ``teacher_resolution`` x ``teacher_resolution``
    pixels (channels kept; height and width must be multiples of it), which the teacher
    reads, upsampled to ``image_shape`` (blocks of equal pixels) plus Gaussian pixel noise
    of standard deviation ``pixel_noise``: labels depend on coarse spatial structure.
    Everything is drawn from ``data_seed``."""

    type: Literal["teacher"] = "teacher"
    n_classes: Annotated[int, Field(ge=2)] = 10
    input_dim: PositiveInt | None = None
    image_shape: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None = None
    n_train: PositiveInt = 4000
    n_test: PositiveInt = 1000
    teacher_hidden: list[PositiveInt] = Field(default_factory=lambda: [64])
    teacher_resolution: PositiveInt = 4
    pixel_noise: Annotated[float, Field(ge=0.0)] = 0.5
    data_seed: Seed = 0

    @model_validator(mode="after")
    def _input_dim(self) -> "TeacherSpec":
        if self.image_shape is not None:
            size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
            if self.input_dim is not None and self.input_dim != size:
                raise ValueError(f"input_dim {self.input_dim} disagrees with image_shape {self.image_shape} ({size})")
            if any(side % self.teacher_resolution for side in self.image_shape[:2]):
                raise ValueError(
                    f"image_shape {self.image_shape}: height and width must be multiples of "
                    f"teacher_resolution {self.teacher_resolution}"
                )
        return self

    @property
    def dim(self) -> int:
        """The number of input values of one example."""
        if self.image_shape is not None:
            return self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        return 64 if self.input_dim is None else self.input_dim


TaskSpec = Annotated[
    Union[MNIST1DSpec, DigitsSpec, CIFAR10Spec, TeacherSpec], Field(discriminator="type")
]

# --------------------------------------------------------------------------- input layouts


def architecture_layout(spec: Any) -> str | None:
    """The input layout an architecture needs ("signal" or "image"), None for either or unknown:
    its type's ``layout`` in :data:`simlab.registry.ARCHITECTURES`. ``spec``: a model or a raw
    mapping from a protocol file."""
    kind = spec.get("type") if isinstance(spec, Mapping) else getattr(spec, "type", None)
    entry = ARCHITECTURES.get(kind) if isinstance(kind, str) else None
    return None if entry is None else entry.layout


def task_layout(spec: Any) -> str | None:
    """The input layout of a task ("signal" or "image"), None where unknown (an invalid entry)."""
    get = spec.get if isinstance(spec, Mapping) else lambda key: getattr(spec, key, None)
    kind = get("type")
    if kind == "mnist1d":
        return "signal"
    if kind == "digits":
        return get("layout") or "signal"
    if kind == "cifar10":
        return "image"
    if kind == "teacher":
        return "signal" if get("image_shape") is None else "image"
    return None


def input_layout_conflict(architecture: Any, task: Any) -> str | None:
    """Why an architecture cannot read a task's inputs, or None when it can."""
    needed, given = architecture_layout(architecture), task_layout(task)
    if needed is None or given is None or needed == given:
        return None
    what = {"signal": "1-D signals [length, channels]", "image": "images [height, width, channels]"}
    return f"needs {what[needed]}, but the task gives {what[given]}"


# --------------------------------------------------------------------------- presets

_SMALL_RESNET = dict(widths=[8, 16, 32, 64], stem_channels=8, stem_kernel=3, stem_stride=1, stem_pool=False)
_SMALL_KNET = dict(channels=[8, 8, 16])
_SMALL_ALEXNET = dict(
    channels=[16, 32, 48, 48, 32], kernel_sizes=[5, 3, 3, 3, 3], strides=[1, 1, 1, 1, 1], hidden=[128, 128]
)

PRESET_ARCHITECTURES: dict[str, BaseModel] = {
    "mlp": MLPSpec(),
    "conv1d": Conv1DSpec(),
    # small: 16x16 or 32x32 inputs, trains on a laptop CPU
    "knet": KNetSpec(**_SMALL_KNET),
    "knet_lrn": KNetSpec(**_SMALL_KNET, lrn=True),
    "knet4": KNetSpec(**_SMALL_KNET, extra_conv=True),
    "alexnet": AlexNetSpec(**_SMALL_ALEXNET),
    "alexnet_lrn": AlexNetSpec(**_SMALL_ALEXNET, lrn=True),
    "resnet18": ResNetSpec(version=1, blocks=[2, 2, 2, 2], **_SMALL_RESNET),
    "resnet18v2": ResNetSpec(version=2, blocks=[2, 2, 2, 2], **_SMALL_RESNET),
    "resnet34": ResNetSpec(version=1, blocks=[3, 4, 6, 3], **_SMALL_RESNET),
    "resnet34v2": ResNetSpec(version=2, blocks=[3, 4, 6, 3], **_SMALL_RESNET),
    # the reference's sizes (KNet for 32x32 CIFAR-10, the others for 224x224 ImageNet)
    "knet_paper": KNetSpec(),
    "knet_lrn_paper": KNetSpec(lrn=True),
    "knet4_paper": KNetSpec(extra_conv=True),
    "alexnet_paper": AlexNetSpec(),
    "alexnet_lrn_paper": AlexNetSpec(lrn=True),
    "resnet18_paper": ResNetSpec(version=1, blocks=[2, 2, 2, 2]),
    "resnet18v2_paper": ResNetSpec(version=2, blocks=[2, 2, 2, 2]),
    "resnet34_paper": ResNetSpec(version=1, blocks=[3, 4, 6, 3]),
    "resnet34v2_paper": ResNetSpec(version=2, blocks=[3, 4, 6, 3]),
}
PRESET_TASKS: dict[str, BaseModel] = {
    "mnist1d": MNIST1DSpec(),
    "digits": DigitsSpec(),
    "teacher": TeacherSpec(),
    "teacher_image": TeacherSpec(image_shape=[16, 16, 3]),
    # self-supervised (SimCLR) versions: the same data, labels used only by the linear probe.
    # mnist1d's own generator moves its digits circularly by up to 2/3 of the signal and
    # stretches them: views get the same nuisances (measured in the README); digits are 8x8
    # images read row by row, so a view moves them by at most one pixel along the row
    "mnist1d_simclr": MNIST1DSpec(
        objective="contrastive",
        contrastive=ContrastiveSpec(
            signal_augment=SignalAugmentSpec(crop=0.7, shift=20, shift_mode="circular", mask=0.2)
        ),
    ),
    "digits_simclr": DigitsSpec(
        objective="contrastive", contrastive=ContrastiveSpec(signal_augment=SignalAugmentSpec(crop=1.0, shift=1))
    ),
    # the same digits as 8x8 images for the image nets; their views move a digit by at most one
    # pixel (zero padding 1, then an 8x8 crop), never flip it (a flipped 2 is no 2), and vary
    # its contrast and brightness a little
    "digits_image": DigitsSpec(layout="image"),
    "digits_image_simclr": DigitsSpec(
        layout="image",
        objective="contrastive",
        contrastive=ContrastiveSpec(
            image_augment=ImageAugmentSpec(crop_padding=1, flip=False, brightness=0.2, contrast=0.2, noise=0.1)
        ),
    ),
    # the image teacher's labels follow the coarse image, which crops and flips change: its
    # views differ by what the task itself varies, pixel noise (and a little brightness and
    # contrast)
    "teacher_image_simclr": TeacherSpec(
        image_shape=[16, 16, 3],
        objective="contrastive",
        contrastive=ContrastiveSpec(
            image_augment=ImageAugmentSpec(crop_padding=0, flip=False, brightness=0.1, contrast=0.1, noise=0.5)
        ),
    ),
}
