"""Train every population of a cohort into the run directory's snapshot store.

A population whose shard already exists is finished and skipped (unless ``force``), so an
interrupted run picks up where it stopped and never loses trained subjects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import optax
import xarray as xr
from tqdm.auto import tqdm

from simlab.fileio import atomic_path
from simlab.protocol import CohortPlan, Population, Protocol
from simlab.rules.rules import LearningRule, autodiff_estimate, learns_from_reward, make_rule, rule_factors
from simlab.rundir import RunDirectory
from simlab.specs.rules import rate_fields
from simlab.subjects.architectures import Network, ProjectionHead
from simlab.subjects.tasks import load_task
from simlab.training.accelerators import CompileMeter, release_compiled_programs
from simlab.training.diagnostics import alignment_angles, alignment_fn
from simlab.training.objectives import task_objective
from simlab.training.population import EXPLOSION_FACTOR, compile_ahead, train_population
from simlab.training.snapshots import read_shard, write_shard


def train_cohort(
    run: RunDirectory,
    protocol: Protocol,
    plan: CohortPlan,
    force: bool = False,
    progress: bool = True,
    executor=None,
):
    """Train the populations that have no shard yet; returns the ids of those trained now.

    ``executor``: where the populations train; None trains them here, one after another. An
    executor has ``train(run, population_ids, force, on_done)``, trains each population into
    its shard and calls ``on_done(population_id, subjects)`` as each finishes
    (:class:`simlab.cluster.DaskExecutor` makes each a task on a Dask cluster).
    """
    todo = [pop for pop in plan.populations if force or not run.shard(pop.id).exists()]
    done = len(plan.populations) - len(todo)
    if done:
        run.log(f"train: {done} population(s) already in the snapshot store, kept")
    bar = tqdm(total=sum(len(pop.subjects) for pop in todo), desc="training", unit="subject", disable=not progress)
    if executor is not None:
        try:
            executor.train(run, [pop.id for pop in todo], force=force, on_done=lambda pop_id, n: bar.update(n))
        finally:
            bar.close()
        return [pop.id for pop in todo]

    with CompileMeter(all_threads=True) as stage, ThreadPoolExecutor(1, thread_name_prefix="simlab-compile") as compiler:
        order = by_compile_group(todo)
        pop = next(order, None)
        while pop is not None:
            following = next(order, None)  # releases compiled programs when the group changes
            ahead = None if following is None else compiler.submit(compile_ahead, **population_job(protocol, following))
            bar.set_postfix_str(pop.id)
            run.log(train_and_write(run, protocol, pop, force=force, on_trained=bar.update))
            if ahead is not None:
                # wait for it (before the next release of compiled programs); an error it met is left to
                # the population's own training, which reports it where it belongs
                ahead.exception()
            pop = following
    bar.close()
    if todo:
        run.log(
            f"train: {len(todo)} population(s) in {stage.wall_seconds:.1f} s; compilation, the next population's "
            f"overlapping the training of the current one: {stage.summary()}"
        )
    return [pop.id for pop in todo]


def compile_group(pop: Population) -> tuple[str, str]:
    """Populations of one architecture and task: the only ones that may share compiled programs."""
    return pop.architecture, pop.task


def by_compile_group(populations):
    """The populations, those of one architecture and task together (groups in order of first
    appearance, so a plan's order is kept where it already groups them), releasing the compiled
    programs of each group before the next (:func:`release_compiled_programs`)."""
    first = {group: k for k, group in enumerate(dict.fromkeys(map(compile_group, populations)))}
    group = None
    for pop in sorted(populations, key=lambda pop: first[compile_group(pop)]):
        if group is not None and compile_group(pop) != group:
            release_compiled_programs()
        group = compile_group(pop)
        yield pop


HEALTH_METRICS = {
    "test_accuracy": "test accuracy",
    "probe_accuracy": "linear-probe accuracy",
}
"""Health metric -> its words in logs and summaries."""


def subject_network(protocol: Protocol, architecture: str, task: str, credit: str) -> Network:
    """The network of the protocol's subjects of one architecture and task: the
    architecture's sites, then a linear readout of the task's classes, or, for a contrastive
    task, its projection head."""
    task_spec = protocol.task_spec(task)
    contrastive = task_spec.contrastive if task_spec.objective == "contrastive" else None
    head = None if contrastive is None else ProjectionHead(contrastive.projection_hidden, contrastive.projection_dim)
    n_classes = load_task(task_spec).n_classes
    return Network(protocol.architecture_spec(architecture), n_classes, credit, head)


def population_rule(protocol: Protocol, pop: Population) -> tuple[LearningRule, Callable]:
    """A population's rule at its resolved settings, and ``rule_for(rates)``, which builds it
    at a subject's rates (traced: one program for every rate); both with the protocol's
    gradient clipping (``training.clip_grad_norm``) when it is on."""
    hyper = pop.hyperparameters

    def rule_for(rates) -> LearningRule:
        return with_clipping(make_rule(pop.learning_rule, hyper.model_copy(update=dict(rates))), protocol.training.clip_grad_norm)

    return rule_for({}), rule_for


def with_clipping(rule: LearningRule, max_norm: float | None) -> LearningRule:
    """``rule`` whose update direction (the gradient or the rule's estimate of it) is clipped
    to global norm ``max_norm`` before its optimizer; unchanged for None."""
    if max_norm is None:
        return rule
    return rule._replace(optimizer=optax.chain(optax.clip_by_global_norm(max_norm), rule.optimizer))


def subject_rates(subject) -> dict[str, float]:
    """The rates a subject trains at (runtime arguments of its population's program)."""
    return {name: float(getattr(subject.hyperparameters, name)) for name in rate_fields(subject.hyperparameters)}


def train_and_write(run: RunDirectory, protocol: Protocol, pop: Population, force: bool = False, on_trained=None) -> str:
    """Train one population and write its shard (atomically); returns the line for the log,
    with what compiling its programs cost."""
    with CompileMeter() as meter:
        message = _train_and_write(run, protocol, pop, force, on_trained)
    return f"{message}; compile: {meter.summary()}"


def population_job(protocol: Protocol, pop: Population) -> dict:
    """The arguments of :func:`train_population` (and :func:`compile_ahead`) for a population."""
    rule, rule_for = population_rule(protocol, pop)
    return dict(
        network=subject_network(protocol, pop.architecture, pop.task, rule.credit),
        rule=rule,
        task=load_task(protocol.task_spec(pop.task)),
        batch_size=pop.batch_size,
        steps=protocol.training.steps,
        session_steps=protocol.session_steps(),
        seeds=[subject.seed for subject in pop.subjects],
        vectorize=protocol.training.vectorize,
        objective=task_objective(protocol.task_spec(pop.task)),
        rates=[subject_rates(subject) for subject in pop.subjects],
        rule_for=rule_for,
    )


def _train_and_write(run: RunDirectory, protocol: Protocol, pop: Population, force: bool, on_trained) -> str:
    started = time.perf_counter()
    session_steps = protocol.session_steps()
    result = train_population(**population_job(protocol, pop), on_trained=on_trained)
    write_shard(run.shard(pop.id), pop.id, [s.id for s in pop.subjects], session_steps, result, force=force)
    accuracies = ", ".join(f"{a:.3f}" for a in result.test_accuracy[:, -1])
    return (
        f"train: {pop.id} in {time.perf_counter() - started:.1f} s; final {HEALTH_METRICS[result.health_metric]} "
        f"{accuracies}; status {', '.join(result.status)}"
    )


def subject_table(run: RunDirectory, protocol: Protocol, plan: CohortPlan) -> xr.Dataset:
    """Factors, training curves, health (test accuracy, or linear-probe accuracy for
    self-supervised subjects: see ``health_metric``) per session, status and, for rules other
    than backprop, alignment diagnostics (:mod:`simlab.training.diagnostics`) of every subject."""
    steps = protocol.training.steps
    session_steps = protocol.session_steps()
    losses = np.full((len(plan), steps), np.nan, np.float32)
    accuracy = np.full((len(plan), len(session_steps)), np.nan, np.float32)
    status = np.empty(len(plan), dtype=object)
    diverged_step = np.full(len(plan), -1, np.int64)
    # alignment diagnostics (simlab.training.diagnostics): [subject, layer, session], NaN for
    # backprop rules and padded layers; the layers of each subject in its plan order
    networks: dict[tuple[str, str], Network] = {}
    for pop in plan.populations:
        if (pop.architecture, pop.task) not in networks:
            networks[pop.architecture, pop.task] = subject_network(protocol, pop.architecture, pop.task, "backprop")
    n_layers = max(len(network.site_names) for network in networks.values())
    feedback_angle = np.full((len(plan), n_layers, len(session_steps)), np.nan, np.float32)
    gradient_angle = np.full_like(feedback_angle, np.nan)
    layer_name = np.full((len(plan), n_layers), "", dtype=object)
    alignment_fns: dict[tuple[str, str, str], object] = {}
    stimuli: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for pop in by_compile_group(plan.populations):
        shard = read_shard(run.shard(pop.id))
        for replicate, subject in enumerate(pop.subjects):
            losses[subject.index] = shard.losses[replicate]
            accuracy[subject.index] = shard.test_accuracy[replicate]
            status[subject.index] = shard.status[replicate]
            if shard.diverged_step is not None:
                diverged_step[subject.index] = shard.diverged_step[replicate]
        backprop_network = networks[pop.architecture, pop.task]
        names = backprop_network.site_names
        indices = [subject.index for subject in pop.subjects]
        layer_name[indices, : len(names)] = names
        rule, _ = population_rule(protocol, pop)
        if rule.credit == "backprop" and rule.estimate is autodiff_estimate:
            continue
        if pop.task not in stimuli:
            stimuli[pop.task] = (run.stimuli(pop.task), run.stimulus_labels(pop.task))
        # rules sharing a credit path and autodiff share one compiled function
        key = (pop.architecture, pop.task, rule.credit if rule.estimate is autodiff_estimate else pop.learning_rule)
        if key not in alignment_fns:
            rule_network = subject_network(protocol, pop.architecture, pop.task, rule.credit)
            objective = task_objective(protocol.task_spec(pop.task))
            alignment_fns[key] = alignment_fn(rule_network, backprop_network, rule.estimate, objective)
        fb, grad = alignment_angles(alignment_fns[key], shard.params, shard.state, *stimuli[pop.task])
        # [replicate, session, site] -> [subject, layer, session]
        feedback_angle[indices, : len(names)] = fb.transpose(0, 2, 1)
        gradient_angle[indices, : len(names)] = grad.transpose(0, 2, 1)
    subjects = plan.subjects
    population_of = {subject.index: pop.id for pop in plan.populations for subject in pop.subjects}
    table = xr.Dataset(
        {
            "loss": (("subject", "step"), losses, {"long_name": "training loss of each step's batch", "units": "1"}),
            "test_accuracy": (
                ("subject", "session"),
                accuracy,
                {
                    "long_name": "accuracy on the task's test split",
                    "units": "1",
                    "comment": "of the outputs (health_metric test_accuracy) or of a linear probe on the "
                    "frozen representation (health_metric probe_accuracy: self-supervised subjects)",
                },
            ),
            "diverged_step": (
                "subject",
                diverged_step,
                {
                    "long_name": "training step at which the subject diverged",
                    "units": "1",
                    "comment": "-1: it did not; its first non-finite loss, or the start of an explosion it never came back from (ending above "
                    f"{EXPLOSION_FACTOR:g} times its starting level: simlab.training.population.divergence_step)",
                },
            ),
            "feedback_angle": (
                ("subject", "layer", "session"),
                feedback_angle,
                {
                    "long_name": "angle between the feedback kernel B and the kernel W (flattened)",
                    "units": "degree",
                    "comment": "NaN for backprop rules, padded layers and layers without a B of W's shape",
                },
            ),
            "gradient_angle": (
                ("subject", "layer", "session"),
                gradient_angle,
                {
                    "long_name": "angle between the rule's gradient of W and the backprop gradient of W "
                    "(the subject's objective on the run's stimulus set)",
                    "units": "degree",
                    "comment": "NaN for backprop rules and padded layers",
                },
            ),
        },
        coords={
            "subject": [s.id for s in subjects],
            "layer": np.arange(n_layers),
            "layer_name": (("subject", "layer"), layer_name.astype(str)),
            "step": np.arange(1, steps + 1),
            "session": np.arange(len(session_steps)),
            "session_step": ("session", session_steps),
            "population": ("subject", [population_of[s.index] for s in subjects]),
            **subject_coords(protocol, plan, accuracy[:, -1], status, initial_accuracy=accuracy[:, 0]),
        },
        attrs={"title": f"{protocol.name}: subjects", "protocol": protocol.to_yaml()},
    )
    return table


def subject_labels(protocol: Protocol, subject) -> dict[str, str]:
    """One subject's categorical labels: its rule's factors (credit mechanism, optimizer), its
    task family and what its health metric measures.

    ``task_family`` is "supervised", "self_supervised" or "reward_based": what signal the subject
    learns from. A supervised task learned by a reward-modulated rule (node perturbation: a scalar
    change of the loss, never an error vector) is "reward_based". ``health_metric`` says what
    ``final_accuracy`` and ``test_accuracy`` measure: "test_accuracy" (its outputs) or
    "probe_accuracy" (a linear probe on its representation)."""
    objective = task_objective(protocol.task_spec(subject.task))
    hyper = subject.hyperparameters
    factors = rule_factors(subject.learning_rule, hyper)
    family = objective.family
    if family == "supervised" and learns_from_reward(subject.learning_rule, hyper):
        family = "reward_based"
    return {**factors, "task_family": family, "health_metric": objective.health_metric}


def task_family(protocol: Protocol, subject) -> str:
    """"supervised", "self_supervised" or "reward_based" (see `subject_labels`)."""
    return subject_labels(protocol, subject)["task_family"]


def subject_coords(
    protocol: Protocol, plan: CohortPlan, final_accuracy: np.ndarray, status, initial_accuracy: np.ndarray | None = None
) -> dict[str, tuple]:
    """The per-subject coordinates that every recording and the subject table carry: factors,
    labels, health, and the settings each subject trained with (every rate of any rule as a
    number, NaN for a rule without it; all settings as JSON in ``rule_settings``; the
    gradient clipping, NaN when off).

    ``initial_accuracy``: the health metric at step 0 (the untrained network), which the
    analyses' health check compares ``final_accuracy`` with (NaN where not given)."""
    if initial_accuracy is None:
        initial_accuracy = np.full(len(plan.subjects), np.nan)
    subjects = plan.subjects
    labels = [subject_labels(protocol, s) for s in subjects]
    rates = list(dict.fromkeys(name for s in subjects for name in rate_fields(s.hyperparameters)))
    clip = protocol.training.clip_grad_norm
    return {
        "learning_rule": ("subject", [s.learning_rule for s in subjects]),
        "credit_mechanism": ("subject", [lab["credit_mechanism"] for lab in labels]),
        "optimizer": ("subject", [lab["optimizer"] for lab in labels]),
        "task_family": ("subject", [lab["task_family"] for lab in labels]),
        "architecture": ("subject", [s.architecture for s in subjects]),
        "task": ("subject", [s.task for s in subjects]),
        "batch_size": ("subject", np.array([s.batch_size for s in subjects], np.int64)),
        "seed": ("subject", np.array([s.seed for s in subjects], np.int64)),
        "replicate": ("subject", np.array([s.replicate for s in subjects], np.int64)),
        "final_accuracy": ("subject", np.asarray(final_accuracy, np.float32)),
        "initial_accuracy": ("subject", np.asarray(initial_accuracy, np.float32)),
        "health_metric": ("subject", [lab["health_metric"] for lab in labels]),
        "status": ("subject", np.asarray(status).astype(str)),
        **{
            name: ("subject", np.array([getattr(s.hyperparameters, name, np.nan) for s in subjects], np.float64))
            for name in rates
        },
        "rule_settings": ("subject", [json.dumps(s.hyperparameters.model_dump(mode="json"), sort_keys=True) for s in subjects]),
        "clip_grad_norm": ("subject", np.full(len(subjects), np.nan if clip is None else clip, np.float64)),
    }


def write_subject_table(table: xr.Dataset, path, force: bool = False) -> None:
    with atomic_path(path, force) as tmp:
        table.to_netcdf(tmp, engine="netcdf4")
