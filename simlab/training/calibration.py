"""Calibration: search each population's learning rates before its cohort trains.

For every population (architecture, task, learning rule, batch size) a log-spaced grid around
its resolved rate is trained, one rate field after the other (``learning_rate`` first, then the
feedback pathway's or the Hebbian layers' rate at the best ``learning_rate``), on seeds that no
subject of the cohort has, for a budget of steps the protocol states. Each trial is judged on a
held-out part of the training split (never the test split that the subject table reports):
a setting is accepted when no seed diverged and every seed beat its own untrained network by
``min_gain``; the best accepted setting is chosen, and the accepted rates within ``keep`` of
the best gain around it are the population's healthy range (what ``training.spread`` draws
from). Every trial is kept in a table, cached per population in the run directory under a key
of everything that decides it, so a rerun, a resume or a cluster run does not repeat it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.fileio import atomic_path
from simlab.protocol import CohortPlan, Population, Protocol, plan_cohort
from simlab.rundir import RunDirectory
from simlab.specs.protocol import Calibrate
from simlab.specs.rules import CalibratedRates, rate_fields
from simlab.subjects.tasks import TaskData, load_task
from simlab.training.cohort import by_compile_group, population_rule, subject_network
from simlab.training.objectives import task_objective
from simlab.training.population import train_population


def calibration_seeds(protocol: Protocol, n: int) -> list[int]:
    """Seeds no subject of the cohort has: the cohort's are 1000 * seed + replicate >= 0."""
    return [-(1000 * protocol.seed + k + 1) for k in range(n)]


