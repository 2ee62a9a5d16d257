"""Where a run's numbers came from besides its config: the code (git commit), the machine, its load, the cost.

``train()`` calls :func:`start` first and writes :func:`finish`'s dict into ``metrics.json`` as ``provenance``, so
every run carries it. A run resumed from a checkpoint (``ckpt_path=last`` after a kill, or a longer budget trained on)
also carries ``earlier``: the seconds its earlier processes spent up to that checkpoint, which
:class:`genlab.checkpoints.RunClock` keeps in every checkpoint, so that the run's cost is all of it, not only its last
process's. A checkout whose tracked files differ from HEAD is ``dirty``: the commit alone does not give back the code
that ran (untracked files are not looked at).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


# What runs write into the checkout (genlab.table's records and rendered results): not code, so not dirt.
RESULTS = ("experiments/tables", "experiments/RESULTS.md", "experiments/curves")


def git_commit(repo: Path = REPO) -> tuple[str | None, bool]:
    """(HEAD's 10-digit hash, whether tracked files other than RESULTS differ from it) of ``repo``; (None, False)
    outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ":/", *(f":(top,exclude){p}" for p in RESULTS)],
                               cwd=repo, capture_output=True).returncode
    except (OSError, subprocess.CalledProcessError):
        return None, False
    return head, dirty != 0


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def start() -> dict[str, Any]:
    """The clocks, load and commit at the start of a run (the code that is loaded is the code that runs)."""
    commit, dirty = git_commit()
    return {"commit": commit, "dirty": dirty, "wall": time.perf_counter(), "cpu": time.process_time(),
            "load": os.getloadavg()[0], "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def finish(started: dict[str, Any], device: torch.device | None = None,
           earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's provenance: commit, machine, threads, wall and CPU seconds of this process, 1-min load average, and
    ``earlier`` (:class:`~genlab.checkpoints.RunClock`'s) when it resumed from a checkpoint of earlier processes."""
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    if device is not None and device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    prov = {
        "commit": started["commit"], "dirty": started["dirty"], "date": started["date"], "machine": machine,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - started["wall"], 1),
        "cpu_s": round(time.process_time() - started["cpu"], 1),  # this process's threads, not loader workers
        "load": {"start": round(started["load"], 2), "end": round(os.getloadavg()[0], 2)},
    }
    if earlier and earlier["processes"]:
        prov["earlier"] = {"wall_s": round(earlier["wall_s"], 1), "cpu_s": round(earlier["cpu_s"], 1),
                           "processes": earlier["processes"]}
    return prov


def describe(provenances: Sequence[dict[str, Any]], seeds: Sequence[int]) -> list[str]:
    """Threads, load range, machines and notes, and commits (and which seeds ran dirty) of runs, as phrases."""
    threads = sorted({str(p["threads"]) for p in provenances if p.get("threads")})
    parts = [f"{'/'.join(threads)} thread{'s' * (threads != ['1'])}/run"] if threads else []
    loads = [v for p in provenances for v in (p.get("load") or {}).values()]
    parts += [f"load average {min(loads):.1f}-{max(loads):.1f}"] if loads else []
    parts += dict.fromkeys(p[k] for k in ("machine", "note") for p in provenances if p.get(k))
    dirty = ", ".join(str(seed) for seed, p in zip(seeds, provenances) if p.get("dirty"))
    commits = ", ".join(c for c in dict.fromkeys(p.get("commit") for p in provenances) if c) or "not recorded"
    return [*parts, f"commit {commits}" + (f" with uncommitted changes (seeds {dirty})" if dirty else "")]
