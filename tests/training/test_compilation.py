"""What compilation costs is measured (CompileMeter), and training programs reach the
persistent compilation cache, so that a second run loads them instead of compiling again."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp

from simlab.training.accelerators import CompileMeter


def test_the_meter_counts_a_new_program_and_not_a_reused_one():
    scale = jax.jit(lambda x: x * 3.0 + 1.0)
    x = jnp.ones(7)
    with CompileMeter() as first:
        scale(x).block_until_ready()
    with CompileMeter() as again:
        scale(x).block_until_ready()
    assert first.programs >= 1 and first.compile_seconds > 0
    assert again.programs == 0 and again.compile_seconds == 0
    assert first.wall_seconds >= first.compile_seconds
    assert "program" in first.summary() and "persistent cache" in first.summary()


# one population trained in a fresh process against a given cache directory; prints the meter
TRAIN_ONCE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from simlab.training.accelerators import CompileMeter, enable_compilation_cache
    enable_compilation_cache(sys.argv[1])
    import jax
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    from simlab.rules.rules import make_rule
    from simlab.specs.subjects import MLPSpec
    from simlab.subjects.architectures import Network
    from simlab.subjects.tasks import TaskData
    from simlab.training.population import train_population
    rng = np.random.default_rng(0)
    task = TaskData("toy", rng.standard_normal((20, 6, 1)).astype(np.float32), rng.integers(0, 3, 20).astype(np.int32),
                    rng.standard_normal((8, 6, 1)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int32), 3)
    rule = make_rule("feedback_alignment")
    told = []
    with CompileMeter() as meter:
        result = train_population(Network(MLPSpec(hidden=[4]), 3, rule.credit), rule, task, 5, 10, [0, 5, 10], [0, 1],
                                  "loop", on_trained=told.append)
    print(json.dumps({"hits": meter.cache_hits, "written": meter.cache_writes, "told": told,
                      "loss": float(result.losses.sum())}))
    """
)


def test_a_training_program_is_written_to_the_cache_and_loaded_by_the_next_run(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def train_once():
        out = subprocess.run([sys.executable, "-c", TRAIN_ONCE, str(tmp_path / "cache")], capture_output=True,
                             text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold, warm = train_once(), train_once()
    assert cold["written"] >= 1  # a host callback in the program would keep it out of the cache
    assert warm["hits"] >= cold["written"] and warm["written"] == 0
    assert cold["told"] == warm["told"] == [1, 1]  # progress per subject, one after another
    assert warm["loss"] == cold["loss"]


def test_a_run_logs_each_stage_s_time_and_memory_and_what_compiling_cost(tiny_run):
    log = (tiny_run / "log.txt").read_text()
    seconds = {}
    for stage in ("train", "subject table", "record", "analysis identify"):
        found = re.search(rf"stage {stage}: ([0-9.]+) s; peak memory ([0-9]+) MiB", log)
        assert found, stage
        seconds[stage] = float(found[1])
        assert int(found[2]) > 50  # a Python process with JAX loaded holds more than 50 MiB
    total = re.search(r"stages: ([0-9.]+) s in all; analyses ([0-9.]+) s", log)
    assert total and float(total[2]) == seconds["analysis identify"]
    assert sum(seconds.values()) <= float(total[1]) + 0.1 * len(seconds)  # each rounded to 0.1 s
    # 4 populations, each line with its compilation, and the stage's sum
    assert len(re.findall(r"train: \S+ in [0-9.]+ s; .*; compile: \d+ programs?, ", log)) == 4
    assert re.search(r"train: 4 population\(s\) in [0-9.]+ s; .*\(persistent cache: \d+ hits?, \d+ written\)", log)
