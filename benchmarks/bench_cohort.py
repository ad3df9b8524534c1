"""Cohort training at the speed of the hardware: throughput against the machine's matmul roofline.

Measures, on the machine it runs on, in one run:

* the roofline: float32 matrix-multiply peak of a large square matmul through JAX (GFLOP/s);
* for MLP subjects of width 64 and 256 and for the conv subject (mnist1d, SGD with momentum):
  cohort training throughput in subject-steps/s and achieved GFLOP/s from counted FLOPs
  (forward, weight gradient and input gradient of every dense/conv layer; no input gradient
  for the first layer), as a share of the roofline, both steady state (compiled) and for the
  whole stage as ``simlab run`` does it (compile, train, evaluate, write shard, record with the
  three default rigs);
* the share of that wall time spent on snapshots (in-scan session writes plus the shard file)
  and on recording;
* a profile of each step: the same layers' matrix products alone, in a compiled scan (what the
  matmuls of these shapes reach on this machine), against the whole training step;
* when PyTorch is installed, the same MLP subjects trained by an idiomatic PyTorch eager loop
  (``zero_grad``, ``backward``, ``step``; random batches; parameter copies at each session),
  and the ratio simlab / PyTorch.

    python benchmarks/bench_cohort.py [--replicates 4] [--steps 1500] [--json bench_cohort.json]

``--subjects mlp64,mlp256,conv`` picks subjects; ``--vectorize loop|vmap`` overrides the
backend's choice (GPU/TPU hosts: run both to compare vmapped and per-subject throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from simlab.protocol import load_protocol, plan_cohort
from simlab.rules.rules import make_rule
from simlab.pipeline import prepare_run_directory, record_rigs, write_stimuli
from simlab.subjects.architectures import Network
from simlab.specs.subjects import Conv1DSpec, MLPSpec, MNIST1DSpec
from simlab.subjects.tasks import load_task
from simlab.training.cohort import subject_table, train_cohort, write_subject_table
from simlab.training.population import choose_vectorize, make_trainer

SUBJECTS = {
    "mlp64": MLPSpec(hidden=[64, 64]),
    "mlp256": MLPSpec(hidden=[256, 256]),
    "conv": Conv1DSpec(),
}
SESSIONS = 21


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def n_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - started)
    return min(times)


# --------------------------------------------------------------------------- roofline


def matmul_peak(sizes=(512, 1024, 2048), repeats: int = 10) -> float:
    """The best GFLOP/s of n x n x n float32 matmuls over ``sizes`` (compiled, warm)."""
    return max(matmul_rate(n, repeats) for n in sizes)


def matmul_rate(n: int, repeats: int) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    return 2 * n**3 / best_time(lambda: matmul(a, b), repeats) / 1e9


# --------------------------------------------------------------------------- counted FLOPs


def layer_products(network: Network, input_shape, batch_size: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of each layer's forward matrix product for one batch (conv: patches @ kernel)."""
    shapes = network.site_shapes(input_shape)
    products = []
    for site in network.plan:
        inp, out = shapes[site.name]
        if site.kind == "conv":
            positions, channels_out = out[0], out[-1]
            products.append((batch_size * positions, site.kernel_size * inp[-1], channels_out))
        else:
            products.append((batch_size, int(np.prod(inp)), out[-1]))
    return products


def step_flops(products) -> int:
    """Forward, weight gradient and (except the first layer) input gradient: 2mkn each."""
    return sum((4 if i == 0 else 6) * m * k * n for i, (m, k, n) in enumerate(products))


