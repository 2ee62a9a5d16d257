"""The fast path: ``data.steps_per_block=S`` groups S minibatches per loader item and the module steps through them.

S is a speed knob only: the minibatches, the weights, ``global_step``, the logged rows and their steps, the progress
bar's count and the checkpoints' resume points are checked here against S=1, on the models whose steps differ
(the AE: one step per minibatch; the GAN: n_critic D steps and a G step, EMA) and under mixed precision.
"""

from __future__ import annotations

import csv
import functools
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import run_cli
from handshake import children, handshake_overrides, start_cli, wait_until_ready
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from resume_checks import run_metrics

from genlab.checks import ConfigError
from genlab.data.binarize import bernoulli_transform
from genlab.data.tensor_loader import Block, InMemoryLoader
from genlab.data.toy2d import Toy2DDataModule
from genlab.losses.gan_losses import NonSaturating
from genlab.models.autoencoder import Autoencoder
from genlab.models.gan import GAN
from genlab.nets.mlp import MLP

ADAM = functools.partial(torch.optim.Adam, lr=1e-2)


# -- the loader ------------------------------------------------------------------------------------------------
def _items(loader: InMemoryLoader) -> list[tuple[torch.Tensor, ...]]:
    """The minibatches of one epoch, whatever the grouping."""
    out = []
    for item in loader:
        out.extend(item.minibatches() if isinstance(item, Block) else [item])
    return out


def test_blocks_hold_the_plain_loaders_minibatches_and_transform_draws() -> None:
    x = torch.rand(23, 1, 2, 2)
    make = functools.partial(InMemoryLoader, (x, torch.arange(23)), batch_size=5, shuffle=True, seed=4,
                             transform=bernoulli_transform)
    plain, blocks = make(), make(steps_per_block=3)
    assert len(plain) == 5 and len(blocks) == 3  # [3 full batches], [the 4th], [the short 5th: 3 samples]
    shapes = [tuple(item[0].shape) for item in make(steps_per_block=3)]
    assert shapes == [(3, 5, 1, 2, 2), (1, 5, 1, 2, 2), (1, 3, 1, 2, 2)]
    for _ in range(2):  # two epochs: new order and new bits, the same in both groupings
        a, b = _items(plain), _items(blocks)
        assert len(a) == len(b) == 5
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert set(torch.cat([xa for xa, _ in a]).unique().tolist()) == {0.0, 1.0}  # binarized per batch


def test_block_loader_caps_batches_and_resumes_mid_epoch_by_batches() -> None:
    make = functools.partial(InMemoryLoader, (torch.arange(40),), batch_size=4, shuffle=True, seed=1)
    capped = make(steps_per_block=3, max_batches=7)
    assert capped.batches_per_epoch == 7 and len(capped) == 3  # 3 + 3 + 1 batches
    it = iter(capped)
    first = next(it)
    assert capped.position == 3 and capped.state_dict() == {"epoch": 0, "batches_served": 3, "steps_per_block": 3}
    resumed = make(steps_per_block=3, max_batches=7)
    resumed.load_state_dict(capped.state_dict())
    rest = [b[0] for item in resumed for b in item.minibatches()]
    reference = [b[0] for item in make(max_batches=7) for b in [item]]
    assert torch.equal(torch.cat([*first[0], *rest]), torch.cat(reference))
    other = make(steps_per_block=2)
    with pytest.raises(ConfigError, match=r"data.steps_per_block=2 differs from the 3 of the checkpoint"):
        other.load_state_dict(capped.state_dict())
    other.load_state_dict({"epoch": 1, "batches_served": 0, "steps_per_block": 3})  # an epoch boundary: any S


def test_block_settings_that_would_count_blocks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="steps_per_block"):
        Toy2DDataModule(steps_per_block=0)
    with pytest.raises(ConfigError, match="in_memory=false"):
        Toy2DDataModule(steps_per_block=2, in_memory=False)
    for kwargs, key in (({"limit_train_batches": 0.5}, "trainer.limit_train_batches"),
                        ({"val_check_interval": 3}, "trainer.val_check_interval")):
        trainer = _trainer(tmp_path, max_epochs=1, **kwargs)
        with pytest.raises(ConfigError, match=key):
            trainer.fit(_ae(), datamodule=_ring(steps_per_block=2))


# -- training through blocks -----------------------------------------------------------------------------------
def _ring(**kwargs: Any) -> Toy2DDataModule:
    return Toy2DDataModule(kind="ring8", n_train=200, n_val=64, n_test=64, batch_size=32, **kwargs)


def _ae() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder((2,), functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), ADAM,
                       latent_dim=2)


