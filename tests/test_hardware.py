"""Hardware configs on CPU: bf16-mixed precision for each trained model family, and 16-mixed loss scaling through
Lightning's plugin. DDP with 2 gloo processes, for every family: tests/test_ddp.py. (The gpu/ddp-on-GPU paths need
a GPU and are not run here.)"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, read_metrics, run_cli

from genlab.checkpoints import load_genlab_checkpoint

# bf16 keeps 8 significant bits: one rounding is off by at most 2^-8 = 0.4%. Measured over these 3 steps
# (digits, 32-unit nets, seed 0; 2026-12-01): val/loss off by 3.4e-5 (AE), 5.8e-4 (VAE), 7.6e-5 (VaDE) relative,
# the weights by 7.9e-4, 2.1e-3, 3.7e-4 in relative L2 norm. 1e-2 leaves room for a few roundings, and fails a
# bf16 path that corrupts a loss by more than 1% (e.g. a sum or log-sum-exp over pixels done in bfloat16).
BF16_RTOL = 1e-2


def test_bf16_mixed_matches_fp32_for_the_autoencoder_and_vae_families(tmp_path):
    sweep = tmp_path / "bf16"
    models = ["ae", "vae", "vade"]  # iwae is the vae class with another objective
    # test=false: the training and validation steps are what run in bf16; the VAE test stage's log p(x)
    # estimate (5000 importance samples) would only add time.
    proc = run_cli("-m", f"model={','.join(models)}", "trainer.precision=32,bf16-mixed", "data=digits",
                   "model.encoder.hidden=[32]", "model.decoder.hidden=[32]", "test=false", *TINY,
                   f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra:runtime.choices.model}_${trainer.precision}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bfloat16" in proc.stdout + proc.stderr
    for model in models:
        fp32, bf16 = read_metrics(sweep / f"{model}_32"), read_metrics(sweep / f"{model}_bf16-mixed")
        assert fp32["model"] == bf16["model"] == model
        assert bf16["val/loss"] == pytest.approx(fp32["val/loss"], rel=BF16_RTOL), model
        states = [load_genlab_checkpoint(sweep / f"{model}_{p}" / "checkpoints" / "last.ckpt")["state_dict"]
                  for p in ("32", "bf16-mixed")]
        # Mixed precision keeps the weights in float32; only the computation runs in bfloat16.
        assert all(t.dtype == torch.float32 for t in states[1].values() if t.is_floating_point())
        w32, w16 = (torch.cat([t.flatten() for t in s.values() if t.is_floating_point()]) for s in states)
        assert not torch.equal(w32, w16)  # the premise: the bf16 run did compute in bfloat16
        assert (w16 - w32).norm() <= BF16_RTOL * w32.norm(), model


def _fp16_run(init_scale: float, steps: int, grad_clip_norm: float | None) -> tuple[torch.Tensor, float]:
    """(parameter change, final loss scale) of an AE trained ``steps`` SGD(lr=1) steps under float16 autocast with a
    GradScaler: the 16-mixed path of a GPU, run on the CPU through Lightning's MixedPrecision plugin."""
    import functools

    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision

    from genlab.data.digits import DigitsDataModule
    from genlab.models.autoencoder import Autoencoder
    from genlab.nets.mlp import MLP

    L.seed_everything(0)
    datamodule = DigitsDataModule(batch_size=64)
    model = Autoencoder(datamodule.data_shape, functools.partial(MLP, hidden=[32]), functools.partial(MLP, hidden=[32]),
                        functools.partial(torch.optim.SGD, lr=1.0), latent_dim=2, grad_clip_norm=grad_clip_norm)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))
    trainer = L.Trainer(accelerator="cpu", plugins=[plugin], max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    return after - before, plugin.scaler.get_scale()


def test_16_mixed_loss_scaling_skips_overflowing_steps_and_clips_true_gradients():
    # At the default scale 2^16 the first float16 backward overflows: the scaler must skip that step and lower
    # the scale (a guarded step that raised on the non-finite scaled gradient would stop training here).
    change, scale = _fp16_run(init_scale=2.0**16, steps=4, grad_clip_norm=None)
    assert scale < 2.0**16 and torch.isfinite(change).all() and change.abs().sum() > 0
    # One step at a scale that does not overflow: with lr=1 the update is the clipped gradient, whose norm is
    # the clip threshold on the true (unscaled) gradient, not threshold / scale.
    change, scale = _fp16_run(init_scale=2.0**10, steps=1, grad_clip_norm=1e-3)
    assert scale == 2.0**10
    assert change.norm().item() == pytest.approx(1e-3, rel=1e-2)
