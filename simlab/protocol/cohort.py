"""The cohort plan: the subjects a protocol asks for, grouped into populations.

Subjects are the Cartesian product of the cohort factors in a fixed order, so a subject's index
is stable for a given protocol. A population holds the replicates that share architecture,
task, learning rule and batch size: they share array shapes and train as one compiled program.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from simlab.protocol.spread import spread_ranges, spread_rates
from simlab.specs.protocol import Protocol, population_id

FACTORS = ("architecture", "task", "learning_rule", "batch_size")
"""Cohort factors in the order of the product (replicates vary fastest, after these)."""


@dataclass(frozen=True)
class Subject:
    """One network of the cohort; ``index`` is its position in the plan; ``hyperparameters``:
    the rule's settings it trains with (its population's, with its drawn rates under
    ``training.spread``)."""

    index: int
    id: str
    architecture: str
    task: str
    learning_rule: str
    batch_size: int
    replicate: int
    seed: int
    hyperparameters: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class Population:
    """Subjects that differ only by replicate, hence by seed (and, under ``training.spread``,
    by their drawn rates). ``hyperparameters``: the settings resolved for the population
    (:meth:`simlab.specs.protocol.Protocol.rule_hyperparameters`)."""

    id: str
    architecture: str
    task: str
    learning_rule: str
    batch_size: int
    subjects: tuple[Subject, ...]
    hyperparameters: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class CohortPlan:
    """The subjects of a protocol in plan order, and the populations they train in."""

    subjects: tuple[Subject, ...]
    populations: tuple[Population, ...]

    def varied_factors(self) -> list[str]:
        """Factors with more than one level: the ones a recording labels subjects by."""
        return [f for f in (*FACTORS, "seed") if len({getattr(s, f) for s in self.subjects}) > 1]

    def __len__(self) -> int:
        return len(self.subjects)


def _resolved(protocol: Protocol, architecture: str, task: str, learning_rule: str, batch_size: int):
    return protocol.rule_hyperparameters(learning_rule, architecture, task, batch_size)


def plan_cohort(protocol: Protocol) -> CohortPlan:
    """Every combination of the factor levels, replicate fastest; populations in order. With
    several cohort blocks, the blocks' subjects one block after the other."""
    combinations = [
        combination
        for block in protocol.cohort_blocks
        for combination in itertools.product(*[getattr(block, f) for f in FACTORS], range(block.replicates))
    ]
    subjects = []
    for index, (*factors, replicate) in enumerate(combinations):
        seed = protocol.subject_seed(replicate)
        subjects.append(
            Subject(index, f"{population_id(*factors)}-s{seed}", *factors, replicate=replicate, seed=seed)
        )
    populations = [
        Population(population_id(*key), *key, subjects=tuple(members), hyperparameters=_resolved(protocol, *key))
        for key, members in itertools.groupby(subjects, key=lambda s: tuple(getattr(s, f) for f in FACTORS))
    ]
    drawn = spread_rates(protocol, populations, {pop.id: pop.hyperparameters for pop in populations})
    populations = tuple(
        replace(pop, subjects=tuple(
            replace(s, hyperparameters=pop.hyperparameters.model_copy(update=drawn.get(s.id, {}))) for s in pop.subjects
        ))
        for pop in populations
    )
    subjects = [s for pop in populations for s in pop.subjects]
    return CohortPlan(tuple(subjects), populations)


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _settings(model, always: tuple[str, ...] | None = None) -> str:
    """``learning_rate=0.05, classifiers=[random_forest, linear_svm]``: one line per item.

    With ``always``, only those fields and the ones that differ from their defaults are
    shown (a rig has many settings that are rarely changed).
    """

    def show(value) -> str:
        if isinstance(value, list):
            return f"[{', '.join(map(str, value))}]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
        return str(value)

    values = model.model_dump(mode="json")
    if always is not None:
        changed = model.model_dump(mode="json", exclude_defaults=True)
        values = {k: v for k, v in values.items() if k in always or k in changed}
    return ", ".join(f"{k}={show(v)}" for k, v in values.items())


