"""Hyperparameters of each learning rule, as protocol schema models.

These pydantic models are the single source of truth for what ``training.rules.<rule>`` may
hold in a protocol file, and for the defaults. Defaults were tuned so that every rule learns
stably on the quickstart cohort (docs/results.md has the measurements).

Which rules exist is not written here: the rules layer registers each rule, with its model,
in :data:`simlab.registry.RULES` (:func:`simlab.rules.rules.register_rule`), and
:data:`RULE_HYPERPARAMETERS` and :data:`CREDIT_MECHANISMS` are live read-only views of that
registry. Of an entry this layer reads ``hyperparameters`` (the model) and
``credit_mechanism`` only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, create_model, model_serializer, model_validator

from simlab.specs.strict import StrictSpec
from simlab.registry import RULES


class RuleHyperparameters(StrictSpec):
    """The base of every rule's hyperparameters: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # the architecture types (``mlp``, ``conv1d``, ...) the rule can train; None: all of them
    architecture_types: ClassVar[tuple[str, ...] | None] = None


class SGDMomentum(RuleHyperparameters):
    """Backprop with SGD and (Nesterov) momentum."""

    learning_rate: PositiveFloat = 0.05
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True


class Adam(RuleHyperparameters):
    """Backprop with Adam."""

    learning_rate: PositiveFloat = 1e-3
    b1: float = Field(0.9, ge=0.0, lt=1.0)
    b2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: PositiveFloat = 1e-8


class FeedbackAlignment(SGDMomentum):
    """Fixed random feedback weights B; W trained with SGD and momentum."""

    learning_rate: PositiveFloat = 0.005


class InformationAlignment(SGDMomentum):
    """Feedback weights B trained by the local loss alpha*amp + beta*null + gamma*decay."""

    learning_rate: PositiveFloat = 0.01
    alpha: float = Field(2e-3, ge=0.0)
    beta: float = Field(1e-3, ge=0.0)
    gamma: float = Field(1e-3, ge=0.0)
    feedback_learning_rate: PositiveFloat = 0.001
    feedback_momentum: float = Field(0.9, ge=0.0, lt=1.0)


class KolenPollack(SGDMomentum):
    """B gets W's task-loss gradient plus its own weight decay, through an optimizer like W's.

    W and B both have weight decay ``weight_decay`` (on kernels, not biases), so B - W shrinks
    by the optimizer's step on ``weight_decay * (B - W)`` every step (Akrout et al. 2019).
    """

    learning_rate: PositiveFloat = 0.01
    weight_decay: float = Field(1e-2, ge=0.0)


class _LocalAlignment(SGDMomentum):
    """B trained by a local loss alpha*decay + beta*<alignment term> with its own SGD."""

    learning_rate: PositiveFloat = 0.005
    alpha: float = Field(0.5, ge=0.0)
    beta: float = Field(1.0, ge=0.0)
    feedback_learning_rate: PositiveFloat = 0.01
    feedback_momentum: float = Field(0.9, ge=0.0, lt=1.0)


class WeightMirror(_LocalAlignment):
    """B trained by alpha*decay + beta*amp on Gaussian noise inputs (std ``noise_std``)."""

    noise_std: PositiveFloat = 1.0


class SymmetricAlignment(_LocalAlignment):
    """B trained by alpha*decay + beta*self (self = -sum W*B)."""


class SignSymmetry(SGDMomentum):
    """Error through sign(W) * |B_0|: fixed random magnitudes, signs following W.

    ``first_step``: the feedback kernel of the very first step. ``signs`` (the default):
    sign(W_0) * |B_0|, as BioTorch's frSF, which sets B from W on every forward pass, the
    first included; ``random``: the network's random initial B_0 (simlab before this
    setting). From the second step on both are sign(W_t) * |B_0|.
    """

    learning_rate: PositiveFloat = 0.005
    first_step: Literal["signs", "random"] = "signs"


class DirectFeedbackAlignment(SGDMomentum):
    """The output error sent to every hidden layer through a fixed random matrix (MLPs only)."""

    architecture_types: ClassVar[tuple[str, ...] | None] = ("mlp",)
    learning_rate: PositiveFloat = 0.01


class NodePerturbation(SGDMomentum):
    """Gradient estimated from the loss change under Gaussian noise (std ``noise_std``) added
    to the layers' pre-activations; W trained with SGD and momentum. ``perturb``: "all"
    layers at once, "each" layer in its own noisy pass, or "one" layer drawn per step;
    ``samples``: noise draws averaged per step (see
    :func:`simlab.rules.estimates.node_perturbation_estimate`)."""

    learning_rate: PositiveFloat = 0.0005
    noise_std: PositiveFloat = 0.01
    samples: int = Field(1, ge=1)
    perturb: Literal["all", "each", "one"] = "each"