def budget(protocol: Protocol, spec: Calibrate) -> int:
    """Steps per trial: the spec's, else a third of training (at least 1)."""
    return spec.steps if spec.steps is not None else max(1, protocol.training.steps // 3)


def held_out_split(task: TaskData, fraction: float, seed: int) -> TaskData:
    """The training split cut in two: calibration trains on one part and is judged on the
    other (the ``x_test`` of the returned task), so the test split stays untouched."""
    order = np.random.default_rng(seed).permutation(len(task.y_train))
    n_val = max(1, int(round(fraction * len(order))))
    val, train = order[:n_val], order[n_val:]
    return TaskData(task.name, task.x_train[train], task.y_train[train], task.x_train[val], task.y_train[val], task.n_classes)


def grid(value: float, spec: Calibrate) -> list[float]:
    """``points`` rates log-spaced from value / span to value * span (4 significant digits)."""
    return [float(f"{value * spec.span ** e:.4g}") for e in np.linspace(-1.0, 1.0, spec.points)]


def cache_key(protocol: Protocol, pop: Population, spec: Calibrate) -> str:
    """A digest of everything that decides a population's calibration."""
    facts = {
        "architecture": protocol.architecture_spec(pop.architecture).model_dump(mode="json"),
        "task": protocol.task_spec(pop.task).model_dump(mode="json"),
        "rule": pop.learning_rule,
        "settings": pop.hyperparameters.model_dump(mode="json"),
        "batch_size": pop.batch_size,
        "calibrate": spec.model_dump(mode="json"),
        "steps": budget(protocol, spec),
        "seed": protocol.seed,
        "clip_grad_norm": protocol.training.clip_grad_norm,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def searched_rates(pop: Population, spec: Calibrate) -> list[str]:
    """The rate fields searched for a population, in the rule's order."""
    fields = rate_fields(pop.hyperparameters)
    return [name for name in fields if spec.rates is None or name in spec.rates]


def calibrate_population(protocol: Protocol, pop: Population, spec: Calibrate, on_trial: Callable | None = None) -> xr.Dataset:
    """Every trial of one population's search, its scores per seed and the choice."""
    started = time.perf_counter()
    task = held_out_split(load_task(protocol.task_spec(pop.task)), spec.validation_fraction, protocol.seed)
    rule, rule_for = population_rule(protocol, pop)
    network = subject_network(protocol, pop.architecture, pop.task, rule.credit)
    objective = task_objective(protocol.task_spec(pop.task))
    steps = budget(protocol, spec)
    seeds = calibration_seeds(protocol, spec.seeds)
    fields = searched_rates(pop, spec)
    best = {name: float(getattr(pop.hyperparameters, name)) for name in rate_fields(pop.hyperparameters)}
    trials: list[dict] = []
    healthy: dict[str, tuple[float, float]] = {}
    for field in fields:
        stage = [{**best, field: value} for value in grid(best[field], spec)]
        done = {_rates_key(trial["rates"]): trial for trial in trials}
        todo = [rates for rates in stage if _rates_key(rates) not in done]  # the centre was tried
        result = train_population(
            network, rule, task, pop.batch_size, steps, [0, steps],
            [seed for _ in todo for seed in seeds], protocol.training.vectorize, objective=objective,
            rates=[rates for rates in todo for _ in seeds], rule_for=rule_for,
        )
        scores = result.test_accuracy.reshape(len(todo), len(seeds), 2)
        diverged = np.asarray(result.status).reshape(len(todo), len(seeds)) == "diverged"
        for i, rates in enumerate(todo):
            done[_rates_key(rates)] = {
                "stage": field, "rates": rates, "untrained": scores[i, :, 0], "score": scores[i, :, 1], "diverged": diverged[i],
            }
        stage_trials = [done[_rates_key(rates)] for rates in stage]
        for trial in stage_trials:
            trial["accepted"] = accepted(trial, spec.min_gain)
        chosen = choose(stage_trials)
        if chosen is not None:
            best = dict(stage_trials[chosen]["rates"])
            healthy[field] = healthy_range(stage_trials, chosen, field, spec.keep)
        trials += [trial for trial in stage_trials if not any(trial is t for t in trials)]
        if on_trial is not None:
            on_trial(len(stage))
    found = len(healthy) == len(fields)
    return calibration_table(protocol, pop, spec, trials, best, healthy, found, time.perf_counter() - started, steps, seeds)


def _rates_key(rates: dict) -> str:
    return json.dumps(rates, sort_keys=True)


def accepted(trial: dict, min_gain: float) -> bool:
    """No seed diverged and every seed beat its untrained network by ``min_gain``."""
    score, untrained = trial["score"], trial["untrained"]
    return bool(not trial["diverged"].any() and np.isfinite(score).all() and (score >= untrained + min_gain).all())


def gain(trial: dict) -> float:
    return float(np.mean(trial["score"] - trial["untrained"]))


def choose(trials: Sequence[dict]) -> int | None:
    """The accepted trial of the highest mean score (the first of equals), None if none."""
    candidates = [i for i, trial in enumerate(trials) if trial["accepted"]]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (float(np.mean(trials[i]["score"])), -i))


def healthy_range(trials: Sequence[dict], chosen: int, field: str, keep: float) -> tuple[float, float]:
    """The rates of the accepted trials next to ``chosen`` (the grid is sorted) whose gain
    reaches ``keep`` times the chosen one's."""
    good = [t["accepted"] and gain(t) >= keep * gain(trials[chosen]) for t in trials]
    low = high = chosen
    while low > 0 and good[low - 1]:
        low -= 1
    while high < len(trials) - 1 and good[high + 1]:
        high += 1
    return (trials[low]["rates"][field], trials[high]["rates"][field])


def calibration_table(protocol, pop, spec, trials, best, healthy, found, seconds, steps, seeds) -> xr.Dataset:
    """One population's trials as a dataset [trial, seed]; the choice in its attributes."""
    names = list(dict.fromkeys(name for trial in trials for name in trial["rates"]))
    data = {
        "score": (("trial", "seed"), np.array([t["score"] for t in trials], np.float32).reshape(len(trials), len(seeds))),
        "untrained": (("trial", "seed"), np.array([t["untrained"] for t in trials], np.float32).reshape(len(trials), len(seeds))),
        "diverged": (("trial", "seed"), np.array([t["diverged"] for t in trials], np.int8).reshape(len(trials), len(seeds))),
        "accepted": ("trial", np.array([t["accepted"] for t in trials], np.int8)),
    }
    coords = {
        "trial": np.arange(len(trials)),
        "seed": np.asarray(seeds, np.int64),
        "population": ("trial", [pop.id] * len(trials)),
        "stage": ("trial", [t["stage"] for t in trials]),
        **{name: ("trial", np.array([t["rates"].get(name, np.nan) for t in trials], np.float64)) for name in names},
    }
    choice = CalibratedRates(rates={k: v for k, v in best.items() if k in healthy}, healthy=healthy)
    attrs = {
        "title": f"{protocol.name}: calibration of {pop.id}",
        "population": pop.id,
        "found": int(found),
        "choice": json.dumps(choice.model_dump(mode="json")),
        "steps": steps,
        "seconds": float(seconds),
        "calibrate": json.dumps(spec.model_dump(mode="json")),
        "health_metric": "score: the health metric on a held-out part of the training split",
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def choice_of(table: xr.Dataset) -> CalibratedRates | None:
    """The rates a population's table chose (those of its stages that found a healthy one);
    None where no stage did."""
    choice = CalibratedRates.model_validate(json.loads(table.attrs["choice"]))
    return choice if choice.rates else None


def populations_to_calibrate(protocol: Protocol, plan: CohortPlan) -> list[Population]:
    """Populations with rates to search, not pinned by ``training.calibrated``."""
    spec = protocol.training.calibrate or Calibrate()
    return [pop for pop in plan.populations if pop.id not in protocol.training.calibrated and searched_rates(pop, spec)]


def calibrate_cohort(
    run: RunDirectory, protocol: Protocol, force: bool = False, progress: bool = True, echo: Callable = print
) -> dict[str, xr.Dataset]:
    """Calibrate every population of ``protocol`` (its ``training.calibrate``, else the
    defaults), reusing the tables cached in the run directory; population id -> table."""
    spec = protocol.training.calibrate or Calibrate()
    todo = populations_to_calibrate(protocol, plan_cohort(protocol))
    tables: dict[str, xr.Dataset] = {}
    missing = []
    for pop in todo:
        path = run.calibration(pop.id)
        if path.exists() and not force:
            cached = xr.open_dataset(path).load()
            cached.close()
            if cached.attrs.get("key") == cache_key(protocol, pop, spec):
                tables[pop.id] = cached
                continue
        missing.append(pop)
    if len(todo) > len(missing):
        echo(f"calibration: {len(todo) - len(missing)} population(s) cached in {run.calibration_dir}, kept")
    trials = sum(spec.points * len(searched_rates(pop, spec)) for pop in missing)
    bar = tqdm(total=trials, desc="calibration (settings)", unit="setting", disable=not progress or not missing)
    for pop in by_compile_group(missing):
        bar.set_postfix_str(pop.id)
        table = calibrate_population(protocol, pop, spec, on_trial=bar.update)
        table.attrs["key"] = cache_key(protocol, pop, spec)
        with atomic_path(run.calibration(pop.id), True) as tmp:
            table.to_netcdf(tmp, engine="netcdf4")
        run.log(f"calibrate: {pop.id} in {table.attrs['seconds']:.1f} s -> {choice_summary(table)}")
        tables[pop.id] = table
    bar.close()
    return {pop.id: tables[pop.id] for pop in todo}


def choice_summary(table: xr.Dataset) -> str:
    choice = choice_of(table)
    if choice is None:
        return "no healthy setting: the population keeps its settings"
    chosen = ", ".join(
        f"{name}={value:g} (healthy {choice.healthy[name][0]:g}-{choice.healthy[name][1]:g})" for name, value in choice.rates.items()
    )
    return chosen + ("" if int(table.attrs["found"]) else "; a rate without a healthy setting kept")


def calibrated_protocol(protocol: Protocol, tables: dict[str, xr.Dataset]) -> Protocol:
    """The protocol as run: ``training.calibrated`` holds every population's choice (those
    without a healthy setting keep their settings and are left out)."""
    chosen = {pid: choice for pid, table in tables.items() if (choice := choice_of(table)) is not None}
    if not chosen:
        return protocol
    training = protocol.training.model_copy(update={"calibrated": {**protocol.training.calibrated, **chosen}})
    return protocol.model_copy(update={"training": training})


def combined_table(tables: Iterable[xr.Dataset]) -> xr.Dataset:
    """Every population's trials in one dataset [trial, seed] (rates NaN where a rule has none)."""
    tables = list(tables)
    rates = list(dict.fromkeys(name for t in tables for name in t.coords if name not in ("trial", "seed", "population", "stage")))
    filled = [
        t.drop_vars("trial").assign_coords({name: ("trial", np.full(t.sizes["trial"], np.nan)) for name in rates if name not in t.coords})
        for t in tables
    ]
    combined = xr.concat(filled, dim="trial", data_vars="all", coords="different", compat="equals", join="outer")
    combined = combined.assign_coords(trial=np.arange(combined.sizes["trial"]))
    combined.attrs = {
        "title": "calibration: every setting tried, its score per seed, the choice",
        "choices": json.dumps({t.attrs["population"]: json.loads(t.attrs["choice"]) for t in tables}),
        "seconds": float(sum(t.attrs["seconds"] for t in tables)),
        "calibrate": tables[0].attrs["calibrate"],
        "steps": int(tables[0].attrs["steps"]),
    }
    return combined


def format_calibration(tables: Iterable[xr.Dataset]) -> str:
    """A readable table: per population, every setting tried, its score per seed (gain over
    the untrained network), the verdict and the choice."""
    lines = []
    for table in tables:
        choice = choice_of(table)
        names = [name for name in table.coords if name not in ("trial", "seed", "population", "stage")]
        lines.append(f"{table.attrs['population']}  ({table.attrs['steps']} steps, {table.attrs['seconds']:.1f} s)")
        for i in range(table.sizes["trial"]):
            rates = ", ".join(f"{name}={float(table[name][i]):g}" for name in names if np.isfinite(table[name][i]))
            scores = "  ".join(
                f"{float(s):.3f} ({float(s - u):+.3f})" + (" diverged" if d else "")
                for s, u, d in zip(table["score"][i].values, table["untrained"][i].values, table["diverged"][i].values)
            )
            chosen = choice is not None and all(
                np.isclose(float(table[name][i]), value) for name, value in choice.rates.items()
            )
            verdict = "chosen" if chosen else ("ok" if int(table["accepted"][i]) else "rejected")
            lines.append(f"  {rates:<48s} {scores}  {verdict}")
        lines.append(f"  -> {choice_summary(table)}")
    return "\n".join(lines)


def defaults_table_from(protocol: Protocol, choices: dict[str, dict | None], provenance: dict) -> dict:
    """The shipped table's form (:class:`simlab.specs.rules.DefaultsTable`) from calibrated
    populations: per rule and architecture family (type), each rate the geometric mean of its
    populations' choices and the healthy range all of them share (left out where they share
    none), which serves the family's nets that were not calibrated; and, where a family had
    several calibrated preset nets, each net's own entry the same way (one rate per family does
    not suit both knet and knet4). ``choices``: population id -> its choice
    (``CalibratedRates`` fields), None if none."""
    plan = {pop.id: pop for pop in plan_cohort(protocol).populations}
    members: dict[tuple[str, str], list[tuple[str | None, CalibratedRates]]] = {}
    for pid, data in choices.items():
        choice = None if data is None else CalibratedRates.model_validate(data)
        if choice is None or not choice.rates:
            continue
        pop = plan[pid]
        family = protocol.architecture_spec(pop.architecture).type
        preset = None if pop.architecture in protocol.architectures else pop.architecture
        members.setdefault((pop.learning_rule, family), []).append((preset, choice))
    defaults: dict[str, dict[str, dict]] = {}
    by_architecture: dict[str, dict[str, dict]] = {}
    for (rule, family), entries in sorted(members.items()):
        defaults.setdefault(rule, {})[family] = _pooled_entry([choice for _, choice in entries])
        presets = {preset for preset, _ in entries if preset is not None}
        if len(presets) > 1:
            for preset in sorted(presets):
                own = _pooled_entry([choice for p, choice in entries if p == preset])
                by_architecture.setdefault(rule, {})[preset] = own
    return {"provenance": provenance, "defaults": defaults, "by_architecture": by_architecture}


def _pooled_entry(choices: list[CalibratedRates]) -> dict:
    """One table entry from several choices: each rate's geometric mean, clipped into the
    healthy range all of them share, and that range (absent where they share none)."""
    rates, healthy = {}, {}
    for name in dict.fromkeys(name for c in choices for name in c.rates):
        values = [c.rates[name] for c in choices if name in c.rates]
        low = max((c.healthy[name][0] for c in choices if name in c.healthy), default=np.inf)
        high = min((c.healthy[name][1] for c in choices if name in c.healthy), default=-np.inf)
        value = float(f"{np.exp(np.mean(np.log(values))):.3g}")
        if low <= high:
            value = float(min(max(value, low), high))
            healthy[name] = [float(low), float(high)]
        rates[name] = value
    return {"rates": rates, "healthy": healthy}
