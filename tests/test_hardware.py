"""Hardware configs on CPU: DDP with 2 gloo processes (a VAE and a GAN, end to end) and bf16-mixed precision for
each trained model family. (The gpu/ddp-on-GPU/16-mixed paths need a GPU and are not run here.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, read_metrics, run_cli

from genlab.checkpoints import load_genlab_checkpoint
from genlab.losses.elbo import kl_standard_normal
from genlab.sample import load_model

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def assert_finished_once(proc, run_dir: Path) -> dict:
    """One run folder with one metrics.json written by rank zero, and finite metrics."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("genlab: run folder") == 1  # printed by rank zero only
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr  # the second process did run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert [p.parent for p in run_dir.parent.rglob("metrics.json")] == [run_dir]
    metrics = read_metrics(run_dir)
    values = {k: v for k, v in metrics.items() if "/" in k}
    assert values and all(math.isfinite(v) for v in values.values()), values
    return metrics


def test_ddp_vae_on_two_cpu_processes_syncs_validation_metrics(tmp_path):
    run_dir = tmp_path / "vae"
    proc = run_cli("model=vae", "data=digits", "model.eval_k=10", *DDP, *TINY, f"hydra.run.dir={run_dir}")
    metrics = assert_finished_once(proc, run_dir)
    # Each rank validates half of the validation split (one batch each). The synced val/kl (closed form, so
    # deterministic) must be the mean over the whole split, recomputed here in one process from the weights.
    model, datamodule = load_model(load_genlab_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    x, _ = datamodule.split_tensors("val")
    assert len(x) % 2 == 0 and len(x) // 2 <= datamodule.batch_size  # the premise: equal halves, one batch
    with torch.no_grad():
        mean, log_var = model.posterior(x)
        kl_all = kl_standard_normal(mean, log_var).mean().item()
        kl_rank0 = kl_standard_normal(mean[0::2], log_var[0::2]).mean().item()
    assert metrics["val/kl"] == pytest.approx(kl_all, rel=1e-4)
    assert abs(kl_rank0 - kl_all) > 1e-4 * abs(kl_all)  # an unsynced rank-zero value would be told apart


def test_ddp_gan_with_bf16_mixed_on_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "gan"
    # Each rank saves its weights at the end (tests/rank_weights.py): DDP must keep the two replicas identical
    # (all-reduced gradients, the same optimizer steps) while each rank trains on its own half of every batch.
    # A one-process run with the doubled batch is not the same computation here, so it is not compared: both
    # ranks are seeded alike and draw the same latent noise, where one process would draw a batch's worth.
    proc = run_cli("model=gan", "data=ring8", "data.n_train=2048", "model.eval_samples=200",
                   "trainer.precision=bf16-mixed", *DDP, *TINY, f"hydra.run.dir={run_dir}",
                   "+callbacks.ranks._target_=rank_weights.RankWeights", f"+callbacks.ranks.dirpath={tmp_path / 'ranks'}",
                   env={"PYTHONPATH": str(Path(__file__).resolve().parent)})
    metrics = assert_finished_once(proc, run_dir)
    assert "bfloat16" in proc.stdout + proc.stderr
    assert {"val/mode_kl", "val/modes", "test/mode_kl"} <= set(metrics)
    state = load_genlab_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert len(state["optimizer_states"]) == 2 and all(s["state"] for s in state["optimizer_states"])
    assert state["global_step"] == 2 * 3  # 3 of the 4 batches per rank (limit_train_batches), a D and a G step each
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["first_batch_sum"] != ranks[1]["first_batch_sum"]  # the premise: different data per rank
    for name, value in ranks[0]["state_dict"].items():
        assert torch.equal(ranks[1]["state_dict"][name], value), f"{name} differs between the DDP ranks"
        assert torch.equal(state["state_dict"][name], value), f"{name}: last.ckpt is not rank 0's final state"


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
