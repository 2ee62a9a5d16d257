"""`python -m genlab model=vae|iwae|vade data=digits` end to end: metrics.json names and the VAE-family pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_metrics, run_cli
from in_process import tiny_run

from genlab.checks import ConfigError
from genlab.train import train

MODELS = ["vae", "iwae", "vade"]
VAE_METRICS = {"test/nll", "test/elbo", "test/kl", "test/recon", "test/active_units", "val/elbo", "val/loss"}


def test_vae_family_fast_dev_run_in_one_multirun(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        f"model={','.join(MODELS)}",
        "data=digits",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "++model.eval_k=64",  # ++: the multirun first composes with the default model, which lacks it
        "++model.eval_chunk=16",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i, model in enumerate(MODELS):
        run_dir = sweep / str(i)
        metrics = read_metrics(run_dir)
        assert metrics["model"] == model
        assert VAE_METRICS <= set(metrics), sorted(VAE_METRICS - set(metrics))
        assert metrics["test/nll"] > 0 and metrics["test/kl"] >= 0
        pngs = {p.name.split("_epoch")[0] for p in (run_dir / "images").glob("*.png")}
        assert {"reconstructions", "samples", "latent", "interpolations"} <= pngs, pngs
    vade = read_metrics(sweep / "2")
    assert {"test/acc", "test/nmi", "test/ari", "val/acc"} <= set(vade)
    assert "cluster_samples" in {p.name.split("_epoch")[0] for p in (sweep / "2" / "images").glob("*.png")}


def test_bad_vae_setting_fails_before_training_naming_the_key(tmp_path: Path) -> None:
    # In this process: what the CLI makes of such an error (one line, exit 2) is tests/test_bad_input.py's.
    with pytest.raises(ConfigError, match=r"model\.beta=0\.5.*objective=iwae"):
        train(tiny_run(["model=iwae", "model.beta=0.5", "logger=csv"], tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists() and not list(tmp_path.rglob("*.ckpt"))
