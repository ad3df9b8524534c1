"""The protocol schema: one pydantic model that is the single source of truth for a protocol file.

Every section forbids unknown keys. Validation reports every problem at once: field errors from
all sections and the checks that span sections (cohort names against ``architectures:`` and
``tasks:``, sessions against steps), each located by its path in the file, so that the loader
can point at lines. Sections that pydantic cannot type by itself (``training.rules`` and
``analyses``, whose model depends on the key; ``rigs``, whose ``type`` may come from the key) are
validated entry by entry by :class:`NamedEntries`, which keeps nested error locations. Entries
whose model is registered under their ``type`` (``architectures``) are validated by
:class:`RegisteredType`, a discriminated union whose members are known only at validation time.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    StrictInt,
    ValidationError,
    WrapValidator,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from simlab.specs.strict import MAX_SEED, MAX_STEPS, StrictSpec
from simlab.specs.analyses import ANALYSES, IdentifySpec
from simlab.errors import SimlabError
from simlab.registry import ARCHITECTURES, Registry
from simlab.specs.rigs import DEFAULT_RIG_TYPES, RIG_TYPES, RigSpec
from simlab.specs.rules import (
    CREDIT_MECHANISMS,
    RULE_HYPERPARAMETERS,
    CalibratedRates,
    default_hyperparameters,
    table_defaults,
    is_rate,
    defined_rule_model,
)
from simlab.specs.subjects import PRESET_ARCHITECTURES, PRESET_TASKS, TaskSpec, architecture_layout, input_layout_conflict

# --------------------------------------------------------------------------- error helpers


def unknown_name_message(kind: str, name: object, known: Iterable[str]) -> str:
    """One wording for every unknown name, with the known ones and a likely typo fix."""
    known = sorted(known)
    message = f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'})"
    close = difflib.get_close_matches(str(name), known, n=1)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


def _error(kind: str, message: str, loc: tuple = (), value: Any = None) -> InitErrorDetails:
    """A custom error at ``loc`` (relative to the value being validated)."""
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _rebased(exc: ValidationError, prefix: tuple) -> list[InitErrorDetails]:
    """The errors of a nested validation, moved under ``prefix``, type and context kept."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
            loc=(*prefix, *e["loc"]),
            input=e["input"],
        )
        for e in exc.errors(include_url=False)
    ]


