"""A test-only Lightning callback that parks a run at a chosen step until the test lets it go, and its test side.

A test that must signal a child at a known point of training does not race a sleep: the child writes
``<folder>/ready`` (holding its global step) at the start of the first training batch (or block) that begins at or
after ``at_step`` optimizer steps, then waits there. Every ``last.ckpt`` of an earlier batch end is on disk by then
(a checkpoint written at a batch end comes before the next batch starts). The test then

- sends SIGKILL: the run dies at that point, its last checkpoint written;
- sends SIGINT/SIGTERM: genlab's ``InterruptCheckpoint`` records it, the callback sees that and lets the batch run,
  so the run stops at the end of exactly that batch (of that epoch's validation if it is the epoch's last);
- creates ``<folder>/go``: the run continues (``release``).

Wired through Hydra like any callback, with ``tests/`` on the child's PYTHONPATH::

    +callbacks.handshake._target_=handshake.Handshake +callbacks.handshake.folder=DIR +callbacks.handshake.at_step=N
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L

from genlab.callbacks.interrupt import InterruptCheckpoint

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Each wait is a poll of a file, not a guess at how long something takes; the limits only end a hung test.
POLL = 0.005
LIMIT = 300.0


class Handshake(L.Callback):
    """Write ``folder/ready`` at the first training batch start with ``global_step >= at_step``; wait for go or a signal."""

    def __init__(self, folder: str, at_step: int, timeout: float = LIMIT) -> None:
        self.folder = Path(folder)
        self.at_step = at_step
        self.timeout = timeout
        self.done = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.done or trainer.global_step < self.at_step:
            return
        self.done = True
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".ready.tmp"
        tmp.write_text(str(trainer.global_step))
        os.replace(tmp, self.folder / "ready")  # whole or absent: the test reads the step as soon as it exists
        deadline = time.monotonic() + self.timeout
        while not (self.folder / "go").exists() and not signalled(trainer):
            if time.monotonic() > deadline:
                raise RuntimeError(f"handshake: no go file in {self.folder} and no signal within {self.timeout} s")
            time.sleep(POLL)


def signalled(trainer: L.Trainer) -> bool:
    """Whether the run's InterruptCheckpoint has recorded a stop signal (it stops at the end of this batch)."""
    return any(isinstance(callback, InterruptCheckpoint) and callback.received is not None
               for callback in trainer.callbacks)


def handshake_overrides(folder: Path, at_step: int, name: str = "handshake") -> list[str]:
    """The Hydra overrides that add a Handshake callback to a ``python -m genlab`` run."""
    return [f"+callbacks.{name}._target_=handshake.Handshake", f"+callbacks.{name}.folder={folder}",
            f"+callbacks.{name}.at_step={at_step}"]


@dataclasses.dataclass
class Child:
    """A started ``python -m genlab`` process and the file that takes its stdout and stderr (no pipe to fill)."""

    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def finish(self, timeout: float = LIMIT) -> str:
        """Wait for the process to end; its output."""
        self.proc.wait(timeout=timeout)
        return self.output()


def start_cli(*args: str, log: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``python -m genlab ARGS`` with W&B offline and ``tests/`` importable (for the test-only callbacks)."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
                     "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), **(env or {})})
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=REPO, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    return Child(proc, Path(log))


@contextlib.contextmanager
def children() -> Iterator[dict[Any, Child]]:
    """A dict to hold started runs; any still running when the block ends (a failed assert) is killed and reaped."""
    runs: dict[Any, Child] = {}
    try:
        yield runs
    finally:
        for child in runs.values():
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait()


def wait_until_ready(folders: dict[Any, Path], runs: Iterable[Child], timeout: float = LIMIT) -> dict[Any, int]:
    """Wait until a ``ready`` file is in every folder; return the global step in each. Fails if one of ``runs``
    ends first."""
    runs = list(runs)
    steps: dict[Any, int] = {}
    deadline = time.monotonic() + timeout
    while len(steps) < len(folders):
        for key, folder in folders.items():
            if key not in steps and (folder / "ready").is_file():
                steps[key] = int((folder / "ready").read_text())
        for child in runs:
            assert child.proc.poll() is None, f"{child.proc.args} ended before a handshake: {child.output()[-3000:]}"
        assert time.monotonic() < deadline, f"no handshake within {timeout} s from {sorted(set(folders) - set(steps))}"
        time.sleep(POLL)
    return steps


def release(folder: Path) -> None:
    """Let a run waiting in its handshake continue."""
    (folder / "go").touch()
