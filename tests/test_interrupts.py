"""SIGINT and SIGTERM during training: a checkpoint is saved, the run stops with a one-line resume hint and
exit code 128 + the signal, and the printed command resumes it. (SIGKILL and exact resume: tests/test_resume.py.)"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, read_metrics, run_cli

from genlab.callbacks.finite_checkpoints import non_finite_entries
from genlab.checkpoints import load_genlab_checkpoint

# Endless epochs of 3 batches: the run only ends when signalled.
LONG_RUN = [
    "model=ae", "trainer.max_epochs=100000", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false", "logger=csv", "test=false",
]


def start(run_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    return subprocess.Popen(
        [sys.executable, "-m", "genlab", *LONG_RUN, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigint_and_sigterm_save_a_checkpoint_and_exit_cleanly(tmp_path):
    runs = {signal.SIGINT: tmp_path / "sigint", signal.SIGTERM: tmp_path / "sigterm"}
    procs = {sig: start(run_dir) for sig, run_dir in runs.items()}
    for sig, proc in procs.items():
        # Training is under way once the first epoch's last.ckpt exists.
        wait_for(runs[sig] / "checkpoints" / "last.ckpt", proc)
        proc.send_signal(sig)
    hints = {}
    for sig, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        run_dir = runs[sig]
        assert proc.returncode == 128 + sig, stderr[-3000:]
        assert "Traceback" not in stderr
        line = next(line for line in stderr.splitlines() if line.startswith("genlab: error: stopped by"))
        hints[sig] = line
        assert f"stopped by {sig.name} at global step" in line
        assert str(run_dir / "checkpoints" / "last.ckpt") in line
        assert "ckpt_path=last" in line and f"hydra.run.dir={run_dir}" in line
        state = load_genlab_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        assert state["global_step"] >= 3 and not non_finite_entries(state["state_dict"])
        assert f"global step {state['global_step']} " in line  # the checkpoint is the state at the stop
        assert (run_dir / "csv" / "metrics.csv").is_file()
        assert not (run_dir / "metrics.json").exists()

    # The printed command resumes the SIGINT run (for three more steps) and finishes it.
    step = load_genlab_checkpoint(runs[signal.SIGINT] / "checkpoints" / "last.ckpt")["global_step"]
    words = shlex.split(hints[signal.SIGINT].split("Resume with: ", 1)[1])
    assert words[:3] == ["python", "-m", "genlab"]
    proc = run_cli(*words[3:], f"trainer.max_steps={step + 3}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = load_genlab_checkpoint(runs[signal.SIGINT] / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == step + 3
    assert read_metrics(runs[signal.SIGINT])["model"] == "ae"
