"""SIGINT and SIGTERM during training: a checkpoint is saved, the run stops with a one-line resume hint and
exit code 128 + the signal, and the printed command resumes it to the result of a run never interrupted.
(SIGKILL and resume at an epoch end: tests/test_resume.py.)"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from resume_checks import assert_same_run

from genlab.callbacks.finite_checkpoints import non_finite_entries
from genlab.checkpoints import load_genlab_checkpoint

# Endless epochs of 3 batches (limit_train_batches): the run only ends when signalled. The VAE draws its
# reparameterisation noise and the GAN its latent noise from the global RNG, which the resume must restore.
COMMON = ["trainer.max_epochs=100000", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
          "trainer.enable_progress_bar=false", "logger=csv", "test=false"]
RUNS = {
    signal.SIGINT: ["model=vae", "data=digits", "model.eval_k=10"],
    signal.SIGTERM: ["model=gan", "data=ring8", "data.n_train=2048", "data.n_val=256", "data.n_test=256"],
}
STEPS_PER_BATCH = {signal.SIGINT: 1, signal.SIGTERM: 2}  # the GAN takes a D and a G step per batch


def start(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    return subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigint_and_sigterm_save_a_checkpoint_and_resume_to_the_uninterrupted_result(tmp_path):
    runs = {sig: tmp_path / sig.name for sig in RUNS}
    procs = {sig: start(*RUNS[sig], *COMMON, f"hydra.run.dir={run_dir}") for sig, run_dir in runs.items()}
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
        assert state["global_step"] >= 3 * STEPS_PER_BATCH[sig] and not non_finite_entries(state["state_dict"])
        assert f"global step {state['global_step']} " in line  # the checkpoint is the state at the stop
        assert (run_dir / "csv" / "metrics.csv").is_file()
        assert not (run_dir / "metrics.json").exists()

    # The printed command resumes each run to the end of the epoch after the one it stopped in; a run never
    # interrupted, with the same overrides and trainer.max_steps, must end with the same weights, optimizer
    # states and metrics.
    procs, stopped_in = {}, {}
    for sig in RUNS:
        batches = load_genlab_checkpoint(runs[sig] / "checkpoints" / "last.ckpt")["global_step"] // STEPS_PER_BATCH[sig]
        stopped_in[sig] = batches // 3 if batches % 3 else batches // 3 - 1  # a stop after an epoch's last batch
        max_steps = f"trainer.max_steps={(stopped_in[sig] + 2) * 3 * STEPS_PER_BATCH[sig]}"
        words = shlex.split(hints[sig].split("Resume with: ", 1)[1])
        assert words[:3] == ["python", "-m", "genlab"]
        procs[sig, "resumed"] = start(*words[3:], max_steps)
        procs[sig, "uninterrupted"] = start(*RUNS[sig], *COMMON, max_steps, f"hydra.run.dir={tmp_path / 'ref'}_{sig.name}")
    for key, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (key, stderr[-3000:])
    for sig in RUNS:
        assert_same_run(runs[sig], tmp_path / f"ref_{sig.name}", "gan" if sig == signal.SIGTERM else "vae",
                        min_steps=6 * STEPS_PER_BATCH[sig], stopped_in_epoch=stopped_in[sig])
