"""Switching callbacks and loggers off: ``callbacks.NAME=null`` / ``logger.NAME=null`` leave them out, and the
``callbacks=none`` and ``callbacks=lean`` groups run with fewer callbacks but still train, test and report."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import TINY, read_metrics, run_cli
from test_cli import scored_batches, squared_error


def pictures(run_dir: Path) -> set[str]:
    """The kinds of picture a run drew: ``reconstructions``, ``latent``, ``samples``, ..."""
    return {p.name.rsplit("_epoch", 1)[0] for p in (run_dir / "images").glob("*.png")}


def test_null_callbacks_and_logger_are_left_out(tmp_path):
    # The crash: a VAE with two picture callbacks nulled died in fit with 'NoneType' has no 'log'.
    run_dir = tmp_path / "vae"
    tiny = [o for o in TINY if not o.startswith("logger=")]
    proc = run_cli("model=vae", "data=digits", "model.eval_k=10", "callbacks.samples=null",
                   "callbacks.interpolations=null", "logger.wandb=null", *tiny, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert pictures(run_dir) == {"reconstructions", "latent"}  # the other picture callbacks still ran
    assert not (run_dir / "wandb").exists()  # the default logger was switched off
    metrics = read_metrics(run_dir)
    # An ELBO of pixels in [0, 1] under a Bernoulli decoder is below 0; 3 steps already beat the untrained decoder's
    # coin flip, 64 log 2 = 44.4 nats per 8x8 image (measured on an AMD EPYC: -40.3)
    for key in ("val/elbo", "test/elbo"):
        assert math.isfinite(metrics[key]) and -64 * math.log(2) < metrics[key] < 0, (key, metrics[key])


def test_callbacks_none_and_lean_train_test_and_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "callbacks=none,lean,default", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    none, lean, default = (sweep / str(i) for i in range(3))
    # the AE's summed squared error after 3 steps: below that of a zero output, far above 1 % of it
    batches = scored_batches("digits")[0]
    zeros = {key: squared_error(batches[split], 0.0) for split, key in (("val", "val/loss"), ("test", "test/recon"))}
    for run_dir in (none, lean, default):
        metrics = read_metrics(run_dir)
        for key, bound in zeros.items():
            assert math.isfinite(metrics[key]) and 0.01 * bound < metrics[key] < bound, (run_dir.name, key, metrics[key])
    # Same data, seed and steps: the callbacks change what is written, never the numbers.
    assert read_metrics(none)["val/loss"] == read_metrics(lean)["val/loss"] == read_metrics(default)["val/loss"]

    assert pictures(default) == {"reconstructions", "latent", "interpolations"}  # the control: what the AE draws
    assert pictures(lean) == set() and pictures(none) == set()
    assert {p.name for p in (lean / "checkpoints").glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}
    # callbacks=none: genlab's checkpoint callbacks are gone (no last.ckpt, no best.ckpt in the run folder).
    assert not (none / "checkpoints").exists()
