"""SIGINT and SIGTERM during training: a checkpoint is saved, the run stops with a one-line resume hint and
exit code 128 + the signal, and the printed command resumes it to the result of a run never interrupted.
(SIGKILL and resume at an epoch end: tests/test_resume.py.)"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

from handshake import Child, children, handshake_overrides, release, start_cli, wait_until_ready
from resume_checks import assert_same_run, csv_rows

from genlab.callbacks.finite_checkpoints import non_finite_entries
from genlab.checkpoints import load_genlab_checkpoint

# A GAN (two optimizers; latent noise from the global RNG, which the resume must restore) in endless epochs of
# 3 batches of one step pair each (one batch per loader item): the run only ends when signalled or at max_steps.
RUN = ["model=gan", "data=ring8", "data.n_train=2048", "data.n_val=256", "data.steps_per_block=1",
       "trainer.max_epochs=100000", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
       "trainer.enable_progress_bar=false", "logger=csv", "test=false"]
STEPS_PER_EPOCH = 6  # 3 batches of a D and a G step
# The run waits in a handshake at the first batch start at or after step 4, and the printed command waits there
# again at its first batch. SIGTERM arrives at the start of epoch 0's last batch: the stop waits for the end of
# that epoch's validation (step 6). SIGINT arrives at the start of epoch 1: the run stops after that batch (step 8).
HOLD_AT = 4
STOPS = [(signal.SIGTERM, 4, 6, 0), (signal.SIGINT, 6, 8, 1)]  # signal, held at, stopped at (step), in epoch
MAX_STEPS = f"trainer.max_steps={3 * STEPS_PER_EPOCH}"  # to the end of the epoch after the last stop


def check_stop(child: Child, sig: signal.Signals, step: int, epoch: int, run_dir: Path) -> list[str]:
    """The run stopped with 128 + the signal, one hint line and the checkpoint of the stop; the resume command."""
    output = child.output()
    assert child.proc.returncode == 128 + sig, output[-3000:]
    assert "Traceback" not in output
    line = next(line for line in output.splitlines() if line.startswith("genlab: error: stopped by"))
    assert f"stopped by {sig.name} at global step {step} " in line
    assert str(run_dir / "checkpoints" / "last.ckpt") in line
    assert "ckpt_path=last" in line and f"hydra.run.dir={run_dir}" in line
    state = load_genlab_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (state["global_step"], state["epoch"]) == (step, epoch)  # the checkpoint is the state at the stop
    assert not non_finite_entries(state["state_dict"])
    assert (run_dir / "csv" / "metrics.csv").is_file() and not (run_dir / "metrics.json").exists()
    words = shlex.split(line.split("Resume with: ", 1)[1])
    assert words[:3] == ["python", "-m", "genlab"]
    return words[3:]


def test_sigint_and_sigterm_save_a_checkpoint_and_resume_to_the_uninterrupted_result(tmp_path):
    run_dir, hold, reference = tmp_path / "run", tmp_path / "hold", tmp_path / "reference"
    with children() as procs:
        # The run never interrupted, with the same overrides and trainer.max_steps, runs meanwhile.
        procs["reference"] = start_cli(*RUN, MAX_STEPS, f"hydra.run.dir={reference}", log=tmp_path / "reference.log")
        command = [*RUN, *handshake_overrides(hold, HOLD_AT), f"hydra.run.dir={run_dir}"]
        # The run is signalled where it waits; the printed command resumes it, and is signalled in turn.
        for sig, held_at, step, epoch in STOPS:
            (hold / "ready").unlink(missing_ok=True)
            procs[sig] = start_cli(*command, log=tmp_path / f"{sig.name}.log")
            assert wait_until_ready({sig: hold}, [procs[sig]]) == {sig: held_at}
            procs[sig].proc.send_signal(sig)
            procs[sig].finish()
            command = check_stop(procs[sig], sig, step, epoch, run_dir)
            val_epochs = [row["epoch"] for row in csv_rows(run_dir) if row.get("val/loss")]
            assert val_epochs == ["0"]  # after epoch 0's validation (the SIGTERM stop waited for it), not epoch 1's
        # The last printed command, run to max_steps, passes its handshake (go) and ends as the reference.
        release(hold)
        procs["resumed"] = start_cli(*command, MAX_STEPS, log=tmp_path / "resumed.log")
        for key in ("resumed", "reference"):
            output = procs[key].finish()
            assert procs[key].proc.returncode == 0, (key, output[-3000:])
    assert_same_run(run_dir, reference, "gan", min_steps=3 * STEPS_PER_EPOCH, epoch=2,
                    stopped_in=[epoch for *_, epoch in STOPS])
