"""Train a population (replicates sharing architecture, task, rule and batch size) as one program.

The whole of training is one ``lax.scan`` over steps, compiled once per population. Parameters
and feedback kernels are written into a per-session snapshot buffer inside the scan, so that
rigs can record any session later without retraining. Replicates run either vmapped (one
program for all of them) or one after another through the same compiled program; which is
faster depends on the backend (see ``benchmarks/``), and ``vectorize="auto"`` picks the
measured winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simlab.rules.rules import LearningRule
from simlab.subjects.architectures import Network
from simlab.subjects.tasks import TaskData
from simlab.training.accelerators import run_vmapped, training_compiler_options
from simlab.training.objectives import CROSS_ENTROPY, Objective, objective_loss
from simlab.training.probe import probe_accuracy, probe_subsample


@dataclass
class PopulationResult:
    """Everything training leaves behind. Leading axes: [replicate, session] for snapshots."""

    params: Any
    state: Any
    losses: np.ndarray  # [replicate, step] training loss of each step's batch
    # [replicate, session] the health metric: accuracy on the task's test split of the outputs
    # ("test_accuracy") or of a linear probe on the representation ("probe_accuracy")
    test_accuracy: np.ndarray
    status: list[str]  # "ok" or "diverged", per replicate
    health_metric: str = "test_accuracy"
    # [replicate] the step (1-based) at which each replicate diverged, -1 where it did not
    diverged_step: np.ndarray | None = None


def session_slots(session_steps: Sequence[int], steps: int) -> np.ndarray:
    """For each training step t (0-based), the session recorded after its update, or -1.

    Session 0 is the initial state (step 0); session k with step s_k is written after the
    s_k-th update, i.e. at scan index s_k - 1.
    """
    slots = np.full(steps, -1, np.int32)
    for session, step in enumerate(session_steps):
        if step > 0:
            slots[step - 1] = session
    return slots


def cross_entropy(network: Network, params, state, x, y):
    return objective_loss(network, CROSS_ENTROPY)(params, state, x, y)


def make_trainer(
    network: Network,
    rule: LearningRule,
    batch_size: int,
    steps: int,
    session_steps: Sequence[int],
    objective: Objective = CROSS_ENTROPY,
    rule_for: Callable[[Mapping[str, Any]], LearningRule] | None = None,
):
    """A pure function ``train(key, x_train, y_train, rates=None) -> (snapshots, losses)`` for
    one subject.

    ``rates`` (with ``rule_for``): the subject's rates (``learning_rate``...) as arrays, and
    ``rule_for(rates)`` builds its rule from them inside the trace, so one compiled program
    trains a population whose subjects have different rates (a spread, a calibration grid).
    Without them the trainer uses ``rule``.

    ``snapshots`` is ``(params, state)`` with a leading session axis. Batches are drawn
    uniformly with replacement from the training split, from a key of the subject's own.
    The program has no host callback (a progress bar's would keep it out of JAX's persistent
    compilation cache, so that every run compiled it again): progress is told per subject.
    Random streams of a step: the batch draw, then ``fold_in(step_key, 1)`` for the feedback
    update, 2 for the objective's ``prepare`` (augmentations), 3 for the rule's estimate.
    """
    slots = jnp.asarray(session_slots(session_steps, steps))
    n_sessions = len(session_steps)
    loss = objective_loss(network, objective)
    fixed_rule = rule

    def train(key, x_train, y_train, rates=None):
        rule = fixed_rule if rates is None else rule_for(rates)
        init_key, data_key = jax.random.split(key)
        params, state = network.init(init_key, x_train[:1])
        optimizer_state = rule.optimizer.init(params)
        feedback_state = rule.feedback_update.init(state) if rule.feedback_update else ()
        snapshots = jax.tree.map(
            lambda a: jnp.zeros((n_sessions, *a.shape), a.dtype).at[0].set(a), (params, state)
        )

        def step(carry, scan_input):
            params, state, optimizer_state, feedback_state, snapshots = carry
            t, slot = scan_input
            step_key = jax.random.fold_in(data_key, t)
            batch = jax.random.randint(step_key, (batch_size,), 0, x_train.shape[0])
            inputs, targets = objective.prepare(jax.random.fold_in(step_key, 2), x_train[batch], y_train[batch])
            value, sites, grads = rule.estimate(
                loss, params, state, inputs, targets,
                key=jax.random.fold_in(step_key, 3), network=network, objective=objective,
            )
            updates, optimizer_state = rule.optimizer.update(grads, optimizer_state, params)
            if rule.feedback_update is not None:
                inputs = {name: site.input for name, site in sites.items()}
                # the step's key (a stream apart from the batch draw), W's gradients and updates
                state, feedback_state = rule.feedback_update.update(
                    state, params, inputs, network.ops, feedback_state,
                    key=jax.random.fold_in(step_key, 1), grads=grads, updates=updates,
                )
            params = optax.apply_updates(params, updates)

            def write(buffers):
                return jax.tree.map(lambda buf, a: buf.at[slot].set(a), buffers, (params, state))

            snapshots = jax.lax.cond(slot >= 0, write, lambda buffers: buffers, snapshots)
            return (params, state, optimizer_state, feedback_state, snapshots), value

        carry = (params, state, optimizer_state, feedback_state, snapshots)
        carry, losses = jax.lax.scan(step, carry, (jnp.arange(steps), slots))
        return carry[-1], losses

    return train


def make_evaluator(network: Network, task: TaskData, objective: Objective = CROSS_ENTROPY):
    """``evaluate(params, state) -> [session]`` health of one subject's snapshots (leading
    session axis): the test accuracy of its outputs or, for an objective with a ``probe``, of
    a linear probe on its representation (:mod:`simlab.training.probe`), fitted anew on
    every session's frozen features."""
    test = (jnp.asarray(task.x_test), jnp.asarray(task.y_test))
    if objective.probe is None:

        def accuracy(params, state, x, y):
            logits, _ = network.apply(params, state, x)
            return jnp.mean(jnp.argmax(logits, -1) == y)

        over_sessions = jax.jit(jax.vmap(accuracy, in_axes=(0, 0, None, None)))
        return lambda params, state: over_sessions(params, state, *test)

    fitted_on = probe_subsample(len(task.y_train), objective.probe.examples)
    fit = (jnp.asarray(task.x_train[fitted_on]), jnp.asarray(task.y_train[fitted_on]))

    def probe(params, state, x_fit, y_fit, x_test, y_test):
        return probe_accuracy(
            network.representation(params, state, x_fit), y_fit,
            network.representation(params, state, x_test), y_test,
            task.n_classes, objective.probe.ridge,
        )

    # one session after another (lax.map): a probe needs the features of thousands of examples
    one_by_one = jax.jit(lambda params, state, *data: jax.lax.map(lambda s: probe(*s, *data), (params, state)))
    return lambda params, state: one_by_one(params, state, *fit, *test)