def _gan() -> GAN:
    torch.manual_seed(0)
    return GAN((2,), functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), NonSaturating(),
               ADAM, ADAM, latent_dim=2, n_critic=2, ema_decay=0.9, sample_metrics=False)


def _trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    opts: dict[str, Any] = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    return L.Trainer(**{**opts, **kwargs})


def _fit(tmp_path: Path, make_model: Any, steps_per_block: int, **kwargs: Any) -> tuple[L.LightningModule, list]:
    """Fit with a CSV logger; return the module and the CSV rows as {column: float} without empty cells."""
    L.seed_everything(0)
    model = make_model()
    logger = CSVLogger(tmp_path, name=f"S{steps_per_block}", version="")
    trainer = _trainer(tmp_path, logger=logger, log_every_n_steps=2, **kwargs)
    trainer.fit(model, datamodule=_ring(steps_per_block=steps_per_block))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return model, rows


@pytest.mark.parametrize("model", ["ae", "gan"])
def test_blocks_train_and_log_exactly_as_one_batch_per_item(tmp_path: Path, model: str) -> None:
    # 7 batches per epoch (200 samples, batch 32: 6 full and a short one), 2 epochs; blocks of 3 and a remainder.
    make = _ae if model == "ae" else _gan
    plain, plain_rows = _fit(tmp_path, make, 1, max_epochs=2, limit_val_batches=1)
    fast, fast_rows = _fit(tmp_path, make, 3, max_epochs=2, limit_val_batches=1)
    steps_per_batch = 1 if model == "ae" else 3  # the GAN: n_critic=2 D steps and a G step
    assert fast.global_step == plain.global_step == 14 * steps_per_batch
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):  # the EMA generator too
        assert torch.equal(a, b), name
    assert fast_rows == plain_rows
    # The x axis counts minibatches: rows every 2nd (x = 1, 3, ..., 13), validation after each epoch's 7th
    # (x = 6, 13), training epoch means after it (x = 7, 14).
    key = "train/loss_step" if model == "ae" else "train/d_loss_step"
    assert [int(r["step"]) for r in fast_rows if key in r] == [1, 3, 5, 7, 9, 11, 13]
    assert [int(r["step"]) for r in fast_rows if "val/loss" in r] == [6, 13]
    assert [(int(r["step"]), int(r["epoch"])) for r in fast_rows if key.replace("_step", "_epoch") in r] == [
        (7, 0), (14, 1)]


def test_the_logged_epoch_mean_averages_every_minibatch(tmp_path: Path) -> None:
    losses: list[float] = []

    class Spy(Autoencoder):
        def log_stage(self, stage: str, metrics: dict, batch_size: int, **kwargs: Any) -> None:
            if stage == "train":
                losses.append((float(metrics["loss"].detach()), batch_size))
            super().log_stage(stage, metrics, batch_size, **kwargs)

    def make() -> Spy:
        torch.manual_seed(0)
        return Spy((2,), functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), ADAM, latent_dim=2)

    model, rows = _fit(tmp_path, make, 4, max_epochs=1, limit_val_batches=0)
    assert [n for _, n in losses] == [32] * 6 + [8]
    expected = sum(v * n for v, n in losses) / 200
    assert next(r["train/loss_epoch"] for r in rows if "train/loss_epoch" in r) == pytest.approx(expected, rel=1e-6)


def test_max_steps_and_limit_train_batches_cut_blocks_exactly(tmp_path: Path) -> None:
    # limit_train_batches=5 counts batches (blocks of 3 and 2), not blocks; max_steps=7 falls inside epoch 1's
    # first block.
    plain, _ = _fit(tmp_path, _ae, 1, max_steps=7, limit_train_batches=5, limit_val_batches=0)
    fast, _ = _fit(tmp_path, _ae, 3, max_steps=7, limit_train_batches=5, limit_val_batches=0)
    assert fast.global_step == plain.global_step == 7 and fast.batches_trained == 7
    for a, b in zip(plain.parameters(), fast.parameters()):
        assert torch.equal(a, b)


def test_16_mixed_scaler_steps_through_blocks_as_through_batches(tmp_path: Path) -> None:
    # At scale 2^16 the first float16 steps overflow and are skipped: the same steps in both groupings.
    def run(steps_per_block: int) -> tuple[Autoencoder, float]:
        L.seed_everything(0)
        model = _ae()
        plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
        _trainer(tmp_path, plugins=[plugin], max_steps=9, limit_val_batches=0).fit(
            model, datamodule=_ring(steps_per_block=steps_per_block))
        return model, plugin.scaler.get_scale()

    (plain, plain_scale), (fast, fast_scale) = run(1), run(4)
    assert plain_scale == fast_scale < 2.0**16
    for a, b in zip(plain.parameters(), fast.parameters()):
        assert torch.equal(a, b)