def matmul_only_rate(products, steps: int) -> float:
    """GFLOP/s of just these layers' matrix products (fwd, dW, dx), in a compiled scan."""
    keys = jax.random.split(jax.random.key(2), len(products))
    xs = [jax.random.normal(k, (m, kk), jnp.float32) for k, (m, kk, n) in zip(keys, products)]
    ws = [jax.random.normal(k, (kk, n), jnp.float32) * 0.01 for k, (m, kk, n) in zip(keys, products)]

    def body(ws, _):
        new = []
        for i, (x, w) in enumerate(zip(xs, ws)):
            y = x @ w  # forward
            updated = w - 1e-9 * (x.T @ y)  # weight gradient (y standing in for the error)
            if i:
                updated = updated + 1e-12 * jnp.mean(y @ w.T)  # input gradient
            new.append(updated)
        return new, None

    run = jax.jit(lambda ws: jax.lax.scan(body, ws, None, length=steps)[0])
    jax.block_until_ready(run(ws))
    seconds = best_time(lambda: run(ws), 3)
    flops = step_flops(products) * steps
    return flops / seconds / 1e9


# --------------------------------------------------------------------------- simlab


def steady_training(network, rule, task, batch_size, steps, sessions, seeds, vectorize) -> float:
    """Seconds to train the replicates with a compiled trainer (compile excluded)."""
    train = make_trainer(network, rule, batch_size, steps, sessions)
    keys = jnp.stack([jax.random.key(seed) for seed in seeds])
    x, y = jnp.asarray(task.x_train), jnp.asarray(task.y_train)
    if vectorize == "vmap":
        compiled = jax.jit(jax.vmap(train, in_axes=(0, None, None))).lower(keys, x, y).compile()
        return best_time(lambda: compiled(keys, x, y), 2)
    compiled = jax.jit(train).lower(keys[0], x, y).compile()
    return best_time(lambda: [compiled(key, x, y) for key in keys], 2)


PROTOCOL = """\
name: bench-{name}
seed: 0
cohort:
  architecture: [{name}]
  task: [mnist1d]
  learning_rule: [sgdm]
  batch_size: [{batch_size}]
  replicates: {replicates}
architectures:
  {name}: {architecture}
training:
  steps: {steps}
  vectorize: {vectorize}
recording:
  sessions: {sessions}
  stimuli: 256
"""


def whole_stage(name, spec, batch_size, steps, replicates, vectorize, workdir: Path) -> dict:
    """Wall seconds of ``simlab run``'s training stage (compile, train, evaluate, write the
    shard) and of recording with the three default rigs, for one population."""
    architecture = json.dumps(spec.model_dump())
    path = workdir / f"{name}.yaml"
    path.write_text(
        PROTOCOL.format(
            name=name, architecture=architecture, batch_size=batch_size, steps=steps,
            replicates=replicates, vectorize=vectorize, sessions=SESSIONS,
        )
    )
    protocol = load_protocol(path)
    plan = plan_cohort(protocol)
    run = prepare_run_directory(protocol, workdir / name, force=True)
    write_stimuli(run, protocol, force=True)
    started = time.perf_counter()
    train_cohort(run, protocol, plan, force=True, progress=False)
    trained = time.perf_counter()
    write_subject_table(subject_table(run, protocol, plan), run.subjects_file, force=True)
    table = time.perf_counter()
    (run.path / "recordings").mkdir(exist_ok=True)
    record_rigs(run, protocol, force=True, progress=False, echo=lambda *a, **k: None)
    recorded = time.perf_counter()
    shard = run.shard(plan.populations[0].id)
    with np.load(shard) as data:  # the shard file: time to write it again
        arrays = {k: data[k] for k in data.files}
    write_started = time.perf_counter()
    with open(workdir / "shard-copy.npz", "wb") as handle:
        np.savez(handle, **arrays)
    shard_write = time.perf_counter() - write_started
    return {
        "train_s": trained - started,
        "table_s": table - trained,
        "record_s": recorded - table,
        "shard_write_s": shard_write,
        "shard_mb": shard.stat().st_size / 1e6,
    }


# --------------------------------------------------------------------------- PyTorch