def choose_vectorize(vectorize: str) -> str:
    """``auto``: vmap replicates on accelerators; on CPU, run them one by one.

    Measured on the quickstart populations (benchmarks/bench_vectorize.py): on a 2-core CPU a
    compiled scan per subject already keeps both cores busy and vmapping gains nothing.
    """
    if vectorize not in ("auto", "vmap", "loop"):
        raise ValueError(f"vectorize must be 'auto', 'vmap' or 'loop', got {vectorize!r}")
    if vectorize != "auto":
        return vectorize
    return "loop" if jax.default_backend() == "cpu" else "vmap"


def train_population(
    network: Network,
    rule: LearningRule,
    task: TaskData,
    batch_size: int,
    steps: int,
    session_steps: Sequence[int],
    seeds: Sequence[int],
    vectorize: str = "auto",
    on_trained: Callable[[int], None] | None = None,
    objective: Objective = CROSS_ENTROPY,
    rates: Sequence[Mapping[str, float]] | None = None,
    rule_for: Callable[[Mapping[str, Any]], LearningRule] | None = None,
) -> PopulationResult:
    """Train one replicate per seed; same seed, same numbers. ``rates`` (one mapping per seed)
    and ``rule_for``: each replicate's rates, passed to one compiled program
    (:func:`make_trainer`). ``on_trained(n)``: told that n more subjects finished training
    (each one in turn, or the whole population when vmapped), for progress bars."""
    train = make_trainer(network, rule, batch_size, steps, session_steps, objective, rule_for)
    told = on_trained or (lambda n: None)
    keys, x_train, y_train, per_subject = _program_inputs(task, seeds, rates)
    if choose_vectorize(vectorize) == "vmap":
        # sharded over the host's devices along the population axis, in chunks that fit them
        (params, state), losses = jax.block_until_ready(run_vmapped(train, keys, x_train, y_train, per_subject=per_subject))
        told(len(seeds))
    else:
        compiled = subject_program(train)
        runs = []
        for r, key in enumerate(keys):
            runs.append(jax.block_until_ready(compiled(key, x_train, y_train, _subject_rates(per_subject, r))))
            told(1)
        (params, state), losses = jax.tree.map(lambda *leaves: jnp.stack(leaves), *runs)
    evaluate = make_evaluator(network, task, objective)
    test_accuracy = np.stack(
        [np.asarray(evaluate(*jax.tree.map(lambda a: a[r], (params, state)))) for r in range(len(seeds))]
    )
    losses = np.asarray(losses)
    params, state = jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, state)
    diverged = [divergence_step(losses[r], jax.tree.map(lambda a: a[r], (params, state))) for r in range(len(seeds))]
    return PopulationResult(
        params=params,
        state=state,
        losses=losses,
        test_accuracy=test_accuracy,
        status=["ok" if step < 0 else "diverged" for step in diverged],
        health_metric=objective.health_metric,
        diverged_step=np.asarray(diverged, np.int64),
    )