class Hebbian(SGDMomentum):
    """Hidden layers learn by Oja's subspace rule at rate ``hebbian_learning_rate`` (with
    ``normalization`` "input_power": divided by each layer's mean squared input norm); the
    readout by the objective's gradient at ``learning_rate``; both with SGD and momentum."""

    learning_rate: PositiveFloat = 0.05
    hebbian_learning_rate: PositiveFloat = 0.1
    normalization: Literal["none", "input_power"] = "input_power"


class _RegistryView(Mapping[str, type[RuleHyperparameters]]):
    """A read-only mapping recomputed from the registry on every use, so that rules registered
    after import (a user's) are seen by the schema."""

    def __init__(self, compute: Callable[[], dict[str, type[RuleHyperparameters]]], what: str):
        self._compute, self._what = compute, what

    def __getitem__(self, name: str) -> type[RuleHyperparameters]:
        return self._compute()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._compute())

    def __len__(self) -> int:
        return len(self._compute())

    def __repr__(self) -> str:
        return f"<{self._what}: {', '.join(self)}>"


# rule name -> its hyperparameter model, in order of registration
RULE_HYPERPARAMETERS: Mapping[str, type[RuleHyperparameters]] = _RegistryView(
    lambda: {name: entry.hyperparameters for name, entry in RULES.items()}, "hyperparameters of the registered rules"
)


# Image conv nets (KNet, AlexNet, ResNets: no batch norm, see simlab.specs.subjects) diverge
# or collapse to one class at the 1-D defaults of SGD-based rules. Where the table of calibrated
# defaults has no entry for a rule on an image net (a user's rule or architecture), one tenth of
# each 1-D learning rate is the default (measured on teacher_image, 600 steps, batch 32: sgdm at
# 0.005 / 0.02 / 0.05 reached knet 0.30 / 0.16 / 0.12); Adam's 1e-3 works on both.
IMAGE_LEARNING_RATE_SCALE = 0.1

DEFAULTS_FILE = Path(__file__).with_name("rule_defaults.yaml")
"""The calibrated defaults that ship: per learning rule and architecture family (the
architecture's ``type``), and per calibrated preset architecture where its family has several
(a preset's own entry wins over its family's), the chosen rates and the range of rates under
which calibration found every seed healthy. Written by ``simlab calibrate --write-defaults`` (docs/rules.md says
how each entry was measured)."""


def is_rate(field: str) -> bool:
    """Learning rates are the settings that calibration searches and cohorts spread, and that
    training passes as runtime arguments (one compiled program serves every rate)."""
    return field.endswith("learning_rate")


def rate_fields(model: type[BaseModel] | BaseModel) -> tuple[str, ...]:
    """The rate settings of a rule's hyperparameters (``learning_rate``,
    ``feedback_learning_rate``, ``hebbian_learning_rate``...), in declaration order."""
    fields = model.model_fields if isinstance(model, type) else type(model).model_fields
    return tuple(name for name in fields if is_rate(name))


