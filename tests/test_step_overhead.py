"""Per-step work Lightning would do for nobody is skipped, and skipping it changes nothing else.

- ``GenerativeModule.optimize`` calls ``self.backward(loss)`` instead of ``manual_backward`` when the latter would only
  add two rounds of hook dispatch that reach no implementation (full precision, one device, no profiler, no
  ``on_before_backward``/``on_after_backward`` anywhere); a listener, mixed precision or a profiler bring
  Lightning's path back, and the weights are bitwise the same either way.
- The progress bar redraws at most every ``min_interval`` seconds, always at an epoch's last minibatch.
- Lightning counts loader items, which hold blocks of minibatches: a run gives it the logging interval in items, so
  an epoch of enough minibatches in few blocks is not taken for one too short to log.
"""

from __future__ import annotations

import csv
import functools
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from genlab.callbacks.progress import MinibatchProgressBar
from genlab.checks import ConfigError
from genlab.data.toy2d import Toy2DDataModule
from genlab.losses.gan_losses import NonSaturating
from genlab.models.gan import GAN
from genlab.nets.mlp import MLP
from genlab.train import CONF_DIR, train


def _gan() -> GAN:
    """A tiny 2-D GAN with two D steps per minibatch and an EMA generator (more per-step work to skip)."""
    torch.manual_seed(0)
    adam = functools.partial(torch.optim.Adam, lr=1e-2)
    return GAN((2,), functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), NonSaturating(),
               adam, adam, latent_dim=2, n_critic=2, ema_decay=0.9, sample_metrics=False)


def _ring(**kwargs: Any) -> Toy2DDataModule:
    return Toy2DDataModule(kind="ring8", n_train=200, n_val=64, n_test=64, batch_size=32, **kwargs)


def _trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    opts: dict[str, Any] = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                                max_epochs=2, limit_val_batches=0)
    return L.Trainer(**{**opts, **kwargs})


class BackwardListener(L.Callback):
    """Counts the backward hooks Lightning delivers; its presence alone must restore Lightning's backward path."""

    def __init__(self) -> None:
        self.before = 0
        self.after = 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self.before += 1

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.after += 1


class PathSpy(L.Callback):
    """Records whether the module took the plain backward path in this fit (read after on_fit_start)."""

    def __init__(self) -> None:
        self.plain: bool | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.plain = pl_module._plain_backward


def _fit(tmp_path: Path, *callbacks: L.Callback, **kwargs: Any) -> GAN:
    L.seed_everything(0)
    model = _gan()
    _trainer(tmp_path, callbacks=list(callbacks), **kwargs).fit(model, datamodule=_ring(steps_per_block=3))
    return model


def test_backward_hooks_are_skipped_only_when_nobody_listens_and_weights_do_not_change(tmp_path: Path) -> None:
    spy = PathSpy()
    plain = _fit(tmp_path, spy)
    assert spy.plain is True

    listener, spy = BackwardListener(), PathSpy()
    hooked = _fit(tmp_path, listener, spy)
    assert spy.plain is False
    # 7 minibatches x 2 epochs, each 2 D steps and 1 G step: every optimizer step's backward reached the listener.
    assert hooked.global_step == 42 and listener.before == listener.after == 42
    for (name, a), b in zip(plain.state_dict().items(), hooked.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kwargs", [{"precision": "bf16-mixed"}, {"profiler": "simple"}])
def test_mixed_precision_and_profiling_keep_lightnings_backward(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    spy = PathSpy()
    _fit(tmp_path, spy, max_epochs=1, limit_train_batches=3, **kwargs)
    assert spy.plain is False


class BarRecorder(L.Callback):
    """The training bar's count after every loader item (this callback runs after the bar's own hook)."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.counts.append(trainer.progress_bar_callback.train_progress_bar.n)


@pytest.mark.parametrize(("min_interval", "expected"), [
    # 7 minibatches per epoch in blocks of 3, 3, 1; refresh_rate 2: a crossing at every block end.
    (0.0, [3, 6, 7, 3, 6, 7]),
    # Never twice within an hour: the run's first crossing, then only each epoch's last minibatch.
    (3600.0, [3, 3, 7, 0, 0, 7]),
])
def test_bar_redraws_at_most_every_min_interval_and_always_at_the_epoch_end(
        tmp_path: Path, min_interval: float, expected: list[int]) -> None:
    recorder = BarRecorder()
    bar = MinibatchProgressBar(refresh_rate=2, min_interval=min_interval)
    _fit(tmp_path, bar, recorder, enable_progress_bar=True)
    assert recorder.counts == expected


class EpochEndBar(L.Callback):
    """The training bar's count at each epoch end, after the bar's own epoch-end hook."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.counts.append(trainer.progress_bar_callback.train_progress_bar.n)


def test_an_epoch_cut_short_ends_the_bar_on_its_true_count(tmp_path: Path) -> None:
    recorder = EpochEndBar()
    # max_steps=18: 2 D + 1 G step per minibatch, so 6 minibatches (two blocks of 3) of the epoch's 7. The bar drew
    # the run's first crossing (3) and, within min_interval, not the second: the epoch end draws the 6.
    _fit(tmp_path, MinibatchProgressBar(refresh_rate=2, min_interval=3600.0), recorder, enable_progress_bar=True,
         max_steps=18)
    assert recorder.counts == [6]


def test_bar_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="min_interval"):
        MinibatchProgressBar(min_interval=-1.0)
    with pytest.raises(ConfigError, match="refresh_rate"):
        MinibatchProgressBar(refresh_rate=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("every", "notice"), [(10, False), (50, True)])
def test_lightning_counts_the_logging_interval_in_loader_items_and_the_rows_stay_per_minibatch(
        tmp_path: Path, every: int, notice: bool) -> None:
    # The default run: digits, 1,294 training images in 11 minibatches (10 of 128, one of 14), served as 4 items by
    # data.steps_per_block=4. Every 10 minibatches leaves a row in each epoch, so Lightning must not warn that the
    # epoch's 4 items are fewer than 10; every 50 leaves none, and Lightning still says so.
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["trainer.max_epochs=2", f"trainer.log_every_n_steps={every}", "logger=csv",
                                           "callbacks=lean", "test=false", f"paths.output_dir={tmp_path}"])
    assert cfg.data.steps_per_block == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert any("smaller than the logging interval" in str(w.message) for w in caught) is notice
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]
    assert steps == [s for s in range(22) if (s + 1) % every == 0]  # minibatches 10 and 20 (x = count - 1)