def _program_inputs(task: TaskData, seeds: Sequence[int], rates: Sequence[Mapping[str, float]] | None):
    """The training program's inputs: one key per seed, the training split, each subject's
    rates as float32 arrays along a leading subject axis (None without rates)."""
    keys = jnp.stack([jax.random.key(seed) for seed in seeds])
    per_subject = None
    if rates is not None:
        per_subject = {name: jnp.asarray([r[name] for r in rates], jnp.float32) for name in rates[0]}
    return keys, jnp.asarray(task.x_train), jnp.asarray(task.y_train), per_subject


def subject_program(train):
    """The jitted one-subject program of the loop: one definition, so that :func:`compile_ahead`
    builds exactly the program (and persistent-cache key) that :func:`train_population` runs."""
    return jax.jit(train, compiler_options=training_compiler_options())


def _subject_rates(per_subject, r: int):
    return None if per_subject is None else jax.tree.map(lambda a: a[r], per_subject)


def compile_ahead(
    network: Network,
    rule: LearningRule,
    task: TaskData,
    batch_size: int,
    steps: int,
    session_steps: Sequence[int],
    seeds: Sequence[int],
    vectorize: str = "auto",
    objective: Objective = CROSS_ENTROPY,
    rates: Sequence[Mapping[str, float]] | None = None,
    rule_for: Callable[[Mapping[str, Any]], LearningRule] | None = None,
) -> bool:
    """Compile the program that :func:`train_population` with these arguments will run, and
    drop it: the executable lands in JAX's persistent compilation cache, where the training's
    own ``jax.jit`` loads it instead of compiling. Run in a thread while another population
    trains, XLA's (single-threaded) compilation overlaps the training.

    Only the per-subject program (``vectorize`` loop, the CPU's choice) and only with the
    persistent cache on; returns whether it compiled anything.
    """
    if choose_vectorize(vectorize) != "loop" or not jax.config.jax_compilation_cache_dir:
        return False
    train = make_trainer(network, rule, batch_size, steps, session_steps, objective, rule_for)
    keys, x_train, y_train, per_subject = _program_inputs(task, seeds[:1], None if rates is None else rates[:1])
    subject_program(train).lower(keys[0], x_train, y_train, _subject_rates(per_subject, 0)).compile()
    return True


EXPLOSION_FACTOR = 10.0
"""A loss that ends this many times its starting level (the first step's loss, that of the
untrained network, at least 1) has exploded: the subject diverged, though its numbers may
still be finite. A spike it recovers from is not a divergence."""


def divergence_step(losses: np.ndarray, snapshots) -> int:
    """The training step (1-based) at which a subject diverged, -1 if it did not: its first
    non-finite loss, else, for a loss that ends (median of the last 10 steps) above
    ``EXPLOSION_FACTOR`` times its starting level, the first step of the explosion it never
    came back from. A subject whose snapshots hold non-finite values but whose losses never
    showed it diverged at its last step."""
    finite = np.isfinite(losses)
    if not finite.all():
        return int(np.argmin(finite)) + 1
    limit = EXPLOSION_FACTOR * max(float(losses[0]), 1.0)
    if np.median(losses[-10:]) > limit:
        below = np.flatnonzero(losses <= limit)
        return int(below[-1]) + 2 if below.size else 1
    if not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(snapshots)):
        return len(losses)
    return -1
