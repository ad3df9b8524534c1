"""Replicates of a population: vmapped in one program, or one by one through one program?

Times ``train_population`` on quickstart populations with ``vectorize="vmap"`` and
``"loop"`` in the same process (compile included, as a user pays it), and prints the ratio.
``simlab``'s ``vectorize: auto`` follows the winner per backend.

    python benchmarks/bench_vectorize.py [--steps 1500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.specs.subjects import Conv1DSpec, MLPSpec, MNIST1DSpec
from simlab.subjects.tasks import load_task
from simlab.training.population import train_population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()

    task = load_task(MNIST1DSpec())
    sessions = np.round(np.linspace(0, args.steps, 21)).astype(int)
    rows = []
    print(f"backend {jax.default_backend()}, {platform.processor() or platform.machine()}, steps {args.steps}")
    print(f"{'population':<40s} {'vmap s':>8s} {'loop s':>8s} {'loop/vmap':>9s}")
    for arch_name, spec in (("mlp", MLPSpec()), ("conv1d", Conv1DSpec())):
        for rule_name in ("sgdm", "information_alignment"):
            rule = make_rule(rule_name)
            network = Network(spec, task.n_classes, rule.credit)
            for batch_size in (32, 128):
                times = {}
                for mode in ("vmap", "loop"):
                    started = time.perf_counter()
                    train_population(
                        network, rule, task, batch_size, args.steps, sessions, list(range(args.replicates)), mode
                    )
                    times[mode] = time.perf_counter() - started
                name = f"{arch_name}-{rule_name}-b{batch_size}"
                rows.append({"population": name, **times})
                print(f"{name:<40s} {times['vmap']:8.2f} {times['loop']:8.2f} {times['loop'] / times['vmap']:9.2f}")
    total = {mode: sum(row[mode] for row in rows) for mode in ("vmap", "loop")}
    print(f"{'total':<40s} {total['vmap']:8.2f} {total['loop']:8.2f} {total['loop'] / total['vmap']:9.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"backend": jax.default_backend(), "steps": args.steps, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