def torch_eager(spec: MLPSpec, task, batch_size: int, steps: int, sessions, seeds) -> tuple[float, int] | None:
    """(seconds, threads) of an idiomatic PyTorch eager loop training the same MLP subjects.

    Runs in a fresh process (no JAX threads around), with the faster of 1 thread and all
    CPUs (chosen on a short trial run); None when PyTorch is not installed.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    job = {"hidden": list(spec.hidden), "batch_size": batch_size, "steps": steps,
           "sessions": [int(s) for s in sessions], "seeds": list(seeds)}
    trial = {**job, "steps": min(steps, 300), "seeds": seeds[:1]}
    timings = {threads: _torch_process({**trial, "threads": threads}) for threads in sorted({1, n_cpus()})}
    threads = min(timings, key=timings.get)
    return _torch_process({**job, "threads": threads}), threads


def _torch_process(job: dict) -> float:
    """One PyTorch run in a fresh interpreter that imports torch and numpy only (loading JAX
    first slows PyTorch's CPU kernels several-fold in the same process)."""
    import subprocess
    import sys

    task = load_task(MNIST1DSpec())
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "task.npz"
        np.savez(data, x=task.x_train.reshape(len(task.x_train), -1), y=task.y_train.astype(np.int64))
        job = {**job, "data": str(data), "n_classes": task.n_classes}
        result = subprocess.run(
            [sys.executable, "-c", TORCH_JOB, json.dumps(job)], capture_output=True, text=True, check=True
        )
    return float(result.stdout.strip().splitlines()[-1])


TORCH_JOB = """
import json, sys, time
import numpy as np
import torch

job = json.loads(sys.argv[1])
torch.set_num_threads(job["threads"])
with np.load(job["data"]) as data:
    x_all, y_all = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
session_steps = set(job["sessions"])
started = time.perf_counter()
for seed in job["seeds"]:
    torch.manual_seed(seed)
    layers, width_in = [], x_all.shape[1]
    for width in job["hidden"]:
        layers += [torch.nn.Linear(width_in, width), torch.nn.ReLU()]
        width_in = width
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width_in, job["n_classes"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    losses, snapshots = [], []
    for step in range(1, job["steps"] + 1):
        batch = torch.randint(0, len(x_all), (job["batch_size"],))
        loss = torch.nn.functional.cross_entropy(model(x_all[batch]), y_all[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in session_steps:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
print(time.perf_counter() - started)
"""


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--subjects", default=",".join(SUBJECTS), help="comma-separated: " + ", ".join(SUBJECTS))
    parser.add_argument("--vectorize", default="auto", choices=["auto", "loop", "vmap"])
    parser.add_argument("--matmul-sizes", default="512,1024,2048", help="square matmul sizes for the roofline")
    parser.add_argument("--json", default="bench_cohort.json", help="write the results here ('' for none)")
    args = parser.parse_args()

    vectorize = choose_vectorize(args.vectorize)
    task = load_task(MNIST1DSpec())
    sessions = np.round(np.linspace(0, args.steps, SESSIONS)).astype(int)
    seeds = list(range(args.replicates))
    machine = f"{cpu_name()}, {n_cpus()} CPUs, backend {jax.default_backend()} ({len(jax.devices())} device(s))"
    print(f"machine: {machine}")
    sizes = [int(n) for n in args.matmul_sizes.split(",")]
    peak = matmul_peak(sizes)
    print(f"roofline: best float32 matmul through JAX over n = {args.matmul_sizes}: {peak:.1f} GFLOP/s")
    print(
        f"cohort: {args.replicates} replicates x {args.steps} steps, batch {args.batch_size}, sgdm on mnist1d, "
        f"{SESSIONS} sessions, vectorize={vectorize}\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.subjects.split(","):
            spec = SUBJECTS[name]
            rule = make_rule("sgdm")
            network = Network(spec, task.n_classes, rule.credit)
            products = layer_products(network, task.x_train.shape[1:], args.batch_size)
            flops = step_flops(products) * args.steps * args.replicates
            subject_steps = args.steps * args.replicates
            steady = steady_training(network, rule, task, args.batch_size, args.steps, sessions, seeds, vectorize)
            bare = steady_training(
                network, rule, task, args.batch_size, args.steps, [0, args.steps], seeds, vectorize
            )
            stage = whole_stage(name, spec, args.batch_size, args.steps, args.replicates, vectorize, Path(tmp))
            wall = stage["train_s"] + stage["table_s"] + stage["record_s"]
            snapshots = max(0.0, steady - bare) + stage["shard_write_s"]
            matmul_rate = matmul_only_rate(products, args.steps)
            torch_run = torch_eager(spec, task, args.batch_size, args.steps, sessions, seeds) if name.startswith("mlp") else None
            torch_s, torch_threads = torch_run if torch_run else (None, None)
            row = {
                "subject": name,
                "architecture": spec.model_dump(),
                "gflop_per_subject_step": step_flops(products) / 1e9,
                "steady_s": steady,
                "steady_without_snapshots_s": bare,
                "subject_steps_per_s": subject_steps / steady,
                "gflops": flops / steady / 1e9,
                "roofline_share": flops / steady / 1e9 / peak,
                "end_to_end_s": wall,
                "end_to_end_gflops": flops / wall / 1e9,
                "end_to_end_roofline_share": flops / wall / 1e9 / peak,
                "snapshot_share": snapshots / wall,
                "recording_share": stage["record_s"] / wall,
                "matmul_only_gflops": matmul_rate,
                **stage,
                "torch_s": torch_s,
                "torch_threads": torch_threads,
                "torch_subject_steps_per_s": subject_steps / torch_s if torch_s else None,
                "simlab_over_torch": torch_s / steady if torch_s else None,
                "simlab_over_torch_end_to_end": torch_s / stage["train_s"] if torch_s else None,
            }
            rows.append(row)
            print_row(row, header=len(rows) == 1)
    print_notes(rows, peak)
    if args.json:
        result = {
            "machine": machine,
            "matmul_peak_gflops": peak,
            "matmul_sizes": sizes,
            "steps": args.steps,
            "replicates": args.replicates,
            "batch_size": args.batch_size,
            "vectorize": vectorize,
            "sessions": SESSIONS,
            "jax": jax.__version__,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")


COLUMNS = (
    ("subject", "{:<7s}", "subject"),
    ("subj-steps/s", "{:>12.0f}", "subject_steps_per_s"),
    ("GFLOP/s", "{:>8.1f}", "gflops"),
    ("roofline", "{:>8.0%}", "roofline_share"),
    ("e2e GFLOP/s", "{:>11.1f}", "end_to_end_gflops"),
    ("e2e roofline", "{:>12.0%}", "end_to_end_roofline_share"),
    ("snapshots", "{:>9.1%}", "snapshot_share"),
    ("recording", "{:>9.1%}", "recording_share"),
    ("torch steps/s", "{:>13.0f}", "torch_subject_steps_per_s"),
    ("simlab/torch", "{:>12.1f}", "simlab_over_torch"),
)


def print_row(row: dict, header: bool) -> None:
    if header:
        print("  ".join(f"{title:>{len(fmt.format(row[key])) if row[key] is not None else len(title)}s}"
                        if i else f"{title:<7s}" for i, (title, fmt, key) in enumerate(COLUMNS)))
    cells = []
    for title, fmt, key in COLUMNS:
        value = row[key]
        cells.append(fmt.format(value) if value is not None else f"{'-':>{len(title)}s}")
    print("  ".join(cells))


def print_notes(rows, peak) -> None:
    print("\nprofile (steady state, per subject-step):")
    for row in rows:
        per_step_us = 1e6 / row["subject_steps_per_s"]
        matmul_us = row["gflop_per_subject_step"] / row["matmul_only_gflops"] * 1e6
        print(
            f"  {row['subject']:<7s} {per_step_us:7.1f} us/step, {row['gflop_per_subject_step'] * 1e3:.2f} MFLOP; "
            f"its matmuls alone: {row['matmul_only_gflops']:.1f} GFLOP/s ({row['matmul_only_gflops'] / peak:.0%} of roofline), "
            f"{matmul_us:.1f} us/step -> the rest of the step (optimizer, activations, batch gather, "
            f"snapshots, loop) {max(0.0, per_step_us - matmul_us):.1f} us; compile+eval+shard in the "
            f"stage: {row['train_s'] - row['steady_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