class CalibratedRates(StrictSpec):
    """Rates calibration chose for a population (or a family, in the shipped table), and the
    healthy range of each (low, high): every seed learned at each rate of the range it tried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rates: dict[str, PositiveFloat]
    healthy: dict[str, tuple[PositiveFloat, PositiveFloat]] = Field(default_factory=dict)


class DefaultsTable(BaseModel):
    """The file :data:`DEFAULTS_FILE`: where its entries came from, and the entries (rule ->
    architecture family -> :class:`CalibratedRates`; ``by_architecture``: rule -> preset
    architecture -> its own entry, which wins over its family's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provenance: dict[str, Any] = Field(default_factory=dict)
    defaults: dict[str, dict[str, CalibratedRates]] = Field(default_factory=dict)
    by_architecture: dict[str, dict[str, CalibratedRates]] = Field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def defaults_table(path: Path = DEFAULTS_FILE) -> DefaultsTable:
    """The shipped table of calibrated defaults (empty where the file is absent)."""
    if not path.is_file():
        return DefaultsTable()
    return DefaultsTable.model_validate(yaml.safe_load(path.read_text()) or {})


def table_defaults(name: str, family: str | None, preset: str | None = None) -> CalibratedRates | None:
    """The table's entry for rule ``name`` on the preset architecture ``preset`` (None for an
    architecture a protocol defines), else on its family ``family``, if any."""
    table = defaults_table()
    own = table.by_architecture.get(name, {}).get(preset) if preset is not None else None
    return own or (table.defaults.get(name, {}).get(family) if family is not None else None)


def default_hyperparameters(
    name: str, layout: str | None = None, family: str | None = None, preset: str | None = None
) -> RuleHyperparameters:
    """The defaults of a registered rule on an architecture of type ``family`` (the preset
    ``preset``, if it is one) reading ``layout`` ("image" for the image conv nets; None or
    "signal" otherwise): the calibrated rates of the shipped table where it has the pair, else
    the model's defaults, with the SGD-based rules' rates scaled by ``IMAGE_LEARNING_RATE_SCALE``
    on image nets."""
    defaults = RULE_HYPERPARAMETERS[name]()
    entry = table_defaults(name, family, preset)
    if entry is not None:
        return defaults.model_copy(update={k: v for k, v in entry.rates.items() if k in type(defaults).model_fields})
    if layout != "image" or isinstance(defaults, Adam):
        return defaults
    scaled = {
        field: float(f"{getattr(defaults, field) * IMAGE_LEARNING_RATE_SCALE:.6g}")  # 0.005, not 0.005000000000000001
        for field in ("learning_rate", "hebbian_learning_rate")
        if field in type(defaults).model_fields
    }
    return defaults.model_copy(update=scaled)


# --------------------------------------------------------------------------- rules defined in a protocol


def credit_mechanism_rules() -> dict[str, str]:
    """Credit mechanism -> the registered rule a protocol-defined rule with that ``credit``
    builds (with its own choice of W's optimizer).

    Each rule is registered under a credit mechanism (its own name, or "backprop" for sgdm and
    adam). The first rule registered under a mechanism whose hyperparameters extend
    :class:`SGDMomentum` provides it: a defined rule adds the optimizer choice to those
    settings, so Adam's model cannot carry one and "backprop" is sgdm's.
    """
    providers: dict[str, str] = {}
    for name, entry in RULES.items():
        if issubclass(entry.hyperparameters, SGDMomentum):
            providers.setdefault(entry.credit_mechanism, name)
    return providers


# credit mechanisms a protocol's own rule can pair with an optimizer -> their settings: backprop,
# and every registered rule that is not plain backprop (its settings come along: B's update, noise, ...)
CREDIT_MECHANISMS: Mapping[str, type[RuleHyperparameters]] = _RegistryView(
    lambda: {credit: RULES[name].hyperparameters for credit, name in credit_mechanism_rules().items()},
    "credit mechanisms",
)
OPTIMIZERS = ("sgd", "sgd_momentum", "adam")
_SGD_SETTINGS, _ADAM_SETTINGS = ("momentum", "nesterov"), ("b1", "b2", "eps")


def _optimizer_settings(data: Any) -> Any:
    """Each optimizer takes only its own settings; ``sgd`` is SGD without momentum."""
    if not isinstance(data, dict):
        return data
    optimizer = data.get("optimizer", "sgd_momentum")
    own, other = (_ADAM_SETTINGS, _SGD_SETTINGS) if optimizer == "adam" else (_SGD_SETTINGS, _ADAM_SETTINGS)
    given = [key for key in other if key in data]
    if optimizer in OPTIMIZERS and given:
        raise ValueError(f"{', '.join(given)}: not a setting of optimizer {optimizer} (it takes {', '.join(own)})")
    if optimizer == "sgd":
        if data.get("momentum", 0.0) != 0.0:
            raise ValueError("momentum: optimizer sgd has none (use optimizer sgd_momentum)")
        data = {**data, "momentum": 0.0}
    if optimizer == "sgd_momentum" and data.get("momentum") == 0.0:
        raise ValueError("momentum: optimizer sgd_momentum needs momentum > 0 (or use optimizer sgd)")
    return data


class _DefinedRule(RuleHyperparameters):
    """Written out with its optimizer's settings only, so that a dumped protocol reads back."""

    @model_serializer(mode="wrap")
    def _own_settings(self, handler):
        data = handler(self)
        other = _SGD_SETTINGS if getattr(self, "optimizer", None) == "adam" else _ADAM_SETTINGS
        return {key: value for key, value in data.items() if key not in other}


def defined_rule_model(credit: str) -> type[RuleHyperparameters]:
    """The settings of a protocol-defined rule with credit mechanism ``credit``: that
    mechanism's hyperparameters (defaults included), ``credit`` itself, the ``optimizer`` of W
    ("sgd", "sgd_momentum" or "adam") and Adam's ``b1``, ``b2``, ``eps``."""
    return _defined_rule_model(credit, CREDIT_MECHANISMS[credit])


@functools.lru_cache(maxsize=None)
def _defined_rule_model(credit: str, base: type[RuleHyperparameters]) -> type[RuleHyperparameters]:
    """One model per mechanism and base (a mechanism registered anew gets a new model)."""
    return create_model(
        f"Defined{base.__name__}",
        __base__=(base, _DefinedRule),
        __doc__=f"A protocol's own rule: {credit} credit with a choice of optimizer.",
        __validators__={"_optimizer_settings": model_validator(mode="before")(_optimizer_settings)},
        credit=(Literal[credit], ...),
        optimizer=(Literal[OPTIMIZERS], "sgd_momentum"),
        b1=(float, Field(Adam.model_fields["b1"].default, ge=0.0, lt=1.0)),
        b2=(float, Field(Adam.model_fields["b2"].default, ge=0.0, lt=1.0)),
        eps=(PositiveFloat, Adam.model_fields["eps"].default),
    )
