"""Re-recording a trained cohort must be cheap: robustness studies record it dozens of times.

Trains the quickstart cohort once (timed), then records it with several rigs (each timed,
compilation included, as a user pays it in a fresh ``simlab record``) and prints each rig's
cost as a fraction of the training time. Target (recording issue): at most 1/5.

    python benchmarks/bench_rerecord.py [--protocol protocols/quickstart.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax

from simlab.protocol import load_protocol, plan_cohort
from simlab.recording.record import record_cohort
from simlab.specs.rigs import RigSpec
from simlab.pipeline import prepare_run_directory, write_stimuli
from simlab.training.cohort import subject_table, train_cohort, write_subject_table

RIGS = {
    "synapse, all synapses": RigSpec(type="synapse"),
    "synapse, 100 synapses, lognormal 0.3": RigSpec(type="synapse", units=100, noise_model="lognormal", noise=0.3),
    "electrophysiology, all units": RigSpec(type="electrophysiology"),
    "electrophysiology, 300 units, poisson": RigSpec(type="electrophysiology", units=300, noise_model="poisson"),
    "electrophysiology, 20 units acute, gaussian 0.5": RigSpec(
        type="electrophysiology", units=20, sampling="acute", noise=0.5
    ),
    "paired, all units": RigSpec(type="paired"),
    "paired, 0.5 of units, gaussian 0.1": RigSpec(type="paired", units=0.5, noise=0.1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="protocols/quickstart.yaml")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()

    protocol = load_protocol(args.protocol)
    plan = plan_cohort(protocol)
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run_directory(protocol, Path(tmp) / protocol.name, force=True)
        write_stimuli(run, protocol, force=True)
        started = time.perf_counter()
        train_cohort(run, protocol, plan, progress=False)
        training = time.perf_counter() - started
        write_subject_table(subject_table(run, protocol, plan), run.subjects_file, force=True)

        print(f"{protocol.name}: {len(plan)} subjects, backend {jax.default_backend()}, {platform.machine()}")
        print(f"training: {training:.1f} s")
        print(f"{'rig':<48s} {'seconds':>8s} {'/ training':>10s}")
        rows = []
        for name, spec in RIGS.items():
            started = time.perf_counter()
            record_cohort(run, name.split(",")[0], spec, progress=False, echo=lambda *a: None)
            seconds = time.perf_counter() - started
            rows.append({"rig": name, "seconds": seconds, "ratio": seconds / training})
            print(f"{name:<48s} {seconds:8.1f} {seconds / training:10.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"protocol": protocol.name, "training_s": training, "rigs": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