RIG_SUMMARY = ("type", "units", "noise", "seed")


def _steps(steps) -> str:
    """All session steps when they fit on a line, else the first and last few."""
    shown = [str(s) for s in steps]
    if len(shown) > 12:
        shown = shown[:5] + ["..."] + shown[-2:]
    return ", ".join(shown)


def _rule_settings(protocol: Protocol, plan: CohortPlan) -> list[str]:
    """The settings each population trains with, one line per rule and distinct settings
    (naming the populations where a rule has several), and the ranges a spread draws from."""
    lines = []
    for rule in protocol.levels("learning_rule"):
        by_settings: dict[str, list[str]] = {}
        for pop in plan.populations:
            if pop.learning_rule == rule:
                label = f"{pop.architecture}/{pop.task}/b{pop.batch_size}"
                by_settings.setdefault(_settings(pop.hyperparameters), []).append(label)
        for settings, populations in by_settings.items():
            on = f" ({', '.join(populations)})" if len(by_settings) > 1 else ""
            lines.append(f"  {rule}{on}: {settings}")
    if protocol.training.spread is not None:
        ranges = spread_ranges(protocol, plan.populations, {pop.id: pop.hyperparameters for pop in plan.populations})
        lines.append(f"spread: each subject draws {', '.join(protocol.training.spread.rates)} log-uniformly from")
        for (pid, rate), (low, high) in ranges.items():
            lines.append(f"  {pid}: {rate} {low:.4g} to {high:.4g}")
    return lines


def describe(protocol: Protocol, plan: CohortPlan) -> str:
    """What ``simlab validate`` prints: what the protocol will train, record and analyze."""
    def product(block) -> str:
        return " x ".join(
            [
                _count(len(block.architecture), "architecture"),
                _count(len(block.task), "task"),
                _count(len(block.learning_rule), "learning rule"),
                _count(len(block.batch_size), "batch size"),
                _count(block.replicates, "replicate"),
            ]
        )

    blocks = protocol.cohort_blocks
    training = protocol.training
    if len(blocks) == 1:
        sizes = [f"{_count(len(plan), 'subject')} = {product(blocks[0])}"]
    else:
        sizes = [f"{_count(len(plan), 'subject')} in {len(blocks)} blocks:"]
        for i, block in enumerate(blocks):
            size = len(block.architecture) * len(block.task) * len(block.learning_rule) * len(block.batch_size)
            sizes.append(
                f"  block {i}: {size * block.replicates} = {product(block)} "
                f"({', '.join(block.architecture)} on {', '.join(block.task)})"
            )
    lines = [
        f"protocol {protocol.name}" + (f": {protocol.description}" if protocol.description else ""),
        *sizes,
        f"{_count(len(plan.populations), 'population')} (replicates train together)",
        f"training: {training.steps} steps, vectorize {training.vectorize}"
        + (f", gradients clipped to norm {training.clip_grad_norm:g}" if training.clip_grad_norm else "")
        + (f"; calibrated first ({_settings(training.calibrate, ())  or 'default settings'})" if training.calibrate else ""),
    ]
    lines += _rule_settings(protocol, plan)
    lines += [
        f"recording: {protocol.recording.sessions} sessions at steps {_steps(protocol.session_steps())}",
        f"stimuli: {protocol.recording.stimuli}",
        "rigs:",
        *(f"  {name}: {_settings(rig, RIG_SUMMARY)}" for name, rig in protocol.rigs.items()),
        "analyses:" + ("" if protocol.analyses else " none"),
        # only the settings a protocol changed: an analysis has many (its identify settings too)
        *(f"  {name}: {_settings(spec, ()) or 'default settings'}" for name, spec in protocol.analyses.items()),
    ]
    return "\n".join(lines)
