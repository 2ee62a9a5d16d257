"""The bench's one way to run things: ``python -m genlab`` processes timed by the StepTimer, ways alternated over
repetitions in a rotating order, and ratios paired within a repetition."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from genlab import cpu_matmul

REPO = Path(__file__).resolve().parents[2]
CLOCKS = {"wall": "time.perf_counter", "cpu": "time.process_time", "unix": "time.time"}
T = TypeVar("T")


def genlab_config(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """genlab's config with ``overrides``, as ``python -m genlab`` composes it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def uses_fast_path(overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether genlab with ``overrides`` trains several minibatches per loader item (``data.steps_per_block`` > 1)."""
    return int(genlab_config(overrides).data.get("steps_per_block", 1)) > 1


def run_process(cmd: list[str], threads: int, log: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one process from launch to exit, its output in ``log``; a failure
    stops the bench. CPU time is what other processes' load on a shared machine distorts least."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited with {code}:\n{log.read_text()[-3000:]}")
    return wall, after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime


def run_genlab(overrides: list[str], workdir: Path, threads: int, warmup: int, per_batch: int = 1,
               clock: str = "wall") -> dict[str, float]:
    """One ``python -m genlab`` run carrying the StepTimer on ``clock``: its record, and the process's CPU seconds."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    key, out = "+callbacks.bench_timer", run_dir / "steps.json"
    timer = [f"{key}._target_=experiments.bench.timer.StepTimer", f"{key}.out={out}", f"{key}.warmup={warmup}",
             f"{key}.optimizer_steps_per_batch={per_batch}", f"{key}.clock._target_=hydra.utils.get_method",
             f"{key}.clock.path={CLOCKS[clock]}"]
    _, cpu = run_process([sys.executable, "-m", "genlab", *overrides, f"hydra.run.dir={run_dir}", *timer], threads,
                         run_dir / "output.log")
    return {**json.loads(out.read_text()), "process_cpu_seconds": cpu}


def alternate(ways: dict[str, Callable[[int], T]], reps: int, label: str,
              show: Callable[[T], str] = str) -> dict[str, list[T]]:
    """Every way once per repetition, the order rotating; each call gets the repetition, torch seeded with it."""
    names, results = list(ways), {name: [] for name in ways}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            torch.manual_seed(rep)
            results[name].append(ways[name](rep))
        print(f"  {label} rep {rep + 1}/{reps}: " + ", ".join(f"{n} {show(results[n][-1])}" for n in names), flush=True)
    return results


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]`` (both measured in repetition i), not a ratio of medians."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def genlab_cpu_matmul() -> str:
    """The library ``python -m genlab`` multiplies with here: conf/config.yaml's cpu_matmul, resolved (its probe)."""
    before = cpu_matmul.onednn_enabled()
    try:
        return cpu_matmul.select(genlab_config([]).cpu_matmul)
    finally:
        cpu_matmul.use_onednn(before)


def on_genlab_matmul(fn: Callable[[], T]) -> T:
    """``fn()`` with float32 matmuls on genlab's library; this process keeps torch's default otherwise."""
    before = cpu_matmul.onednn_enabled()
    cpu_matmul.use_onednn(genlab_cpu_matmul() == "onednn")
    try:
        return fn()
    finally:
        cpu_matmul.use_onednn(before)


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def machine() -> str:
    return f"{cpu_matmul.machine_key()}, {os.cpu_count()} cores, Python {platform.python_version()}"
