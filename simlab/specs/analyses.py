"""Analysis settings, as protocol schema models (``analyses:`` in a protocol).

The built-in analyses' models live here, at the bottom of the package; the analyses themselves
register them with their compute functions in :data:`simlab.registry.ANALYSES` (see
:func:`simlab.analysis.analyses.register_analysis`). :data:`ANALYSES` is that registry seen
from this layer: the settings model of every registered analysis, by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from simlab.specs.strict import Seed, StrictSpec
from simlab.errors import SimlabError
from simlab.registry import ANALYSES as _REGISTERED
from simlab.specs.classifiers import check_import_consent, classifier_label, parse_classifier
from simlab.specs.rigs import RigSpec, ScheduleSpec

CLASSIFIERS = ("random_forest", "linear_svm")

TRANSFORMS = ("raw", "diff", "diff_scaled", "log_ratio", "ranks")
"""Feature transforms of a site's session trajectories (:mod:`simlab.analysis.transforms`)."""

TransformName = Literal["raw", "diff", "diff_scaled", "log_ratio", "ranks"]

DEFAULT_TRANSFORM = "log_ratio"
"""The transform identification uses unless told: on nayebi2020 it transfers best to held-out
architectures and tasks, at a cost within the cohort (nayebi2020 all observables -0.03; the
quickstart's weights -0.12, as it drops each statistic's level; docs/results.md)."""

DEFAULT_MARGIN = 0.05
"""The gain over the untrained network that health reports use when no ``min_gain`` is set."""