def _raise_all(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise every collected error at once; pydantic keeps their locations when nested."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


# --------------------------------------------------------------------------- field types

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME_LENGTH = 64
"""Names (of the protocol, its rigs, architectures, tasks, rules) become directory and file
names: at most this long, one line, of letters, digits, '_', '-' and '.', not starting with
'.' or '-'."""


def name_problem(value: Any) -> str | None:
    """What is wrong with a name that becomes a file name (:data:`MAX_NAME_LENGTH`); None if nothing."""
    if isinstance(value, str) and _NAME.fullmatch(value) and len(value) <= MAX_NAME_LENGTH:
        return None
    shown = repr(value) if len(repr(value)) <= 70 else repr(value)[:67] + "..."
    return (f"expected a name of at most {MAX_NAME_LENGTH} letters, digits, '_', '-' and '.' that does not "
            f"start with '.' or '-', got {shown}")


def _invalid_name(value: Any) -> PydanticCustomError | None:
    """Names become directory and file names, and parts of subject ids."""
    problem = name_problem(value)
    return None if problem is None else PydanticCustomError("invalid_name", problem)


def _check_name(value: str) -> str:
    if problem := _invalid_name(value):
        raise problem
    return value


Name = Annotated[str, Field(strict=True), AfterValidator(_check_name)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
_Str = Annotated[str, Field(strict=True)]


def _as_list(value: Any) -> Any:
    """A single level is shorthand for a one-element factor."""
    return value if isinstance(value, (list, tuple)) else [value]


def _no_duplicates(levels: list) -> list:
    """A repeated level would train the same subjects twice under one id."""
    first: dict = {}
    errors = []
    for i, level in enumerate(levels):
        if level in first:
            message = f"duplicate level {level!r} (already at [{first[level]}])"
            errors.append(_error("duplicate_level", message, (i,), level))
        first.setdefault(level, i)
    _raise_all("factor", errors)
    return levels


def _factor(item: Any) -> Any:
    """A cohort factor: a non-empty list of distinct levels, or one level."""
    return Annotated[
        list[item], BeforeValidator(_as_list), Field(min_length=1), AfterValidator(_no_duplicates)
    ]


_Architectures = _factor(_Str)
_Tasks = _factor(_Str)
_LearningRules = _factor(_Str)  # built-in or defined in ``learning_rules:`` (a cross-section check)
_BatchSizes = _factor(PositiveInt)


@dataclass(frozen=True)
class NamedEntries:
    """Validate a mapping ``name -> settings`` whose model depends on the name.

    pydantic picks a union member by a field's value, never by a dict key, so each entry is
    validated here; nested errors keep their location under the entry's name. ``model(name)``
    returns the entry's model or raises a ValidationError; ``prepare(name, settings)`` may fill
    settings in from the name. A null entry means the model's defaults. Where the model
    depends on the settings (a defined rule's ``credit``), ``model`` is None and
    ``by_settings(name, settings)`` picks it.
    """

    model: Callable[[Any], type[BaseModel]] | None
    prepare: Callable[[Any, Any], Any] = lambda name, settings: settings
    by_settings: Callable[[Any, Any], type[BaseModel]] | None = None

    def model_for(self, name: Any) -> type[BaseModel] | None:
        """The model of an entry name, or None where the name is not a valid one (or does
        not decide the model)."""
        try:
            return None if self.model is None else self.model(name)
        except ValidationError:
            return None

    def __call__(self, value: Any, handler: Callable) -> dict:
        # ``handler`` (the declared dict type) is not called: it would validate without the name
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
        entries, errors = {}, []
        for name, settings in value.items():
            try:
                model = self.by_settings(name, settings) if self.model is None else self.model(name)
                if not isinstance(settings, model):
                    settings = model.model_validate(self.prepare(name, {} if settings is None else settings))
                entries[name] = settings
            except ValidationError as exc:
                errors += _rebased(exc, (name,))
        _raise_all("entries", errors)
        return entries


def _registry_entries(kind: str, registry: Mapping[str, type[BaseModel]]) -> NamedEntries:
    """Entries whose name is a key of ``registry`` (a learning rule, an analysis)."""

    def model(name: Any) -> type[BaseModel]:
        if name not in registry:
            _raise_all(kind, [_error("unknown_name", unknown_name_message(kind, name, registry), (), name)])
        return registry[name]

    return NamedEntries(model)


_MISSING = object()


@dataclass(frozen=True)
class RegisteredType:
    """Validate a mapping as the model that ``registry`` holds (an entry's ``spec``) under the
    mapping's ``type``: a discriminated union whose members are registered at run time (pydantic
    fixes a union's members when it builds the schema, before an extension registers one).

    Errors are those of ``Field(discriminator="type")``: same types, messages, context and
    locations (a member's errors are located under its tag, the label that :func:`locate`
    skips), so the loader words and places them as it does for a union.
    """

    registry: Registry
    key: str = "type"

    def tags(self) -> list[str]:
        return list(self.registry)

    def model_for(self, tag: Any) -> type[BaseModel] | None:
        """The model of a tag, None for one that is not registered."""
        entry = self.registry.get(tag) if isinstance(tag, str) else None
        return None if entry is None else entry.spec

    def __call__(self, value: Any, handler: Callable) -> BaseModel:
        # ``handler`` (the declared BaseModel) is not called: it knows no member
        if isinstance(value, Mapping):
            tag = value.get(self.key, _MISSING)
        elif isinstance(value, BaseModel):
            tag = getattr(value, self.key, _MISSING)
        else:
            raise PydanticCustomError(
                "model_attributes_type", "Input should be a valid dictionary or object to extract fields from"
            )
        if tag is _MISSING:
            raise PydanticCustomError(
                "union_tag_not_found", "Unable to extract tag using discriminator {discriminator}",
                {"discriminator": repr(self.key)},
            )
        model = self.model_for(tag)
        if model is None:
            raise PydanticCustomError(
                "union_tag_invalid",
                "Input tag '{tag}' found using {discriminator} does not match any of the expected tags: {expected_tags}",
                {"discriminator": repr(self.key), "tag": str(tag), "expected_tags": ", ".join(map(repr, self.tags()))},
            )
        if isinstance(value, model):
            return value
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            _raise_all(tag, _rebased(exc, (tag,)))


# an ``architectures:`` entry: the settings of a registered architecture type
ArchitectureSpec = Annotated[SerializeAsAny[BaseModel], WrapValidator(RegisteredType(ARCHITECTURES))]


def _defined_rule_model(name: Any, settings: Any) -> type[BaseModel]:
    """The model of a rule defined in ``learning_rules:``, chosen by its ``credit``."""
    if problem := _invalid_name(name):
        _raise_all("learning rule", [InitErrorDetails(type=problem, loc=(), input=name)])
    if name in RULE_HYPERPARAMETERS:
        message = f"{name!r} is a built-in learning rule: give the definition another name"
        _raise_all("learning rule", [_error("builtin_rule", message, (), name)])
    credit = settings.get("credit") if isinstance(settings, Mapping) else None
    if not isinstance(credit, str) or credit not in CREDIT_MECHANISMS:
        message = (
            f"missing key 'credit' (one of: {', '.join(CREDIT_MECHANISMS)})"
            if credit is None
            else unknown_name_message("credit mechanism", credit, CREDIT_MECHANISMS)
        )
        _raise_all("learning rule", [_error("credit", message, ("credit",), credit)])
    return defined_rule_model(credit)


BY_KEYS = ("by_task", "by_architecture", "by_batch_size")
"""Keys of a ``training.rules`` entry that hold settings for some populations only, applied in
this order (so an architecture's setting wins over a task's, a batch size's over both)."""


class RuleOverrides(StrictSpec):
    """A ``training.rules.<rule>`` entry: some of the rule's settings, and under
    ``by_task``/``by_architecture``/``by_batch_size`` settings for the populations of a task,
    an architecture or a batch size (each nested entry may hold ``by_*`` keys of its own).
    Only what the file gives is applied: a setting left out keeps the rule's default for the
    population's architecture family. Written back with the given settings only."""

    by_task: dict[str, Any] = Field(default_factory=dict)
    by_architecture: dict[str, Any] = Field(default_factory=dict)
    by_batch_size: dict[int, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _nested(self):
        """Nested entries are entries of the same rule (errors located under their key)."""
        errors = []
        for key in BY_KEYS:
            nested = {}
            for level, settings in getattr(self, key).items():
                try:
                    nested[level] = settings if isinstance(settings, type(self)) else type(self).model_validate(settings or {})
                except ValidationError as exc:
                    errors += _rebased(exc, (key, level))
            object.__setattr__(self, key, nested)
        _raise_all(type(self).__name__, errors)
        return self

    @model_serializer(mode="wrap")
    def _given_only(self, handler):
        data = handler(self)
        given = {k: v for k, v in data.items() if k in self.model_fields_set and k not in BY_KEYS}
        return {**given, **{k: data[k] for k in BY_KEYS if data.get(k)}}

    def given(self) -> dict[str, Any]:
        """The rule's settings this entry gives (without the ``by_*`` keys)."""
        return {k: getattr(self, k) for k in self.model_fields_set if k not in BY_KEYS}

    def apply(self, hyper: BaseModel, architecture: str | None, task: str | None, batch_size: int | None) -> BaseModel:
        """``hyper`` with this entry's settings for one population applied."""
        hyper = hyper.model_copy(update=self.given())
        for key, level in zip(BY_KEYS, (task, architecture, batch_size)):
            nested = getattr(self, key).get(level)
            if nested is not None:
                hyper = nested.apply(hyper, architecture, task, batch_size)
        return hyper


@functools.lru_cache(maxsize=None)
def rule_overrides_model(hyperparameters: type[BaseModel]) -> type[RuleOverrides]:
    """The model of a ``training.rules`` entry of a rule with ``hyperparameters``."""
    return create_model(
        f"{hyperparameters.__name__}Overrides",
        __base__=(RuleOverrides, hyperparameters),
        __doc__=RuleOverrides.__doc__,
    )


def _rule_overrides_entries() -> NamedEntries:
    """``training.rules``: entries of registered rules, each a :class:`RuleOverrides`."""
    by_name = _registry_entries("learning rule", RULE_HYPERPARAMETERS)
    return NamedEntries(lambda name: rule_overrides_model(by_name.model(name)))


def _rig_model(name: Any) -> type[BaseModel]:
    if problem := _invalid_name(name):
        _raise_all("rig", [InitErrorDetails(type=problem, loc=(), input=name)])
    return RigSpec


def _rig_type_from_name(name: Any, settings: Any) -> Any:
    """A rig named after a rig type may leave its ``type`` out."""
    if isinstance(settings, Mapping) and "type" not in settings:
        if name not in RIG_TYPES:
            message = (
                f"missing key 'type': rig {name!r} is not named after a rig type, so it needs one "
                f"(one of: {', '.join(RIG_TYPES)})"
            )
            _raise_all("rig", [_error("missing_rig_type", message, ("type",), settings)])
        settings = {"type": name, **settings}
    return settings


def _default_rigs() -> dict[str, RigSpec]:
    """One rig of each built-in type, recording everything without noise."""
    return {kind: RigSpec(type=kind, seed=seed) for seed, kind in enumerate(DEFAULT_RIG_TYPES)}


def _at_least_one_rig(rigs: dict) -> dict:
    if not rigs:
        message = "expected at least one rig (leave the section out for one of each type)"
        raise PydanticCustomError("no_rigs", message)
    return rigs


# --------------------------------------------------------------------------- sections


class _Section(StrictSpec):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cohort(_Section):
    """The factorial design: every combination of the factor levels, ``replicates`` times."""

    architecture: _Architectures
    task: _Tasks
    learning_rule: _LearningRules
    batch_size: _BatchSizes
    # at most 1000 so that subject seeds (1000 * protocol seed + replicate) of different
    # protocol seeds never collide
    replicates: Annotated[StrictInt, Field(gt=0, le=1000)] = 3


def _cohort_blocks(value: Any, handler: Callable) -> Any:
    """A cohort is one factorial block (a mapping) or a list of blocks whose subjects are
    pooled: a zoo of image nets on image tasks and 1-D nets on 1-D tasks needs several.
    Errors keep the file's shape: ``cohort.task`` for one block, ``cohort[1].task`` for a list."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise PydanticCustomError("no_blocks", "expected a cohort block or a non-empty list of blocks")
        blocks, errors = [], []
        for i, block in enumerate(value):
            try:
                blocks.append(block if isinstance(block, Cohort) else Cohort.model_validate(block))
            except ValidationError as exc:
                errors += _rebased(exc, (i,))
        _raise_all("cohort", errors)
        return blocks
    if isinstance(value, Cohort):
        return value
    try:
        return Cohort.model_validate(value)
    except ValidationError as exc:
        _raise_all("cohort", _rebased(exc, ()))


def _rate_names(names: list[str] | None) -> list[str] | None:
    """Only rates are searched and spread: settings named ``*learning_rate``."""
    wrong = [name for name in names or () if not is_rate(name)]
    if wrong:
        raise ValueError(f"{', '.join(map(repr, wrong))}: not a rate (expected learning_rate, "
                         "feedback_learning_rate, hebbian_learning_rate or another *learning_rate setting)")
    return names


_Rates = Annotated[list[_Str], AfterValidator(_rate_names)]


class Calibrate(_Section):
    """``training.calibrate``: search each population's rates before training (a log-spaced
    grid around the population's setting, one rate field after the other) on seeds of its own,
    with a held-out part of the training split as the judge (simlab.training.calibration)."""

    steps: Annotated[StrictInt, Field(gt=0, le=MAX_STEPS)] | None = None  # steps per trial; None: a third of training.steps
    seeds: Annotated[StrictInt, Field(ge=1, le=10)] = 2
    points: Annotated[StrictInt, Field(ge=2, le=25)] = 5
    span: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] = 10.0  # grid from value/span to value*span
    rates: _Rates | None = None  # the rate fields searched; None: every rate of the rule
    validation_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    min_gain: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.05  # every seed must beat the untrained net by this
    keep: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8  # healthy range: rates reaching keep x the best gain


class Spread(_Section):
    """``training.spread``: each subject draws its rates log-uniformly from a range, so that a
    rule is not told by its learning rate. ``over: healthy`` takes the population's healthy
    range (calibrated, else the shipped table's; a rate outside it, or without one, gets
    ``factor``); with ``overlap`` the rules of one architecture, task and batch size whose
    ranges overlap all draw from the overlap."""

    rates: _Rates = Field(default_factory=lambda: ["learning_rate"])
    over: Literal["healthy", "factor"] = "healthy"
    factor: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] = 3.0
    overlap: bool = True


class Training(_Section):
    """How long each subject trains, how populations run, and rule hyperparameter overrides."""

    steps: Annotated[StrictInt, Field(gt=0, le=MAX_STEPS)] = 1000
    vectorize: Literal["auto", "vmap", "loop"] = "auto"
    rules: Annotated[
        dict[str, SerializeAsAny[BaseModel]],
        WrapValidator(_rule_overrides_entries()),
    ] = Field(default_factory=dict)
    calibrate: Calibrate | None = None
    # population id -> the rates calibration chose for it (written by calibration into the
    # protocol as run; a protocol may pin populations' rates here too)
    calibrated: dict[_Str, CalibratedRates] = Field(default_factory=dict)
    spread: Spread | None = None
    # global gradient-norm clipping of W's update direction (off: None), a safety some users want
    clip_grad_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None


class Recording(_Section):
    """The recording schedule: sessions spread evenly over training, and the stimulus set."""

    sessions: Annotated[StrictInt, Field(ge=2)] = 21
    stimuli: PositiveInt = 256


_OPTIONAL_SECTIONS = ("architectures", "tasks", "learning_rules", "training", "recording", "rigs", "analyses")


class Protocol(_Section):
    """One experiment: cohort, training, recording schedule, rigs and analyses."""

    name: Name
    description: str | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] = 0
    cohort: Annotated[Union[Cohort, list[Cohort]], WrapValidator(_cohort_blocks)]
    architectures: dict[Name, ArchitectureSpec] = Field(default_factory=dict)
    tasks: dict[Name, TaskSpec] = Field(default_factory=dict)
    # rules of the protocol's own: a credit mechanism, an optimizer and hyperparameters
    learning_rules: Annotated[
        dict[str, SerializeAsAny[BaseModel]], WrapValidator(NamedEntries(None, by_settings=_defined_rule_model))
    ] = Field(default_factory=dict)
    training: Training = Field(default_factory=Training)
    recording: Recording = Field(default_factory=Recording)
    rigs: Annotated[
        dict[str, RigSpec],
        WrapValidator(NamedEntries(_rig_model, _rig_type_from_name)),
        AfterValidator(_at_least_one_rig),
    ] = Field(default_factory=_default_rigs)
    analyses: Annotated[
        dict[str, SerializeAsAny[BaseModel]], WrapValidator(_registry_entries("analysis", ANALYSES))
    ] = Field(default_factory=lambda: {"identify": IdentifySpec()})

    @model_validator(mode="wrap")
    @classmethod
    def _validate_everything(cls, data: Any, handler: Callable) -> Protocol:
        """Report field errors and cross-section errors together, whichever sections fail."""
        if isinstance(data, Mapping):
            # an empty section (``rigs:`` with nothing under it) means its defaults
            data = {k: v for k, v in data.items() if not (k in _OPTIONAL_SECTIONS and v is None)}
        errors: list[InitErrorDetails] = []
        protocol = None
        try:
            protocol = handler(data)
        except ValidationError as exc:
            errors = _rebased(exc, ())
        if not isinstance(data, Protocol):
            errors += _cross_section_errors(data)
        _raise_all(cls.__name__, errors)
        return protocol

    # ----------------------------------------------------------------------- lookups

    @property
    def cohort_blocks(self) -> list[Cohort]:
        """The factorial blocks of the cohort (one unless the protocol lists several)."""
        return list(self.cohort) if isinstance(self.cohort, list) else [self.cohort]

    def levels(self, factor: str) -> list:
        """The levels of a cohort factor over all blocks, in order of first appearance."""
        return list(dict.fromkeys(level for block in self.cohort_blocks for level in getattr(block, factor)))

    def architecture_spec(self, name: str) -> BaseModel:
        """The protocol's own definition of ``name``, else the preset of that name."""
        return _lookup("architecture", name, self.architectures, PRESET_ARCHITECTURES)

    def task_spec(self, name: str) -> BaseModel:
        """The protocol's own definition of ``name``, else the preset of that name."""
        return _lookup("task", name, self.tasks, PRESET_TASKS)

    def rule_hyperparameters(
        self, name: str, architecture: str | None = None, task: str | None = None, batch_size: int | None = None
    ) -> BaseModel:
        """The settings a population trains with (before any spread): a defined rule's own,
        else the rule's defaults for the architecture's family (the shipped calibrated table:
        :func:`simlab.specs.rules.default_hyperparameters`), then ``training.rules`` for that
        architecture, task and batch size (:class:`RuleOverrides`); then, for both kinds, the
        rates ``training.calibrated`` holds for the population."""
        if name in self.learning_rules:
            hyper = self.learning_rules[name]
        elif name not in RULE_HYPERPARAMETERS:
            raise SimlabError(unknown_name_message("learning rule", name, {*RULE_HYPERPARAMETERS, *self.learning_rules}))
        else:
            spec = None if architecture is None else self.architecture_spec(architecture)
            hyper = default_hyperparameters(name, architecture_layout(spec), *self._table_keys(architecture))
            if name in self.training.rules:
                hyper = self.training.rules[name].apply(hyper, architecture, task, batch_size)
        if None not in (architecture, task, batch_size):
            calibrated = self.training.calibrated.get(population_id(architecture, task, name, batch_size))
            if calibrated is not None:
                hyper = hyper.model_copy(update=calibrated.rates)
        return hyper

    def shipped_defaults(self, name: str, architecture: str) -> CalibratedRates | None:
        """The shipped table's entry (:func:`simlab.specs.rules.table_defaults`) for the
        registered rule ``name`` on ``architecture``."""
        return table_defaults(name, *self._table_keys(architecture))

    def _table_keys(self, architecture: str | None) -> tuple[str | None, str | None]:
        """(family, preset) under which the shipped table may hold ``architecture``: a
        protocol's own definition is looked up by its family only, even if it reuses a
        preset's name."""
        if architecture is None:
            return None, None
        family = getattr(self.architecture_spec(architecture), "type", None)
        return family, (None if architecture in self.architectures else architecture)

    def session_steps(self) -> np.ndarray:
        """Training steps of the sessions: evenly spread, first step 0 and last step ``steps``."""
        steps = np.round(np.linspace(0, self.training.steps, self.recording.sessions)).astype(np.int64)
        assert len(np.unique(steps)) == len(steps), "sessions <= steps + 1 makes session steps distinct"
        return steps

    def subject_seed(self, replicate: int) -> int:
        """Seeds of replicates; another protocol seed gives another, disjoint set of subjects."""
        return 1000 * self.seed + replicate

    def to_yaml(self) -> str:
        """The protocol as run, defaults filled, in a form the loader reads back to an equal one.
        Without rules of its own, ``learning_rules`` is left out (as protocols written before
        the section existed have it), so earlier run directories still match."""
        data = self.model_dump(mode="json")
        if not data["learning_rules"]:
            del data["learning_rules"]
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def population_id(architecture: str, task: str, learning_rule: str, batch_size: int) -> str:
    """A population's name: its subjects share architecture, task, rule and batch size."""
    return f"{architecture}-{task}-{learning_rule}-b{batch_size}"


def _lookup(kind: str, name: str, defined: Mapping, presets: Mapping) -> BaseModel:
    if name in defined:
        return defined[name]
    if name in presets:
        return presets[name]
    raise SimlabError(unknown_name_message(kind, name, {*defined, *presets}))


# --------------------------------------------------------------------------- cross-section checks


def _get(obj: Any, key: str) -> Any:
    """A key of raw input, which may be a mapping or an already built model."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None) if isinstance(obj, BaseModel) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cross_section_errors(data: Any) -> list[InitErrorDetails]:
    """Checks that read two sections, run on the raw input so that they never wait on the
    other sections being valid. Values of the wrong type are left to the field errors."""
    errors = []
    cohort = _get(data, "cohort")
    blocks = list(enumerate(cohort)) if isinstance(cohort, (list, tuple)) else [(None, cohort)]
    named = (("architecture", "architectures", PRESET_ARCHITECTURES), ("task", "tasks", PRESET_TASKS))
    defined_rules = _get(data, "learning_rules")
    defined_rules = defined_rules if isinstance(defined_rules, Mapping) else {}
    for b, block in blocks:
        where = ("cohort",) if b is None else ("cohort", b)
        for factor, section, presets in named:
            defined = _get(data, section)
            known = {*presets, *(defined if isinstance(defined, Mapping) else ())}
            for i, level in _levels(block, factor):
                if isinstance(level, str) and level not in known:
                    loc = _level_loc(where, factor, i)
                    errors.append(_error("unknown_name", unknown_name_message(factor, level, known), loc, level))
        errors += _layout_errors(block, where, _get(data, "architectures"), _get(data, "tasks"))
        for i, rule in _levels(block, "learning_rule"):
            if isinstance(rule, str) and rule not in RULE_HYPERPARAMETERS and rule not in defined_rules:
                message = unknown_name_message("learning rule", rule, {*RULE_HYPERPARAMETERS, *defined_rules})
                loc = _level_loc(where, "learning_rule", i)
                errors.append(_error("unknown_name", message, loc, rule))
        errors += _rule_architecture_errors(block, where, _get(data, "architectures"), defined_rules)
    errors += _repeated_populations(blocks)

    training, recording = _get(data, "training"), _get(data, "recording")
    steps, sessions = _get(training, "steps"), _get(recording, "sessions")
    given_sessions = sessions is not None
    steps = Training.model_fields["steps"].default if steps is None else steps
    sessions = Recording.model_fields["sessions"].default if sessions is None else sessions
    if _is_int(steps) and _is_int(sessions) and steps >= 1 and sessions >= 2 and sessions > steps + 1:
        if given_sessions:
            message = (
                f"expected at most steps + 1 = {steps + 1} sessions (each at its own step), "
                f"got {sessions}"
            )
            errors.append(_error("too_many_sessions", message, ("recording", "sessions"), sessions))
        else:
            message = (
                f"expected at least sessions - 1 = {sessions - 1} steps (each session at its own "
                f"step), got {steps}"
            )
            errors.append(_error("too_many_sessions", message, ("training", "steps"), steps))
    errors += _analysis_rig_errors(data)
    return errors


def _analysis_rig_errors(data: Any) -> list[InitErrorDetails]:
    """Rigs an analysis names must be rigs of the protocol (the robustness grid may also name a
    rig type, recorded afresh), checked now rather than after training."""
    rigs, analyses = _get(data, "rigs"), _get(data, "analyses")
    if not isinstance(analyses, Mapping):
        return []
    own = list(rigs) if isinstance(rigs, Mapping) and rigs else list(DEFAULT_RIG_TYPES)
    errors = []
    for name, settings in analyses.items():
        named = _get(settings, "rigs")
        if not isinstance(named, (list, tuple)):
            continue
        known = [*own, *(t for t in RIG_TYPES if t not in own)] if name == "robustness" else own
        for i, rig in enumerate(named):
            if isinstance(rig, str) and rig not in known:
                kind = "rig (a rig of the protocol or a rig type)" if name == "robustness" else "rig of the protocol"
                errors.append(_error("unknown_name", unknown_name_message(kind, rig, known), ("analyses", name, "rigs", i), rig))
    return errors


def _levels(cohort: Any, factor: str) -> list[tuple[int | None, Any]]:
    """(index, level) of a cohort factor, index None for a single level given alone."""
    value = _get(cohort, factor)
    return list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]


def _level_loc(where: tuple, factor: str, i: int | None) -> tuple:
    """Where a level of a cohort factor is in the file: ``cohort[b].factor[i]`` (no index for a
    level given alone, no block for a single cohort)."""
    return (*where, factor) + (() if i is None else (i,))


def _spec(name: Any, defined: Any, presets: Mapping) -> Any:
    """The protocol's definition of ``name``, else the preset, else None."""
    if not isinstance(name, str):
        return None
    if isinstance(defined, Mapping) and name in defined:
        return defined[name]
    return presets.get(name)


def _repeated_populations(blocks: list[tuple[int | None, Any]]) -> list[InitErrorDetails]:
    """Two blocks of a list must not both hold a population: its subjects would train twice."""
    seen: dict[tuple, int] = {}
    errors = []
    for b, block in blocks:
        if b is None:
            continue
        factors = [[level for _, level in _levels(block, f)] for f in ("architecture", "task", "learning_rule", "batch_size")]
        repeated = set()
        for key in itertools.product(*factors):
            try:
                hash(key)
            except TypeError:
                continue  # a malformed level: the field errors say so
            if key in seen and seen[key] != b:
                repeated.add((key, seen[key]))
            seen.setdefault(key, b)
        for key, first in sorted(repeated, key=str)[:1]:
            message = (
                f"block {b} repeats the population {'-'.join(map(str, key[:3]))}-b{key[3]} of block {first} "
                f"({len(repeated)} repeated in all); a subject can be in one block only"
            )
            errors.append(_error("repeated_population", message, ("cohort", b), None))
    return errors


def _rule_model(rule: Any, defined: Mapping) -> Any:
    """The hyperparameter model of a built-in rule, or of a defined rule's credit (else None)."""
    if not isinstance(rule, str):
        return None
    if rule in RULE_HYPERPARAMETERS:
        return RULE_HYPERPARAMETERS[rule]
    credit = _get(defined.get(rule), "credit")
    return CREDIT_MECHANISMS.get(credit) if isinstance(credit, str) else None


def _rule_architecture_errors(cohort: Any, where: tuple, architectures: Any, defined: Mapping) -> list[InitErrorDetails]:
    """Rules that train only some architecture types (direct feedback alignment: MLPs, also as
    a defined rule's credit) meet only those. Reported at the rule's place in the cohort."""
    errors = []
    for i, rule in _levels(cohort, "learning_rule"):
        allowed = getattr(_rule_model(rule, defined), "architecture_types", None)
        if allowed is None:
            continue
        for _, name in _levels(cohort, "architecture"):
            architecture = _spec(name, architectures, PRESET_ARCHITECTURES)
            kind = _get(architecture, "type")
            if isinstance(kind, str) and kind not in allowed:
                loc = _level_loc(where, "learning_rule", i)
                message = (
                    f"learning rule {rule!r} cannot train architecture {name!r}: it needs "
                    f"{' or '.join(allowed)} architectures, and {name!r} is a {kind}"
                )
                errors.append(_error("rule_architecture", message, loc, rule))
    return errors


def _layout_errors(cohort: Any, where: tuple, architectures: Any, tasks: Any) -> list[InitErrorDetails]:
    """Every architecture of the cohort meets every task: an image net cannot read 1-D signals
    (nor a 1-D conv net images). Reported at the architecture's place in the cohort."""
    errors = []
    task_specs = [(name, _spec(name, tasks, PRESET_TASKS)) for _, name in _levels(cohort, "task")]
    for i, name in _levels(cohort, "architecture"):
        architecture = _spec(name, architectures, PRESET_ARCHITECTURES)
        for task_name, task in task_specs:
            if architecture is not None and task is not None and (why := input_layout_conflict(architecture, task)):
                loc = _level_loc(where, "architecture", i)
                message = f"architecture {name!r} cannot be trained on task {task_name!r}: it {why}"
                errors.append(_error("input_layout", message, loc, name))
    return errors


# --------------------------------------------------------------------------- error locations


def _unwrap(tp: Any) -> tuple[Any, list]:
    """Strip ``Annotated`` and ``Optional``, keeping the annotations' metadata."""
    metadata: list = []
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *extra = typing.get_args(tp)
            metadata += extra
        elif origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return typing.Union[tuple(members)], metadata
            tp = members[0]
        else:
            return tp, metadata


def _union_member(tp: Any, label: Any) -> Any:
    """The member of a union that pydantic names ``label`` in an error location."""
    for member in typing.get_args(tp):
        member, _ = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            field = member.model_fields.get("type")
            if label == member.__name__ or (field is not None and field.default == label):
                return member
    return None


@dataclass(frozen=True)
class Located:
    """Where a pydantic error is, in the file's terms: its ``path`` (without pydantic's union
    member labels and ``[key]`` markers), the model that holds the path's last key (None when
    that is not a model: it tells what keys were expected), and the annotation found there."""

    path: tuple
    holder: type[BaseModel] | None
    annotation: Any


def locate(loc: tuple) -> Located:
    """Follow a pydantic error location through the schema."""
    path: list = []
    tp: Any = Protocol
    metadata: list = []
    holder = None
    for part in loc:
        if part == "[key]":
            continue
        tp, more = _unwrap(tp)
        metadata += more
        entries = _validator(metadata, NamedEntries)
        origin = typing.get_origin(tp)
        holder = None
        if entries is not None:
            tp, metadata = entries.model_for(part), []
            path.append(part)
            continue
        if (registered := _validator(metadata, RegisteredType)) is not None:
            tp, metadata = registered.model_for(part), []
            continue  # a member's tag, not a key of the file
        if origin in (typing.Union, types.UnionType):
            member = _member_for_key(tp, part)
            if member is None:
                tp, metadata = _union_member(tp, part), []
                continue  # a union member label, not a key of the file
            # a value that may be a model or a list of them (the cohort): the key's kind tells
            tp, origin = member, typing.get_origin(member)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            holder = tp
            field = tp.model_fields.get(part)
            tp, metadata = (field.annotation, list(field.metadata)) if field else (None, [])
        elif origin in (dict, list):
            tp, metadata = typing.get_args(tp)[-1], []
        else:
            tp, metadata = None, []
        path.append(part)
    tp, more = _unwrap(tp)
    return Located(tuple(path), holder, _validator(metadata + more, RegisteredType) or tp)


def _validator(metadata: list, kind: type) -> Any:
    """The validator of class ``kind`` among an annotation's metadata (a WrapValidator's func)."""
    return next((m.func for m in metadata if isinstance(getattr(m, "func", None), kind)), None)


def _member_for_key(tp: Any, part: Any) -> Any:
    """For a union of a model and a list of models (the cohort), the member that a key of the
    file goes into (an index: the list); None for other unions, whose keys are member labels."""
    members = [_unwrap(m)[0] for m in typing.get_args(tp)]
    lists = [m for m in members if typing.get_origin(m) is list]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(lists) != 1 or len(models) != 1 or len(members) != 2:
        return None
    return lists[0] if isinstance(part, int) else models[0]


def union_tags(annotation: Any) -> list[str]:
    """The ``type`` values that select the members of a union of models (or of a
    :class:`RegisteredType`)."""
    if isinstance(annotation, RegisteredType):
        return annotation.tags()
    members = [_unwrap(m)[0] for m in typing.get_args(annotation)]
    return [
        m.model_fields["type"].default
        for m in members
        if isinstance(m, type) and issubclass(m, BaseModel) and "type" in m.model_fields
    ]
