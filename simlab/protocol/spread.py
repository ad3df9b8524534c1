"""The spread of rates: each subject draws its learning rates from a range, so that rules are
not told apart by the rate they train at (``training.spread``).

A population's range for a rate is its healthy range (calibrated for the population, else the
shipped table's for its architecture family) or ``value / factor .. value * factor``. With
``overlap``, the rules of one architecture, task and batch size whose ranges overlap draw from
the part they share: the rate then says nothing about which of them a subject learned by.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from simlab.specs.protocol import Protocol
from simlab.specs.rules import rate_fields

Range = tuple[float, float]


def population_range(protocol: Protocol, population, hyper, rate: str) -> Range:
    """The range a population's subjects draw ``rate`` from, before overlapping."""
    spread = protocol.training.spread
    value = float(getattr(hyper, rate))
    factor_range = (value / spread.factor, value * spread.factor)
    if spread.over == "factor":
        return factor_range
    calibrated = protocol.training.calibrated.get(population.id)
    healthy = calibrated.healthy.get(rate) if calibrated is not None else None
    if healthy is None and population.learning_rule not in protocol.learning_rules:
        entry = protocol.shipped_defaults(population.learning_rule, population.architecture)
        healthy = None if entry is None else entry.healthy.get(rate)
    if healthy is None or not healthy[0] <= value <= healthy[1] or healthy[0] == healthy[1]:
        return factor_range
    return (float(healthy[0]), float(healthy[1]))


def overlapping(ranges: Mapping[str, Range]) -> dict[str, Range]:
    """Each key's range after overlapping: repeatedly, the largest set of ranges sharing a
    point draws from their intersection (ties: the widest intersection); a range overlapping
    none keeps its own."""
    left = {key: (np.log(lo), np.log(hi)) for key, (lo, hi) in ranges.items()}
    out: dict[str, Range] = {}
    while left:
        best: tuple[int, float, list[str]] | None = None
        for point in sorted({lo for lo, _ in left.values()}):
            members = [key for key, (lo, hi) in left.items() if lo <= point <= hi]
            width = min(left[k][1] for k in members) - point
            if best is None or (len(members), width) > (best[0], best[1]):
                best = (len(members), width, members)
        _, _, members = best
        low, high = max(left[k][0] for k in members), min(left[k][1] for k in members)
        for key in members:
            out[key] = (float(np.exp(low)), float(np.exp(high)))
            del left[key]
    return out


def draw(low: float, high: float, key: str, seed: int) -> float:
    """A log-uniform draw from [low, high], fixed by the protocol seed and ``key`` (the
    subject and the rate), rounded to 4 significant digits so that it reads back exactly."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return float(f"{np.exp(rng.uniform(np.log(low), np.log(high))):.4g}")


def spread_ranges(protocol: Protocol, populations: Sequence, settings: Mapping[str, object]) -> dict[tuple[str, str], Range]:
    """(population id, rate) -> the range its subjects draw the rate from, for populations
    whose rule has the spread's rates; ``settings``: population id -> its hyperparameters."""
    spread = protocol.training.spread
    if spread is None:
        return {}
    out: dict[tuple[str, str], Range] = {}
    for rate in spread.rates:
        having = [pop for pop in populations if rate in rate_fields(settings[pop.id])]
        ranges = {pop.id: population_range(protocol, pop, settings[pop.id], rate) for pop in having}
        if spread.overlap:
            groups: dict[tuple, dict[str, Range]] = {}
            for pop in having:
                groups.setdefault((pop.architecture, pop.task, pop.batch_size), {})[pop.id] = ranges[pop.id]
            ranges = {pid: r for group in groups.values() for pid, r in overlapping(group).items()}
        out.update({(pid, rate): r for pid, r in ranges.items()})
    return out


def spread_rates(protocol: Protocol, populations: Sequence, settings: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """subject id -> the rates it draws (:func:`spread_ranges`)."""
    drawn: dict[str, dict[str, float]] = {}
    by_id = {pop.id: pop for pop in populations}
    for (pid, rate), (low, high) in spread_ranges(protocol, populations, settings).items():
        for subject in by_id[pid].subjects:
            drawn.setdefault(subject.id, {})[rate] = draw(low, high, f"{subject.id}:{rate}", protocol.seed)
    return drawn
