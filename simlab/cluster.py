"""Training a cohort on a Dask cluster: one task per population, one shard per task.

``simlab run PROTOCOL --cluster local:N`` starts a local Dask cluster of N worker processes;
``--scheduler ADDRESS`` connects to a running Dask distributed scheduler (SLURM through
dask-jobqueue, Kubernetes through dask-kubernetes or the Dask Helm chart, or workers started by
hand). Each population becomes a task, submitted with the Dask futures API, that reads the
protocol from the run directory, trains the population and writes its shard there atomically;
the run directory must therefore be on a file system the workers share with the client.
Populations whose shard exists are not submitted, so a rerun of an interrupted run does only
what is missing, and every shard is the same whether a worker or this process trained it.

Workers are spawned processes (never forked after JAX started), each running one task at a
time. XLA CPU reduces some small-output matrix products in an order that depends on the
number of threads of its pool (the CPUs a process may run on), so bit-identical results need
the same CPU count per training process: ``local:N`` gives every worker the CPUs of this
process, like a single-process run; ``local:N:T`` pins each worker to T CPUs of its own (no
oversubscription, MLP results identical, conv results then differ in the last bits).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from simlab.errors import SimlabError, parameter

CONNECT_TIMEOUT_S = 10
LOCAL_CLUSTER = re.compile(r"local:(?P<workers>\d+)(?::(?P<threads>\d+))?")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PIN_ENV = "SIMLAB_WORKER_CPUS"


@dataclass(frozen=True)
class LocalClusterSpec:
    """N worker processes; ``threads``: CPUs each worker is pinned to (None: all of them)."""

    workers: int
    threads: int | None = None


def parse_cluster(text: str) -> LocalClusterSpec:
    """``local:N`` or ``local:N:T``, or a one-line error that says what was expected."""
    match = LOCAL_CLUSTER.fullmatch(text.strip())
    if match is None or int(match["workers"]) < 1 or (match["threads"] is not None and int(match["threads"]) < 1):
        raise SimlabError(
            f"{parameter('cluster', text)}: expected local:N (N worker processes) or local:N:T (T CPUs per "
            f"worker), with N and T positive integers; for a cluster that is already running, give "
            f"{parameter('scheduler')} (its address)"
        )
    threads = int(match["threads"]) if match["threads"] is not None else None
    return LocalClusterSpec(int(match["workers"]), threads)


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def connect(cluster: str | None = None, scheduler: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> Iterator:
    """A Dask ``Client`` for ``cluster`` or ``scheduler`` (None when neither is given)."""
    if cluster and scheduler:
        raise SimlabError(
            f"{parameter('cluster')} and {parameter('scheduler')} exclude each other: start a local cluster or use a running one"
        )
    if not cluster and not scheduler:
        yield None
        return
    spec = parse_cluster(cluster) if cluster else None  # a user mistake fails before Dask starts
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:  # pragma: no cover - dask is a dependency
        raise SimlabError(f"running on a cluster needs dask[distributed] ({error})") from None

    with contextlib.ExitStack() as stack:
        if spec is not None:
            threads = spec.threads or len(available_cpus())
            env = {name: str(threads) for name in THREAD_ENV}
            if spec.threads is not None:
                env[PIN_ENV] = str(spec.threads)
            env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
            stack.enter_context(dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}))
            local = stack.enter_context(
                LocalCluster(
                    n_workers=spec.workers,
                    threads_per_worker=1,  # one population at a time per worker
                    processes=True,
                    dashboard_address=":0",  # no fixed port to collide on
                    env=env,
                    silence_logs=40,  # errors only
                )
            )
            client = stack.enter_context(Client(local))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=timeout))
            except (OSError, TimeoutError, ValueError) as error:
                raise SimlabError(f"{parameter('scheduler', scheduler)}: cannot reach a Dask scheduler there ({error})") from None
        yield client


@dataclass(frozen=True)
class DaskExecutor:
    """Trains populations as tasks of a Dask ``client`` (the executor of
    :func:`simlab.training.cohort.train_cohort`)."""

    client: Any

    def train(self, run, population_ids: Sequence[str], force: bool = False,
              on_done: Callable[[str, int], None] | None = None) -> None:
        train_on_cluster(self.client, run, population_ids, force, on_done)


def train_on_cluster(
    client,
    run,
    population_ids: Sequence[str],
    force: bool = False,
    on_done: Callable[[str, int], None] | None = None,
) -> None:
    """Submit one task per population, log each as it finishes; ``on_done(id, subjects)``."""
    from distributed import as_completed

    run_path = str(Path(run.path).resolve())
    futures = [
        client.submit(train_task, run_path, pop_id, force, key=f"simlab-train-{pop_id}-{time.time_ns()}", pure=False)
        for pop_id in population_ids
    ]
    try:
        for future in as_completed(futures):
            pop_id, subjects, message = future.result()  # a failed task raises its error here
            run.log(message)
            if on_done is not None:
                on_done(pop_id, subjects)
    except BaseException:
        client.cancel(futures)
        raise


def train_task(run_path: str, population_id: str, force: bool) -> tuple[str, int, str]:
    """One population, on a worker: train it and write its shard into the run directory;
    returns its id, its number of subjects and the log line."""
    pin_worker_threads()
    from simlab.protocol import plan_cohort
    from simlab.rundir import RunDirectory
    from simlab.training.accelerators import enable_compilation_cache, release_compiled_programs
    from simlab.training.cohort import train_and_write

    enable_compilation_cache()
    run = RunDirectory(run_path)
    protocol = run.protocol
    (pop,) = [pop for pop in plan_cohort(protocol).populations if pop.id == population_id]
    message = train_and_write(run, protocol, pop, force=force)
    release_compiled_programs()  # a worker trains many populations, of any architecture, in turn
    try:
        from distributed import get_worker

        message += f"; on worker {get_worker().address}"
    except (ImportError, ValueError):
        pass
    return population_id, len(pop.subjects), message


def pin_worker_threads() -> None:
    """Pin this worker thread (and the XLA threads it starts) to its own T CPUs.

    Only for ``local:N:T`` (``SIMLAB_WORKER_CPUS=T``); worker ``i`` of a local cluster takes
    CPUs ``i*T .. i*T+T-1`` (wrapping). Runs before the task's first use of JAX, whose CPU
    thread pool is sized by the CPUs the creating thread may run on.
    """
    threads = os.environ.get(PIN_ENV)
    if not threads or not hasattr(os, "sched_setaffinity"):
        return
    threads = int(threads)
    try:
        from distributed import get_worker

        index = int(get_worker().name)
    except (ImportError, ValueError, TypeError):
        index = 0
    cpus = available_cpus()
    if threads >= len(cpus):
        return
    os.sched_setaffinity(0, {cpus[(index * threads + k) % len(cpus)] for k in range(threads)})