class HealthSpec(StrictSpec):
    """Which subjects learned: not diverged, and a final health metric (``final_accuracy``)
    at least ``min_gain`` above the same subject's untrained value (``initial_accuracy``).

    Every classifying analysis reports, per learning rule, how many subjects learned. With
    ``min_gain`` None (the default) the report uses :data:`DEFAULT_MARGIN` and excludes
    nothing (diverged subjects are always left out); with a value, subjects that did not learn
    by it are left out before any split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_gain: Optional[float] = Field(None, ge=0.0)

    @property
    def margin(self) -> float:
        """The gain a subject must reach to count as learned."""
        return DEFAULT_MARGIN if self.min_gain is None else float(self.min_gain)

    @property
    def excludes(self) -> bool:
        """Whether subjects that did not learn are left out (else only reported)."""
        return self.min_gain is not None


class _TransformedFeatures(StrictSpec):
    """Settings whose features are transformed session trajectories: each declares its own
    ``transform`` field (one transform or a list of distinct ones); this checks it and reads
    it as a tuple."""

    @field_validator("transform", check_fields=False)
    @classmethod
    def _one_or_distinct(cls, value):
        return _transform_setting(value)

    @property
    def transforms(self) -> tuple[str, ...]:
        """The transforms, in order (one or more)."""
        return (self.transform,) if isinstance(self.transform, str) else tuple(self.transform)


class IdentifySpec(_TransformedFeatures):
    """Identify the learning rule (or another subject factor) from session trajectories.

    ``classifiers``: names (``linear_svm``, ``random_forest``, ``conv1d``, an sklearn alias
    such as ``logistic_regression``, or an import path) or mappings
    ``{name, params, grid, label}``. ``preset``: ``fast`` (small grids) or ``reference`` (the
    reference's grids). ``features``: one feature set per ``measures`` (and ``all``), per
    single ``observables``, or ``both``. ``group_by: subject`` keeps all layers of a subject
    on one side of every split; ``layer`` reproduces the reference's splits over layers.
    ``importance``: also compute impurity and permutation feature importance.
    ``matched_control``: also identify each pair of classes on subjects matched one-to-one
    on learning rate (ratio at most ``matched_caliper``) within architecture, task and batch
    size, beside a classifier of the learning rate alone on the same splits
    (:mod:`simlab.analysis.matched`). ``report_transfer``: also report, per transform and
    classifier, within-cohort (subject- and population-grouped) and held-out architecture and
    task accuracy (:mod:`simlab.analysis.transfer`); ``true``: for ``transform``, a list: for
    each entry (a transform, or a list of transforms together).
    ``health``: which subjects count as having learned, and whether those that did not are
    left out (:class:`HealthSpec`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classifiers: list[Any] = Field(default_factory=lambda: list(CLASSIFIERS), min_length=1)
    preset: Literal["fast", "reference"] = "fast"
    features: Literal["measures", "observables", "both"] = "measures"
    transform: Union[TransformName, list[TransformName]] = DEFAULT_TRANSFORM
    splits: PositiveInt = 10
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    group_by: Literal["subject", "population", "layer"] = "subject"
    bootstrap: int = Field(1000, ge=0)
    target: str = "learning_rule"
    importance: bool = False
    matched_control: bool = False
    matched_caliper: float = Field(1.5, gt=1.0)
    report_transfer: Union[bool, list[Union[TransformName, list[TransformName]]]] = False
    seed: Seed = 0
    health: HealthSpec = Field(default_factory=HealthSpec)

    @field_validator("report_transfer")
    @classmethod
    def _transfer_transforms(cls, value):
        """Each entry a transform setting of its own (a list: transforms together), none twice."""
        if isinstance(value, bool):
            return value
        if not value:
            raise ValueError(f"report_transfer lists no transform; give true or one or more of {', '.join(TRANSFORMS)}")
        entries = [_transform_setting(v) for v in value]
        keys = [v if isinstance(v, str) else "+".join(v) for v in entries]
        if len(set(keys)) < len(keys):
            raise ValueError(f"report_transfer {value} lists a transform twice")
        return entries

    @property
    def transfer_transforms(self) -> list:
        """The transform settings the transfer report compares (none when it is off)."""
        if self.report_transfer is False:
            return []
        return [self.transform] if self.report_transfer is True else list(self.report_transfer)

    @field_validator("classifiers")
    @classmethod
    def _known_classifiers(cls, entries: list[Any]) -> list[Any]:
        """Refuse unknown classifiers and parameters at validation, naming the entry."""
        labels = []
        for entry in entries:
            try:
                check_import_consent(entry)  # settings are data: no module imported without consent
                parse_classifier(entry)
                labels.append(classifier_label(entry))
            except SimlabError as exc:
                raise ValueError(str(exc)) from None
        repeated = sorted({l for l in labels if labels.count(l) > 1})
        if repeated:
            raise ValueError(
                f"classifier(s) {', '.join(repeated)} listed twice; give each a distinct 'label'"
            )
        return entries


def _transform_setting(value):
    """A list of one transform is that transform; a list repeats none."""
    if isinstance(value, str):
        return value
    if not value:
        raise ValueError(f"transform lists none; give one or more of {', '.join(TRANSFORMS)}")
    if len(set(value)) < len(value):
        raise ValueError(f"transform {value} lists a transform twice")
    return value[0] if len(value) == 1 else list(value)


class FitSpec(_TransformedFeatures):
    """A fitted identifier (``simlab fit``): one classifier trained on every usable site of a
    cohort, with calibrated probabilities, to apply to new recordings (``simlab predict``).

    ``classifier``: one entry as in :class:`IdentifySpec` (default ``random_forest``).
    ``observables``: ``all``, measure names (``weight``) and observable names, whose
    observables finite at every site and session are the features. ``transform``, ``target``,
    ``preset``, ``seed`` and ``health``: as in :class:`IdentifySpec`. ``calibration``: the
    map from scores to probabilities that sklearn's ``CalibratedClassifierCV`` fits on
    out-of-fold scores (``sigmoid``, Platt's, suits a cohort of a few hundred sites;
    ``isotonic`` needs more). ``folds``: its cross-validation folds, grouped by ``group_by``
    (a subject's, or a population's, sites stay together) and stratified by class.
    ``ood_quantile``: a feature of a new site is outside the training distribution when it
    lies outside the training sites' [q, 1 - q] quantiles; a site is flagged when the
    fraction of its features outside exceeds ``ood_threshold`` (None: the 99th percentile of
    that fraction over the held-out sites of the folds, so about 1 in 100 new sites like the
    training cohort's is flagged).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classifier: Any = "random_forest"
    observables: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    transform: Union[TransformName, list[TransformName]] = DEFAULT_TRANSFORM
    target: str = "learning_rule"
    preset: Literal["fast", "reference"] = "fast"
    group_by: Literal["subject", "population"] = "subject"
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    folds: int = Field(5, ge=2)
    ood_quantile: float = Field(0.005, ge=0.0, lt=0.5)
    ood_threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    seed: Seed = 0
    health: HealthSpec = Field(default_factory=HealthSpec)

    @field_validator("classifier")
    @classmethod
    def _known_classifier(cls, entry):
        try:
            check_import_consent(entry)
            parse_classifier(entry)
        except SimlabError as exc:
            raise ValueError(str(exc)) from None
        return entry



# --------------------------------------------------------------------------- analyses of a run
# The analyses below read a run directory, not a single recording; each nests the
# identification settings its classifiers use, so one set of defaults serves them all.


class _RunAnalysisSpec(StrictSpec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    identify: IdentifySpec = Field(default_factory=IdentifySpec)
    rigs: Optional[list[str]] = Field(None, min_length=1)  # None: every rig of the protocol


class GeneralizationSpec(_RunAnalysisSpec):
    """Train on some levels of a subject factor, test on the held-out level (every
    leave-one-level-out fold), per factor; ``matrix`` adds train-on-one-level x test-on-another
    accuracies (the diagonal: within-level splits).

    A factor of real numbers with more than ``bins`` distinct values among the usable subjects
    (``learning_rate`` under a spread of rates, a health metric) is binned into ``bins``
    quantile bins across subjects, of its logarithm when every value is positive, so holding
    out a level holds out a band of rates (terciles by default). Where the rules train at
    rates of their own, a band of the cohort's rates holds out whole rules (the table says
    which classes no training subject has); ``bin_per_class`` bins each class of the target by
    its own quantiles instead, so every band holds every rule at that rule's lowest, middle or
    highest rates, and the held-out band asks whether identification carries to rates outside
    those each rule was trained at."""

    factors: list[str] = Field(default_factory=lambda: ["architecture"], min_length=1)
    matrix: bool = True
    bins: int = Field(3, ge=2)
    bin_per_class: bool = False


def _default_access() -> dict[str, "ScheduleSpec"]:
    return {
        "first_quarter": ScheduleSpec(window=(0.0, 0.25)),
        "last_quarter": ScheduleSpec(window=(0.75, 1.0)),
        "every_4th": ScheduleSpec(every=4),
        "sessions_3": ScheduleSpec(count=3),
        "sessions_6": ScheduleSpec(count=6),
    }


class TrajectorySpec(_RunAnalysisSpec):
    """Identification from part of the trajectory: each named ``schedules`` entry picks
    sessions of the recording (``window``, ``every``, ``count``, ``spacing`` as in a rig's
    schedule); the full trajectory is always compared as ``all``."""

    schedules: dict[str, ScheduleSpec] = Field(default_factory=_default_access, min_length=1)

    @field_validator("schedules")
    @classmethod
    def _not_all(cls, value: dict) -> dict:
        if "all" in value:
            raise ValueError("'all' names the full trajectory, which is always included; use another name")
        return value


def _distinct_from(value: list, lowest, what: str) -> list:
    """A grid axis: distinct values, none below ``lowest``."""
    if any(v < lowest for v in value) or len(set(value)) < len(value):
        raise ValueError(f"{what} must be distinct and >= {lowest}, got {value}")
    return value


class RobustnessSpec(StrictSpec):
    """A grid of units x noise per rig, made by re-recording the run's snapshots (never
    retraining), plus a sweep of session counts at all units and no noise.

    ``rigs``: rig names of the protocol or rig types; each grid cell overrides its ``units``,
    ``noise`` and (if given) ``seed``. ``compare``: the two rigs whose accuracies are tested
    against each other at each noise level (paired over splits, Holm-corrected).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rigs: list[str] = Field(default_factory=lambda: ["synapse", "electrophysiology"], min_length=1)
    units: list[Union[Literal["all"], int, float]] = Field(
        default_factory=lambda: [4, 16, 64, "all"], min_length=1
    )
    noise: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0], min_length=1)
    sessions: list[int] = Field(default_factory=lambda: [2, 3, 6, 11])
    seed: Optional[Seed] = None
    compare: Optional[tuple[str, str]] = None  # default: the first two rigs
    identify: IdentifySpec = Field(default_factory=IdentifySpec)

    @field_validator("units")
    @classmethod
    def _check_units(cls, value: list) -> list:
        for units in value:
            RigSpec(type="synapse", units=units)  # the rig's own rule for a unit setting
        if len({str(u) for u in value}) < len(value):
            raise ValueError("unit settings must be distinct")
        return value

    @field_validator("noise")
    @classmethod
    def _check_noise(cls, value: list) -> list:
        return _distinct_from(value, 0, "noise levels")

    @field_validator("sessions")
    @classmethod
    def _check_sessions(cls, value: list) -> list:
        return _distinct_from(value, 1, "session counts")

    @model_validator(mode="after")
    def _check_compare(self):
        if self.compare is not None and not set(self.compare) <= set(self.rigs):
            raise ValueError(f"compare {list(self.compare)} must name two of rigs {self.rigs}")
        if len(set(self.rigs)) < len(self.rigs):
            raise ValueError(f"rigs must be distinct, got {self.rigs}")
        return self


class ConfoundSpec(_RunAnalysisSpec):
    """The performance confound: identification among subjects matched on final test accuracy,
    and a baseline that names the target from the training curves alone (the loss resampled to
    ``curve_points`` points and the test accuracy at every session).

    ``matching: nearest`` forms groups of one subject per class whose final accuracies lie
    within ``caliper`` of the group's subject of the rarest class; ``bins`` keeps, in each of
    ``bins`` quantile bins, equally many subjects of every class.
    """

    matching: Literal["nearest", "bins"] = "nearest"
    caliper: float = Field(0.05, gt=0.0)
    bins: PositiveInt = 3
    curve_points: PositiveInt = 20


class _SettingsModels(Mapping[str, type[BaseModel]]):
    """The settings model of every registered analysis, by name (read-only): what the protocol
    schema validates ``analyses:`` entries with, without importing the analyses."""

    def __getitem__(self, name: str) -> type[BaseModel]:
        return _REGISTERED[name].spec

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTERED)

    def __len__(self) -> int:
        return len(_REGISTERED)

    def __repr__(self) -> str:
        return f"ANALYSES({', '.join(self)})"


ANALYSES: Mapping[str, type[BaseModel]] = _SettingsModels()
