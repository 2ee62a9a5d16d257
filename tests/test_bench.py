"""The speed benchmark: its baselines compute genlab's maths, its clock and arithmetic are right (training logs:
tests/test_fast_path.py)."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from genlab.losses.gan_losses import NonSaturating
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP

sys.path.insert(0, str(REPO / "experiments"))
import bench_loops  # noqa: E402


def test_vae_baseline_loss_is_genlab_vae_loss() -> None:
    shape = (1, 8, 8)
    parts = bench_loops.make_vae(shape, latent_dim=3, hidden=16)
    model = VAE(shape, functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), latent_dim=3)
    model.encoder.load_state_dict(parts.encoder.state_dict())
    model.decoder.load_state_dict(parts.decoder.state_dict())
    x = torch.bernoulli(torch.full((5, *shape), 0.3), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    ours = parts.loss(x)
    torch.manual_seed(1)
    theirs = model.objective_terms(x, k=1)[0]["loss"]
    torch.testing.assert_close(ours, theirs)


def test_gan_baseline_losses_are_genlab_gan_losses() -> None:
    shape = (2,)
    parts = bench_loops.make_gan(shape, latent_dim=2, hidden=[8, 8], sigmoid_output=False)
    mlp = functools.partial(MLP, hidden=[8, 8])
    model = GAN(shape, mlp, functools.partial(MLP, hidden=[8, 8], activation="leaky_relu"), NonSaturating(),
                functools.partial(torch.optim.Adam), functools.partial(torch.optim.Adam), latent_dim=2)
    model.generator.load_state_dict(parts.generator.state_dict())
    model.discriminator.load_state_dict(parts.discriminator.state_dict())
    x = torch.randn(6, 2)
    torch.manual_seed(2)
    fake = parts.generate(6)
    ours = parts.loss.discriminator_loss(parts.discriminator(x), parts.discriminator(fake))
    torch.manual_seed(2)
    theirs = model.discriminator_objective(x, model.generate(model.noise(6)))["d_loss"]
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("loop", bench_loops.LOOPS)
def test_baseline_loops_step_through_every_batch(loop: str) -> None:
    x, y = torch.randn(10, 2), torch.zeros(10, dtype=torch.long)
    seen: list[Tensor] = []
    rate = bench_loops.run_loop(loop, seen.append, x, y, batch_size=4, steps=3, warmup=2)
    assert rate > 0 and [len(b) for b in seen] == [4, 4, 2, 4, 4]
    assert torch.equal(torch.cat(seen[:3]).sort(0).values, x.sort(0).values)  # one epoch: each row once


@pytest.mark.parametrize("n", [12, 300])  # fewer rows than dims (thin SVD), more (covariance eigh)
def test_both_pca_routes_match_sklearn(n: int) -> None:
    from sklearn.decomposition import PCA as SkPCA

    from genlab.models.pca import fit_pca

    x = torch.randn(n, 40, generator=torch.Generator().manual_seed(n)) * torch.linspace(0.1, 3.0, 40)
    mean, components, explained = fit_pca(x, 5)
    ref = SkPCA(5, svd_solver="full").fit(x.double().numpy())
    torch.testing.assert_close(explained, torch.from_numpy(ref.explained_variance_), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mean, torch.from_numpy(ref.mean_))
    cos = (components * torch.from_numpy(ref.components_)).sum(1).abs()
    torch.testing.assert_close(cos, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-8)


# -- the harness's own arithmetic and clock -----------------------------------------------------------------
import bench  # noqa: E402
import bench_timer  # noqa: E402


def test_paired_ratio_is_the_median_of_per_repetition_ratios_not_a_ratio_of_medians() -> None:
    genlab, minimal = [10.0, 30.0, 31.0], [10.0, 60.0, 15.0]  # ratios 1, 0.5, 2.07; medians' ratio 30/15 = 2
    assert bench.paired_ratio(genlab, minimal) == 1.0
    assert bench.extrapolate(72.0, 512, 10000) == pytest.approx(1406.25)


class _Sleeps(L.LightningModule):
    """``per_item`` optimizer steps per loader item (a GAN's two, or a fast-path block), each sleeping ``step_s``."""

    def __init__(self, per_item: int, step_s: float, val_s: float) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.per_item, self.step_s, self.val_s = per_item, step_s, val_s

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt = self.optimizers()
        for _ in range(self.per_item):
            time.sleep(self.step_s)
            opt.step()  # counts in global_step

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        time.sleep(self.val_s)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def run_timer(tmp_path: Path, per_item: int, per_batch: int, items: int, step_s: float = 0.0, val_s: float = 0.0,
              warmup: int = 2) -> tuple[dict[str, float], float]:
    loader = DataLoader(TensorDataset(torch.zeros(items, 1), torch.zeros(items)), batch_size=1)
    timer = bench_timer.StepTimer(str(tmp_path / "steps.json"), warmup=warmup, optimizer_steps_per_batch=per_batch)
    trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[timer], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        val_check_interval=items // 2, limit_val_batches=1)
    launched = time.time()
    trainer.fit(_Sleeps(per_item, step_s, val_s), train_dataloaders=loader, val_dataloaders=loader)
    return json.loads((tmp_path / "steps.json").read_text()), launched


def test_step_timer_times_a_known_sleep_and_leaves_out_the_validation_inside_its_window(tmp_path: Path) -> None:
    # 10 items of 40 ms; the clock runs from the end of item 2 to the end of item 10: 8 steps, 0.32 s of sleep;
    # the validation after item 5 sleeps 0.6 s and must not be counted
    out, launched = run_timer(tmp_path, per_item=1, per_batch=1, items=10, step_s=0.04, val_s=0.6)
    assert out["steps"] == 8
    assert 0.32 <= out["seconds"] < 0.32 + 0.3  # Lightning's own per-step cost is a few ms
    assert out["validation_seconds"] >= 0.6
    assert out["steps_per_s"] == pytest.approx(out["steps"] / out["seconds"])
    assert launched <= out["first_step_unix"] <= launched + 0.04 + 5  # the first item's end, not the last


@pytest.mark.parametrize("per_item, per_batch, steps", [(2, 2, 6), (2, 1, 14), (4, 1, 28)])
def test_step_timer_counts_minibatches_by_optimizer_steps(tmp_path: Path, per_item: int, per_batch: int,
                                                          steps: int) -> None:
    # 8 items of per_item/per_batch minibatches; the clock starts at the first item end with >= 2 done (a timer
    # counting loader items would say 6 in every case);
    # per_item=2, per_batch=2 is a GAN (D and G step per minibatch); per_batch=1 with per_item>1 is a block
    out, _ = run_timer(tmp_path, per_item=per_item, per_batch=per_batch, items=8)
    assert out["steps"] == steps


def test_missing_keys_names_each_key_a_case_did_not_write() -> None:
    report = {"machine": "m", "load_average_start": "0", "load_average_end": "0", "fast_path_keys": [],
              "nll_eval_seconds": 1.0, "nll_eval_extrapolated": False, "nll_images_measured": 10000, "nll_eval_k": 5000,
              "nll_threads": 2, "vae_vs_pythae": 1.6}
    assert bench.missing_keys(report, {"nll"}) == []
    assert bench.missing_keys(report, {"pythae"}) == ["vae_vs_pythae_default", "pythae_wall_seconds",
                                                      "genlab_wall_seconds", "pythae_test_nll", "genlab_test_nll"]
    # the target keys are all written by a full run
    every = {k for case in bench.ALL_CASES for k in bench.CASE_KEYS[case]}
    targets = {"vae_vs_minimal", "gan_vs_minimal", "toy_gan_vs_minimal", "vae_vs_dataloader", "gan_vs_dataloader",
               "toy_gan_vs_dataloader", "nll_eval_seconds", "vae_vs_pythae", "startup_seconds", "pca_vs_sklearn"}
    assert targets <= every


def test_a_partial_run_updates_its_keys_and_keeps_the_others_with_their_loads() -> None:
    full = {"machine": "m", "load_average_start": "0.5", "vae_vs_minimal": 0.8, "nll_eval_seconds": 300.0,
            "fast_path_keys": ["vae_vs_minimal", "startup_seconds"], "cases": list(bench.ALL_CASES)}
    part = {"machine": "m", "load_average_start": "4.0", "load_average_end": "3.0", "nll_eval_seconds": 180.0,
            "startup_seconds": 9.0, "fast_path_keys": [], "cases": ["nll", "startup"]}
    merged = bench.merge_reports(full, part)
    assert merged["vae_vs_minimal"] == 0.8 and merged["nll_eval_seconds"] == 180.0
    assert merged["load_average_start"] == "0.5"  # the full run's load stays with the full run's numbers
    assert merged["partial_runs"] == [{"machine": "m", "load_average_start": "4.0", "load_average_end": "3.0",
                                       "cases": ["nll", "startup"], "fast_path_keys": []}]
    assert merged["fast_path_keys"] == ["vae_vs_minimal"]  # startup was re-measured without the fast path
    again = bench.merge_reports(merged, part)
    assert len(again["partial_runs"]) == 1  # a rerun of the same cases replaces its entry


def test_pythae_weights_load_into_genlab_vae_as_the_same_model(tmp_path: Path) -> None:
    pytest.importorskip("pythae")
    import bench_pythae

    theirs = bench_pythae.pythae_vae()
    bench_pythae.save_pythae(theirs, tmp_path / "w.pt")
    ours = bench_pythae.load_pythae_into_genlab(tmp_path / "w.pt")
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = theirs.encoder(x)
        mean, log_var = ours.posterior(x)
        torch.testing.assert_close(mean, out.embedding)
        torch.testing.assert_close(log_var, out.log_covariance, atol=1e-4, rtol=0)  # genlab's soft floor at -12
        z = torch.randn(4, 20)
        torch.testing.assert_close(ours.decode(z), theirs.decoder(z).reconstruction)  # sigmoid(logits) both


def test_the_same_matmul_loop_runs_on_genlabs_library_and_leaves_this_process_on_the_default() -> None:
    from genlab import cpu_matmul

    before = cpu_matmul.onednn_enabled()
    assert bench.on_genlab_matmul(cpu_matmul.onednn_enabled) == (bench.genlab_cpu_matmul() == "onednn")
    assert cpu_matmul.onednn_enabled() == before