def test_bf16_mixed_blocks_match_plain_batches(tmp_path: Path) -> None:
    models = []
    for steps_per_block in (1, 3):
        L.seed_everything(0)
        model = _gan()
        _trainer(tmp_path, precision="bf16-mixed", max_steps=15, limit_val_batches=0).fit(
            model, datamodule=_ring(steps_per_block=steps_per_block))
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


class _Saves(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.bar: list[tuple[int, int]] = []

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.steps.append(trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = trainer.progress_bar_callback.train_progress_bar
        self.bar.append((bar.n, bar.total))


def test_step_checkpoints_land_at_block_ends_and_the_bar_counts_batches(tmp_path: Path) -> None:
    from genlab.callbacks.progress import MinibatchProgressBar
    from genlab.checkpoints import LastCheckpoint

    saves = _Saves()
    callbacks = [LastCheckpoint(tmp_path / "ckpt", every_n_train_steps=4), saves, MinibatchProgressBar()]
    trainer = _trainer(tmp_path, callbacks=callbacks, max_epochs=2, limit_val_batches=0, enable_progress_bar=True,
                       enable_checkpointing=True)
    trainer.fit(_ae(), datamodule=_ring(steps_per_block=3))
    # Blocks end at steps 3, 6, 7 (epoch 0: 6 full batches and a short one) and 10, 13, 14: a save at the first
    # block end at least 4 steps after the previous save, and at each epoch end.
    assert saves.steps == [6, 7, 13, 14]
    assert saves.bar == [(7, 7), (7, 7)]  # minibatches, not the 3 blocks


# -- resuming a run killed or interrupted inside a block ---------------------------------------------------------
RESUME = ["model=ae", "data=ring8", "data.n_train=2048", "data.n_val=256", "data.n_test=256", "data.batch_size=256",
          "data.steps_per_block=3", "trainer.max_epochs=2", "trainer.deterministic=true",
          "trainer.enable_progress_bar=false", "logger=csv", "trainer.log_every_n_steps=2",
          "callbacks.last_checkpoint.every_n_train_steps=2"]


def test_runs_killed_or_interrupted_inside_a_block_resume_to_the_uninterrupted_result(tmp_path: Path) -> None:
    # One sweep over ckpt_path=null,last,last runs the uninterrupted reference (job 0) and resumes the killed (1)
    # and the interrupted (2) run in their folders.
    sweep = tmp_path / "sweep"
    runs = {signal.SIGKILL: sweep / "1", signal.SIGINT: sweep / "2"}
    # Each run waits at the start of block 2 (global step 3), after block 1's step checkpoint, for its signal.
    hold = {sig: tmp_path / f"handshake_{sig.name}" for sig in runs}
    with children() as procs:
        for sig, run_dir in runs.items():
            procs[sig] = start_cli(*RESUME, *handshake_overrides(hold[sig], at_step=3), f"hydra.run.dir={run_dir}",
                                   log=tmp_path / f"{sig.name}.log")
        assert wait_until_ready(hold, procs.values()) == {signal.SIGKILL: 3, signal.SIGINT: 3}
        for sig, child in procs.items():
            child.proc.send_signal(sig)
        for sig, child in procs.items():
            output = child.finish()
            assert child.proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), output[-3000:]
    killed = torch.load(runs[signal.SIGKILL] / "checkpoints" / "last.ckpt", weights_only=True)
    interrupted = torch.load(runs[signal.SIGINT] / "checkpoints" / "last.ckpt", weights_only=True)
    # SIGKILL left the step checkpoint of block 1; SIGINT, received inside block 2, finished that block (3 of the
    # epoch's 8 batches) and saved there.
    assert killed["global_step"] == 3 and interrupted["global_step"] == 6
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_served"] == 6

    proc = run_cli("-m", *RESUME, "ckpt_path=null,last,last", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = sweep / "0"
    expected = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    for job, ckpt_path in (("0", "null"), ("1", "last"), ("2", "last")):  # the premise: which job is which
        assert f"ckpt_path={ckpt_path}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    for run_dir in runs.values():
        resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert resumed["global_step"] == expected["global_step"] == 16
        for name, value in expected["state_dict"].items():
            assert torch.equal(resumed["state_dict"][name], value), name
        assert run_metrics(run_dir) == run_metrics(reference)
        rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
        assert [r["step"] for r in rows if r.get("train/loss_step")][-4:] == ["9", "11", "13", "15"]
