"""The speed benchmark (experiments/bench): its baselines compute genlab's maths, its timer counts what it claims on a
clock it is given, its ratios and report keys are right, and its matmul routing switches and is undone."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from experiments.bench import __main__ as bench
from experiments.bench import cases, run
from experiments.bench.timer import StepTimer
from genlab import cpu_matmul
from genlab.losses.gan_losses import NonSaturating
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP

REPO = Path(__file__).resolve().parent.parent


def test_vae_baseline_loss_is_genlab_vae_loss() -> None:
    shape = (1, 8, 8)
    encoder, decoder = cases.vae_nets(shape, latent_dim=3, hidden=16)
    model = VAE(shape, functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), latent_dim=3)
    model.encoder.load_state_dict(encoder.state_dict())
    model.decoder.load_state_dict(decoder.state_dict())
    x = torch.bernoulli(torch.full((5, *shape), 0.3), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    ours = cases.vae_loss(encoder, decoder, x)
    torch.manual_seed(1)
    torch.testing.assert_close(ours, model.objective_terms(x, k=1)[0]["loss"])


def test_gan_baseline_nets_and_loss_are_genlab_gans() -> None:
    generator, discriminator = cases.gan_nets((2,), latent_dim=2, hidden=[8, 8])
    model = GAN((2,), functools.partial(MLP, hidden=[8, 8]), functools.partial(MLP, hidden=[8, 8], activation="leaky_relu"),
                NonSaturating(), functools.partial(torch.optim.Adam), functools.partial(torch.optim.Adam), latent_dim=2)
    model.generator.load_state_dict(generator.state_dict())  # the same layers, in the same order
    model.discriminator.load_state_dict(discriminator.state_dict())
    x = torch.randn(6, 2)
    torch.manual_seed(2)
    ours = NonSaturating().discriminator_loss(discriminator(x), discriminator(generator(torch.randn(6, 2))))
    torch.manual_seed(2)
    torch.testing.assert_close(ours, model.discriminator_objective(x, model.generate(model.noise(6)))["d_loss"])


@pytest.mark.parametrize("loop", cases.LOOPS)
def test_baseline_loops_step_through_every_batch(loop: str) -> None:
    x, y = torch.randn(10, 2), torch.zeros(10, dtype=torch.long)
    seen: list[Tensor] = []
    rate = cases.loop_rate(loop, seen.append, x, y, batch_size=4, steps=3, warmup=2, device=torch.device("cpu"))
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


# -- the harness's clock and arithmetic ---------------------------------------------------------------------
class FakeClock:
    """Time moves only when the module under test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Steps(L.LightningModule):
    """``per_item`` optimizer steps per loader item (a GAN's two, or a block), each taking ``step_s`` on ``clock``;
    a validation batch takes ``val_s``."""

    def __init__(self, clock: FakeClock, per_item: int, step_s: float, val_s: float) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.clock, self.per_item, self.step_s, self.val_s = clock, per_item, step_s, val_s

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        for _ in range(self.per_item):
            self.clock.now += self.step_s
            self.optimizers().step()  # counts in global_step

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.clock.now += self.val_s

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def run_timer(tmp_path: Path, per_item: int, per_batch: int, items: int, step_s: float = 1.0,
              val_s: float = 0.0) -> dict[str, float]:
    clock = FakeClock()
    loader = DataLoader(TensorDataset(torch.zeros(items, 1), torch.zeros(items)), batch_size=1)
    timer = StepTimer(str(tmp_path / "steps.json"), warmup=2, optimizer_steps_per_batch=per_batch, clock=clock)
    trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[timer], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        val_check_interval=items // 2, limit_val_batches=1)
    trainer.fit(_Steps(clock, per_item, step_s, val_s), train_dataloaders=loader, val_dataloaders=loader)
    return json.loads((tmp_path / "steps.json").read_text())


def test_step_timer_times_the_steps_after_warmup_and_leaves_out_the_validation_inside_its_window(
        tmp_path: Path) -> None:
    # 10 items of 3 s; the clock runs from the end of item 2 to the end of item 10: 8 steps, 24 s. The validations
    # after items 5 and 10 take 100 s each: the first is inside the window and left out, the second is outside it.
    out = run_timer(tmp_path, per_item=1, per_batch=1, items=10, step_s=3.0, val_s=100.0)
    assert out == {"steps": 8, "seconds": 24.0, "steps_per_s": 8 / 24, "validation_seconds": 100.0, "first_step": 3.0}


