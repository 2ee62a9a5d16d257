"""SIGINT and SIGTERM during training: a checkpoint is saved, the run stops with a one-line resume hint and
exit code 128 + the signal, and the printed command resumes it to the result of a run never interrupted.
(SIGKILL and resume at an epoch end: tests/test_resume.py.)"""

from __future__ import annotations

import shlex
import signal

from handshake import children, handshake_overrides, release, start_cli, wait_until_ready
from resume_checks import assert_same_run, csv_rows

from genlab.callbacks.finite_checkpoints import non_finite_entries
from genlab.checkpoints import load_genlab_checkpoint

# Endless epochs of 3 batches (limit_train_batches): the run only ends when signalled. The VAE draws its
# reparameterisation noise and the GAN its latent noise from the global RNG, which the resume must restore.
COMMON = ["trainer.max_epochs=100000", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
          "trainer.enable_progress_bar=false", "logger=csv", "test=false"]
RUNS = {  # the VAE with one batch per loader item, the GAN with the default blocks (an epoch is one item)
    signal.SIGINT: ["model=vae", "data=digits", "data.steps_per_block=1", "model.eval_k=10"],
    signal.SIGTERM: ["model=gan", "data=ring8", "data.n_train=2048", "data.n_val=256", "data.n_test=256"],
}
MODEL = {signal.SIGINT: "vae", signal.SIGTERM: "gan"}
STEPS_PER_BATCH = {signal.SIGINT: 1, signal.SIGTERM: 2}  # the GAN takes a D and a G step per batch
# Each run waits in a handshake at the start of a loader item of epoch 1 for its signal (global steps): the VAE
# at its epoch's 2nd batch, which it finishes and stops after (inside the epoch); the GAN at its epoch's one
# block of 3 batches, after which the stop waits for the end of that epoch's validation.
HOLD_AT = {signal.SIGINT: 4, signal.SIGTERM: 6}
STOP_AT = {signal.SIGINT: 5, signal.SIGTERM: 12}
STOPPED_IN_EPOCH = 1


def test_sigint_and_sigterm_save_a_checkpoint_and_resume_to_the_uninterrupted_result(tmp_path):
    runs = {sig: tmp_path / sig.name for sig in RUNS}
    hold = {sig: tmp_path / f"handshake_{sig.name}" for sig in RUNS}
    # A run never interrupted, with the same overrides and trainer.max_steps at the end of the epoch after the
    # one the run stopped in, is the reference of the resumed run: it runs meanwhile.
    max_steps = {sig: f"trainer.max_steps={(STOPPED_IN_EPOCH + 2) * 3 * STEPS_PER_BATCH[sig]}" for sig in RUNS}
    with children() as procs:
        for sig in RUNS:
            procs[sig] = start_cli(*RUNS[sig], *COMMON, *handshake_overrides(hold[sig], HOLD_AT[sig]),
                                   f"hydra.run.dir={runs[sig]}", log=tmp_path / f"{sig.name}.log")
            procs[sig, "ref"] = start_cli(*RUNS[sig], *COMMON, max_steps[sig], f"hydra.run.dir={tmp_path / 'ref'}_{sig.name}",
                                          log=tmp_path / f"ref_{sig.name}.log")
        # Both runs are watched at once: each gets its signal while it waits at its handshake.
        held_at = wait_until_ready(hold, procs.values())
        for sig in RUNS:
            procs[sig].proc.send_signal(sig)
        outputs = {key: child.finish() for key, child in procs.items()}
    hints = {}
    for sig in RUNS:
        output, run_dir = outputs[sig], runs[sig]
        assert procs[sig].proc.returncode == 128 + sig, output[-3000:]
        assert procs[sig, "ref"].proc.returncode == 0, outputs[sig, "ref"][-3000:]
        assert "Traceback" not in output
        line = next(line for line in output.splitlines() if line.startswith("genlab: error: stopped by"))
        hints[sig] = line
        assert f"stopped by {sig.name} at global step" in line
        assert str(run_dir / "checkpoints" / "last.ckpt") in line
        assert "ckpt_path=last" in line and f"hydra.run.dir={run_dir}" in line
        state = load_genlab_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        # The checkpoint is the state at the stop: the end of the loader item the signal arrived in.
        assert held_at[sig] == HOLD_AT[sig]
        assert state["global_step"] == STOP_AT[sig] and state["epoch"] == STOPPED_IN_EPOCH
        assert not non_finite_entries(state["state_dict"])
        assert f"global step {state['global_step']} " in line
        assert (run_dir / "csv" / "metrics.csv").is_file()
        assert not (run_dir / "metrics.json").exists()
    # The GAN stopped after its epoch's validation, the VAE inside its epoch (before that validation).
    val_epochs = {sig: [r["epoch"] for r in csv_rows(runs[sig]) if r.get("val/loss")] for sig in RUNS}
    assert val_epochs == {signal.SIGINT: ["0"], signal.SIGTERM: ["0", "1"]}

    # The printed command resumes each run to the end of the epoch after the one it stopped in; it must end with
    # the reference's weights, optimizer states and metrics.
    with children() as procs:
        for sig in RUNS:
            release(hold[sig])  # the command repeats the run's overrides, the handshake too: let it pass
            words = shlex.split(hints[sig].split("Resume with: ", 1)[1])
            assert words[:3] == ["python", "-m", "genlab"]
            procs[sig] = start_cli(*words[3:], max_steps[sig], log=tmp_path / f"resumed_{sig.name}.log")
        for sig, child in procs.items():
            output = child.finish()
            assert child.proc.returncode == 0, (sig, output[-3000:])
    for sig in RUNS:
        assert_same_run(runs[sig], tmp_path / f"ref_{sig.name}", MODEL[sig], min_steps=6 * STEPS_PER_BATCH[sig],
                        stopped_in_epoch=STOPPED_IN_EPOCH)
