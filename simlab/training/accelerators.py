"""Using the devices of one host: population sharding, memory-sized chunks, compilation cache.

On a host with several devices (GPUs, TPU cores), the replicates of a vmapped population are
sharded along the population axis, one slice per device, with ``jax.sharding``; the training
split is replicated. A population too large for device memory runs in chunks, each a multiple
of the device count. Compiled programs go to JAX's persistent compilation cache, so a rerun
(or another worker of a cluster sharing the cache directory) does not compile them again.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

CACHE_ENV = "SIMLAB_COMPILATION_CACHE"
MEMORY_FRACTION = 0.5  # of a device's memory, for one chunk of a population


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "simlab" / "jax"


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path``.

    Default: ``$SIMLAB_COMPILATION_CACHE``, else ``~/.cache/simlab/jax``; the value ``off``
    disables it. Returns the directory in use, or None.
    """
    if path is None:
        path = os.environ.get(CACHE_ENV) or default_cache_dir()
    if str(path) == "off":
        return None
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time rather than fail
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


def training_compiler_options() -> dict:
    """XLA options for training programs on the default backend.

    On CPU, LLVM's -O1 in place of the default -O2: measured on this project's networks
    (JAX 0.10.2, 2-core EPYC), it compiles a training program 20-45% faster (quickstart MLP
    and conv1d: 1.5-3.2 s -> 1.0-2.7 s; resnet18: 15-20 s -> 9-13 s) at the same steady-state
    speed within noise, with bitwise the same results on the quickstart's networks (rounding
    differences of ~1e-7 on knet). A run of small networks spends more time compiling than
    training, so this is time to the answer. Other backends keep their defaults.
    """
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else {}


def release_compiled_programs() -> None:
    """Let go of the compiled programs JAX keeps in this process (the persistent cache on disk
    stays, so a program needed again is loaded, not recompiled).

    Call it between groups of work that share no program (another architecture or task). Each
    XLA CPU program stays mapped in the process: a cohort of hundreds of populations (the
    zoo) reached the kernel's limit of memory maps (65530) and died with "LLVM ERROR: Unable to
    allocate section memory" while building its subject table.
    """
    jax.clear_caches()


# JAX's monitoring events (jax/_src/dispatch.py, compiler.py, compilation_cache.py)
_TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_CACHE_WRITE_EVENT = "/jax/compilation_cache/cache_misses"  # a compiled program written to the cache


@dataclass
class CompileMeter:
    """What XLA compilation cost inside a ``with`` block: the programs built (compiled, or loaded
    from the persistent cache), the seconds spent building them and tracing/lowering Python to
    them, and the persistent cache's hits: those of the thread that entered it, or, with
    ``all_threads``, of every thread (a population compiled ahead in the background).

    ``simlab run`` logs one per population and one for the whole training stage: on a CPU, the
    compilation of a small network's training program can cost more than its training.
    """

    all_threads: bool = False
    programs: int = 0
    compile_seconds: float = 0.0
    trace_seconds: float = 0.0
    cache_hits: int = 0
    cache_writes: int = 0
    wall_seconds: float = 0.0
    _started: float = field(default=0.0, repr=False)
    _thread: int = field(default=0, repr=False)

    def _counts(self) -> bool:
        return self.all_threads or threading.get_ident() == self._thread

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        if not self._counts():
            return
        if event == _COMPILE_EVENT:
            self.programs += 1
            self.compile_seconds += duration
        elif event in _TRACE_EVENTS:
            self.trace_seconds += duration

    def _on_event(self, event: str, **kwargs) -> None:
        if not self._counts():
            return
        if event == _CACHE_HIT_EVENT:
            self.cache_hits += 1
        elif event == _CACHE_WRITE_EVENT:
            self.cache_writes += 1

    def __enter__(self) -> "CompileMeter":
        self._thread = threading.get_ident()
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_seconds += time.perf_counter() - self._started
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def summary(self) -> str:
        """e.g. "3 programs, 4.2 s compiling + 0.8 s tracing (persistent cache: 1 hit, 2 written)"."""
        plural = "program" if self.programs == 1 else "programs"
        return (
            f"{self.programs} {plural}, {self.compile_seconds:.1f} s compiling + {self.trace_seconds:.1f} s tracing "
            f"(persistent cache: {self.cache_hits} hit{'' if self.cache_hits == 1 else 's'}, {self.cache_writes} written)"
        )


def tree_bytes(tree) -> int:
    return sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def device_memory(device) -> int | None:
    """Bytes a device may allocate, where the backend says (GPU, TPU); None on CPU."""
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement it
        return None
    return (stats or {}).get("bytes_limit")


def chunk_size(n_subjects: int, subject_bytes: int, devices: list, fraction: float = MEMORY_FRACTION) -> int:
    """Subjects per chunk: as many as fit ``fraction`` of the smallest device's memory (all
    devices together), a multiple of the device count; all of them where memory is unknown."""
    limits = [device_memory(device) for device in devices]
    if any(limit is None for limit in limits) or subject_bytes <= 0:
        return n_subjects
    per_device = max(1, int(min(limits) * fraction) // subject_bytes)
    return min(n_subjects, per_device * len(devices))


def run_vmapped(train: Callable, keys: jax.Array, x_train, y_train, devices: list | None = None, per_subject=None) -> Any:
    """``jax.vmap(train)`` over ``keys`` (and the leading axis of ``per_subject``, a pytree
    passed as ``train``'s fourth argument: each subject's rates), sharded along the population
    axis over ``devices`` (default: all local devices of the default backend) and chunked to
    fit their memory."""
    devices = list(devices if devices is not None else jax.local_devices())
    n = keys.shape[0]
    vmapped = jax.jit(jax.vmap(train, in_axes=(0, None, None, 0)), compiler_options=training_compiler_options())
    first = jax.tree.map(lambda a: a[0], per_subject)
    snapshot_shape = jax.eval_shape(lambda k: train(k, x_train, y_train, first), keys[0])
    subject_bytes = 4 * tree_bytes(snapshot_shape)  # snapshots, optimizer state, activations: a margin
    size = chunk_size(n, subject_bytes, devices)
    outputs = []
    for start in range(0, n, size):
        chunk = (keys[start : start + size], jax.tree.map(lambda a: a[start : start + size], per_subject))
        if len(devices) > 1:
            chunk, x, y = shard_population(chunk, x_train, y_train, devices)
        else:
            x, y = x_train, y_train
        out = vmapped(chunk[0], x, y, chunk[1])
        outputs.append(jax.tree.map(lambda a: a[: min(size, n - start)], out))
    if len(outputs) == 1:
        return outputs[0]
    return jax.tree.map(lambda *parts: jnp.concatenate([jax.device_get(p) for p in parts]), *outputs)


def shard_population(per_subject, x_train, y_train, devices: list):
    """Pad ``per_subject`` (keys, rates: arrays with a leading subject axis) to a multiple of
    the device count (repeating the last subject; the padding's results are dropped) and lay
    them out along a ``population`` mesh axis; replicate data."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n = jax.tree.leaves(per_subject)[0].shape[0]
    pad = -n % len(devices)
    if pad:
        per_subject = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), per_subject)
    mesh = Mesh(np.array(devices), ("population",))
    per_subject = jax.device_put(per_subject, NamedSharding(mesh, PartitionSpec("population")))
    replicated = NamedSharding(mesh, PartitionSpec())
    return per_subject, jax.device_put(x_train, replicated), jax.device_put(y_train, replicated)