@pytest.mark.parametrize("per_item, per_batch, steps", [(2, 2, 6), (2, 1, 14), (4, 1, 28)])
def test_step_timer_counts_minibatches_by_optimizer_steps(tmp_path: Path, per_item: int, per_batch: int,
                                                          steps: int) -> None:
    # 8 items of per_item/per_batch minibatches; the clock starts at the first item end with >= 2 done (a timer
    # counting loader items would say 6 in every case); per_item=2, per_batch=2 is a GAN (D and G step per
    # minibatch); per_batch=1 with per_item>1 is a block
    assert run_timer(tmp_path, per_item=per_item, per_batch=per_batch, items=8)["steps"] == steps


def test_paired_ratio_is_the_median_of_per_repetition_ratios_not_a_ratio_of_medians() -> None:
    genlab, minimal = [10.0, 30.0, 31.0], [10.0, 60.0, 15.0]  # ratios 1, 0.5, 2.07; medians' ratio 30/15 = 2
    assert run.paired_ratio(genlab, minimal) == 1.0


def test_alternate_rotates_the_order_and_seeds_each_repetition() -> None:
    calls: list[tuple[str, int, float]] = []
    way = lambda name: lambda rep: calls.append((name, rep, torch.rand(()).item())) or rep  # noqa: E731
    out = run.alternate({"a": way("a"), "b": way("b"), "c": way("c")}, reps=3, label="t")
    assert out == {"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1, 2]}
    assert [c[0] for c in calls] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    torch.manual_seed(1)
    assert calls[3][2] == torch.rand(()).item()  # each way starts its repetition from the same seed


def test_a_training_case_writes_the_keys_bench_json_has() -> None:
    recorded = json.loads((REPO / "experiments" / "bench.json").read_text())
    rates = {"genlab": [2.0, 4.0, 6.0], "genlab_no_bar": [3.0, 3.0, 3.0], "minimal": [1.0, 2.0, 2.0],
             "minimal_same_matmul": [2.0, 2.0, 2.0], "dataloader": [4.0, 4.0, 4.0]}
    report = bench.training_report("toy_gan", rates)
    assert set(report) == {k for k in recorded if k.startswith("toy_gan_")}
    assert report["toy_gan_vs_minimal"] == 2.0 and report["toy_gan_vs_dataloader"] == 1.0
    assert report["toy_gan_no_bar_vs_minimal"] == 1.5 and report["toy_gan_genlab_steps_per_s"] == 4.0
    del rates["genlab_no_bar"]
    vae_keys = {k for k in recorded if k.startswith("vae_") and not k.startswith("vae_vs_pythae")}
    assert set(bench.training_report("vae", rates)) == vae_keys
    # --blocks and --compile add ways: each other way's rate over the minimal loop's
    extra = bench.training_report("gan", {**rates, "genlab_S4": [4.0, 4.0, 4.0], "compiled": [1.0, 1.0, 1.0]})
    assert extra["gan_S4_vs_minimal"] == 2.0 and extra["gan_compiled_vs_minimal"] == 0.5


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
    assert len(bench.merge_reports(merged, part)["partial_runs"]) == 1  # a rerun of the same cases replaces its entry


@pytest.mark.skipif(not cpu_matmul.available(), reason="this torch cannot route float32 matmuls to oneDNN")
@pytest.mark.parametrize("library", ["onednn", "blas"])
def test_the_same_matmul_loop_runs_on_genlabs_library_and_restores_this_processs(
        library: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(tmp_path))  # nothing probed or cached outside the test
    monkeypatch.setattr(run, "genlab_cpu_matmul", lambda: library)
    before = library == "blas"  # the process starts on the other library, so a switch and its undoing both show
    cpu_matmul.use_onednn(before)
    try:
        assert run.on_genlab_matmul(cpu_matmul.onednn_enabled) is (library == "onednn")
        assert cpu_matmul.onednn_enabled() is before
        with pytest.raises(ZeroDivisionError):
            run.on_genlab_matmul(lambda: 1 / 0)
        assert cpu_matmul.onednn_enabled() is before  # undone when the run fails too
    finally:
        cpu_matmul.use_onednn(False)


def test_pythae_weights_load_into_genlab_vae_as_the_same_model(tmp_path: Path) -> None:
    pytest.importorskip("pythae")
    from experiments.bench import pythae

    theirs = pythae.pythae_vae()
    pythae.save_pythae(theirs, tmp_path / "w.pt")
    ours = pythae.load_pythae_into_genlab(tmp_path / "w.pt")
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = theirs.encoder(x)
        mean, log_var = ours.posterior(x)
        torch.testing.assert_close(mean, out.embedding)
        torch.testing.assert_close(log_var, out.log_covariance, atol=1e-4, rtol=0)  # genlab's soft floor at -12
        z = torch.randn(4, 20)
        torch.testing.assert_close(ours.decode(z), theirs.decoder(z).reconstruction)  # sigmoid(logits) both
