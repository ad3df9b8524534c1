"""Time to an answer, measured in one run: cold vs warm starts, stages, scaling, PyTorch.

    python benchmarks/run_all.py [--scaling] [--nayebi2020] [--torch] [--markdown docs/benchmarks.md]

Every number comes from ``simlab run`` itself, run as a user runs it (a fresh process, the
command line), reading the stage times and peak memory it logs (``stage train: 64.8 s; peak
memory 1402 MiB`` in the run's log.txt) and its compile summary. Prints, with machine, load
and versions:

* the quickstart cold (empty compilation cache) and warm (the cache the cold run filled),
  per stage and end to end, and their ratio;
* the analyses' share of the end-to-end time;
* ``--nayebi2020``: the same for protocols/nayebi2020.yaml, cold (long: tens of minutes);
* ``--scaling``: the quickstart design at several subject counts (replicates) and step
  counts, warm, with each stage's fitted exponent (time ~ subjects^a, steps^b);
* ``--torch``: the quickstart's MLP populations trained by simlab (including compilation,
  cold) and by an idiomatic PyTorch eager loop (benchmarks/bench_cohort.py's), when PyTorch
  is installed.

``--markdown FILE`` writes the tables there too (docs/benchmarks.md is this command's output).
No number here is asserted by a test: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"stage (?P<name>[^:]+): (?P<seconds>[0-9.]+) s(?:; peak memory (?P<mib>[0-9.]+) MiB)?")
COMPILE = re.compile(r"train: \d+ population\(s\) in [0-9.]+ s; .*?: (?P<programs>\d+) programs?, (?P<compile>[0-9.]+) s compiling")
SCALING_REPLICATES = (1, 2, 3, 6, 12)  # x 16 populations: 16 .. 192 subjects
SCALING_STEPS = (500, 1500, 4500)


def machine() -> dict:
    import jax
    import sklearn

    import simlab

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "load_before": os.getloadavg()[0], "python": platform.python_version(),
            "simlab": simlab.__version__, "jax": jax.__version__, "backend": jax.default_backend(),
            "scikit-learn": sklearn.__version__}


def run_protocol(protocol: Path, out: Path, cache: Path) -> dict:
    """``simlab run`` in a fresh process against a compilation cache; its logged stages."""
    env = {**os.environ, "SIMLAB_COMPILATION_CACHE": str(cache)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simlab", "run", str(protocol), "--out", str(out), "--quiet"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    log = (out / "log.txt").read_text()
    stages = {m["name"]: float(m["seconds"]) for m in STAGE.finditer(log)}
    peaks = {m["name"]: float(m["mib"]) for m in STAGE.finditer(log) if m["mib"]}
    compiled = COMPILE.search(log)
    analyses = sum(v for k, v in stages.items() if k.startswith("analysis "))
    return {"wall_s": wall, "stages": stages, "peak_mib": peaks, "analyses_s": analyses,
            "programs": int(compiled["programs"]) if compiled else None,
            "compile_s": float(compiled["compile"]) if compiled else None}


def cold_and_warm(protocol: Path, work: Path, name: str) -> dict:
    cache = work / f"{name}-cache"
    cold = run_protocol(protocol, work / f"{name}-cold", cache)
    warm = run_protocol(protocol, work / f"{name}-warm", cache)
    return {"cold": cold, "warm": warm, "ratio": cold["wall_s"] / warm["wall_s"]}


def variant(base: Path, work: Path, **changes) -> Path:
    """The protocol at ``base`` with cohort/training settings changed, written under ``work``."""
    spec = yaml.safe_load(base.read_text())
    if "replicates" in changes:
        spec["cohort"]["replicates"] = changes["replicates"]
    if "steps" in changes:
        spec["training"]["steps"] = changes["steps"]
    spec["name"] = f"{spec['name']}-" + "-".join(f"{k}{v}" for k, v in changes.items())
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def scaling(base: Path, work: Path, cache: Path) -> dict:
    """Warm runs over subjects (replicates x 16 populations, the base's steps) and steps (the
    base's replicates). ``cache`` holds the base's programs (its warm run filled it); those of
    the other step counts (a scan's length is part of its program) are compiled first."""
    spec = yaml.safe_load(base.read_text())
    base_steps, base_replicates = spec["training"]["steps"], spec["cohort"]["replicates"]
    for steps in SCALING_STEPS:
        if steps != base_steps:
            run_protocol(variant(base, work, replicates=1, steps=steps), work / f"scaling-fill{steps}", cache)
    by_subjects = {}
    for replicates in SCALING_REPLICATES:
        path = variant(base, work, replicates=replicates)
        by_subjects[16 * replicates] = run_protocol(path, work / path.stem, cache)
    by_steps = {base_steps: by_subjects.get(16 * base_replicates)}
    for steps in SCALING_STEPS:
        if by_steps.get(steps) is None:
            path = variant(base, work, steps=steps)
            by_steps[steps] = run_protocol(path, work / path.stem, cache)
    return {"subjects": by_subjects, "steps": dict(sorted(by_steps.items()))}


def exponent(sizes, seconds) -> float:
    """The slope of log(seconds) on log(size): time ~ size^exponent."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def torch_ratio(work: Path, cache: Path) -> dict | None:
    """simlab (cold: compilation included, ``simlab run``'s training stage) vs PyTorch eager on
    the quickstart's MLP populations (sgdm, batch sizes 32 and 128, 3 replicates, 1500 steps)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_cohort import torch_eager

    from simlab.specs.subjects import MLPSpec, MNIST1DSpec
    from simlab.subjects.tasks import load_task

    spec = yaml.safe_load((ROOT / "protocols" / "quickstart.yaml").read_text())
    spec.update(name="bench-torch")
    spec["cohort"].update(architecture=["mlp"], learning_rule=["sgdm"])
    spec["analyses"] = {}
    protocol = work / "bench-torch.yaml"
    protocol.write_text(yaml.safe_dump(spec, sort_keys=False))
    simlab_s = run_protocol(protocol, work / "bench-torch", cache)["stages"]["train"]
    steps, replicates = spec["training"]["steps"], spec["cohort"]["replicates"]
    sessions = [round(steps * k / (spec["recording"]["sessions"] - 1)) for k in range(spec["recording"]["sessions"])]
    task = load_task(MNIST1DSpec())
    torch_s = 0.0
    for batch_size in spec["cohort"]["batch_size"]:
        seconds, _ = torch_eager(MLPSpec(), task, batch_size, steps, sessions, list(range(replicates)))
        torch_s += seconds
    return {"simlab_s": simlab_s, "torch_s": torch_s, "speedup": torch_s / simlab_s}


def tables(results: dict) -> str:
    """The results as markdown."""
    m = results["machine"]
    lines = [
        "# Benchmarks: time to an answer",
        "",
        "Written by `python benchmarks/run_all.py --scaling --torch --markdown docs/benchmarks.md` "
        "(what each number is: the script's docstring; [scaling.md](scaling.md) says what simlab does "
        "about compilation).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, load {m['load_before']:.1f} before and {m['load_after']:.1f} after; "
        f"Python {m['python']}, simlab {m['simlab']}, JAX {m['jax']} ({m['backend']}), scikit-learn {m['scikit-learn']}. "
        "All ratios below come from this one run.",
        "",
    ]
    for name in ("quickstart", "nayebi2020"):
        if name not in results:
            continue
        r = results[name]
        stages = list(r["cold"]["stages"])
        lines += [f"### {name}: cold (empty compilation cache) vs warm", "",
                  "| stage | cold (s) | warm (s) | cold / warm | peak memory (MiB) |", "|---|---|---|---|---|"]
        for stage in stages:
            cold, warm = r["cold"]["stages"][stage], r["warm"]["stages"].get(stage, float("nan"))
            lines.append(f"| {stage} | {cold:.1f} | {warm:.1f} | {cold / warm:.2f} | {r['cold']['peak_mib'].get(stage, float('nan')):.0f} |")
        cold, warm = r["cold"], r["warm"]
        lines += [
            f"| **end to end** (`simlab run`) | {cold['wall_s']:.1f} | {warm['wall_s']:.1f} | **{r['ratio']:.2f}** | |",
            "",
            f"Compilation: cold {cold['programs']} programs, {cold['compile_s']:.1f} s of XLA compile; warm "
            f"{warm['compile_s']:.1f} s (programs loaded from the persistent cache). Analyses: "
            f"{cold['analyses_s'] / cold['wall_s']:.0%} of the cold end-to-end time, "
            f"{warm['analyses_s'] / warm['wall_s']:.0%} of the warm.",
            "",
        ]
    if "scaling" in results:
        s = results["scaling"]
        for axis, label in (("subjects", "subjects (the quickstart's steps)"), ("steps", "steps (the quickstart's 48 subjects)")):
            sizes = sorted(s[axis], key=float)
            stages = [k for k in s[axis][sizes[0]]["stages"]]
            lines += [f"### Scaling with {label}, warm", "",
                      "| " + axis + " | " + " | ".join(stages) + " | end to end |", "|---" * (len(stages) + 2) + "|"]
            for size in sizes:
                row = s[axis][size]
                lines.append(f"| {size} | " + " | ".join(f"{row['stages'][k]:.1f}" for k in stages) + f" | {row['wall_s']:.1f} |")
            fitted = [exponent([float(z) for z in sizes], [s[axis][z]["stages"][k] for z in sizes]) for k in stages]
            whole = exponent([float(z) for z in sizes], [s[axis][z]["wall_s"] for z in sizes])
            lines += ["| **exponent** | " + " | ".join(f"**{e:.2f}**" for e in fitted) + f" | **{whole:.2f}** |", ""]
    if results.get("torch"):
        t = results["torch"]
        lines += ["### simlab (including compilation) vs PyTorch eager", "",
                  f"The quickstart's MLP sgdm populations (batch 32 and 128, 3 replicates, 1500 steps, 21 snapshots): "
                  f"simlab's cold training stage {t['simlab_s']:.1f} s (compile, train, evaluate, write shards), "
                  f"PyTorch eager {t['torch_s']:.1f} s (training loop only): **simlab {t['speedup']:.2f}x**.", ""]
    elif "torch" in results:
        lines += ["PyTorch is not installed: the comparison was not run.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scaling", action="store_true", help="the quickstart design at 16-192 subjects and 500-4500 steps")
    parser.add_argument("--nayebi2020", action="store_true", help="also protocols/nayebi2020.yaml, cold and warm (long)")
    parser.add_argument("--torch", action="store_true", help="simlab vs PyTorch eager on the quickstart's MLPs")
    parser.add_argument("--markdown", default="", help="also write the tables to this file")
    parser.add_argument("--json", default="", help="also write the raw results here")
    parser.add_argument("--work", default="", help="scratch directory (default: a temporary one)")
    parser.add_argument("--from-json", default="", help="print (and --markdown) the tables of an earlier --json, running nothing")
    args = parser.parse_args()
    if args.from_json:
        text = tables(json.loads(Path(args.from_json).read_text()))
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {"machine": machine()}
        quickstart = ROOT / "protocols" / "quickstart.yaml"
        results["quickstart"] = cold_and_warm(quickstart, work, "quickstart")
        if args.nayebi2020:
            results["nayebi2020"] = cold_and_warm(ROOT / "protocols" / "nayebi2020.yaml", work, "nayebi2020")
        if args.scaling:
            results["scaling"] = scaling(quickstart, work, work / "quickstart-cache")
        if args.torch:
            results["torch"] = torch_ratio(work, work / "torch-cache")
        results["machine"]["load_after"] = os.getloadavg()[0]
    text = tables(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
