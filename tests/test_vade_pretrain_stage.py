"""VaDE's pretraining stage (model/pretrain=dec): DEC's recipe by config, the loss read through VaDE's own decoder,
the start's accuracy logged against pretraining epochs, labels never trained on, a resumed run not pretraining again."""

from __future__ import annotations

import csv
import functools
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from genlab.callbacks.interrupt import InterruptCheckpoint, Interrupted
from genlab.checkpoints import LastCheckpoint, LoaderEpoch, ResumableRNG
from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.models.vade import VaDE
from genlab.models.vade_pretrain import AutoencoderPretraining
from genlab.nets.mlp import MLP
from genlab.train import CONF_DIR

SHAPE = (1, 8, 8)
SGD = functools.partial(torch.optim.SGD, lr=1.0, momentum=0.9)


def stage(**kwargs) -> AutoencoderPretraining:
    return AutoencoderPretraining(SGD, **{"epochs": 12, "batch_size": 64, "eval_every": 4, **kwargs})


def build(likelihood: str = "bernoulli", pretrain: AutoencoderPretraining | None = None, seed: int = 0) -> VaDE:
    torch.manual_seed(seed)
    net = functools.partial(MLP, hidden=(64,), activation="relu")
    return VaDE(SHAPE, encoder=net, decoder=net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), latent_dim=5,
                n_clusters=10, pretrain_epochs=0, gmm_n_init=1, likelihood=likelihood, pretrain=pretrain, eval_k=4)


def fit(model: VaDE, tmp_path: Path, datamodule: L.LightningDataModule | None = None, ckpt_path: str | None = None,
        **options) -> L.Trainer:
    """One VaDE epoch of one batch after the stage (``options`` go to the Trainer), logging to tmp_path/csv."""
    trainer = L.Trainer(**{"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0, "enable_checkpointing": False,
                           "logger": CSVLogger(tmp_path, name="csv", version=""), "enable_progress_bar": False,
                           "enable_model_summary": False, **options})  # fmt: skip
    trainer.fit(model, datamodule=datamodule or DigitsDataModule(batch_size=64, seed=0), ckpt_path=ckpt_path)
    return trainer


def rows(tmp_path: Path, prefix: str) -> list[dict[str, float]]:
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        found = [{k: float(v) for k, v in r.items() if v and k.startswith(prefix)} for r in csv.DictReader(f)]
    return [r for r in found if r]


def test_the_dec_preset_is_decs_recipe_then_vades_schedule() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=vade_dec_mnist"])
        plain = compose("config", overrides=["model=vade", "data=mnist"])
        chosen = compose("config", overrides=["model=vade", "data=mnist", "model/pretrain=dec"])
    assert "pretrain" not in plain.model and plain.model.pretrain_epochs > 0  # today's in-loop pretraining stays
    assert chosen.model.pretrain.optimizer == cfg.model.pretrain.optimizer and chosen.model.pretrain_epochs == 0
    model = instantiate(cfg.model, data_shape=[1, 28, 28])
    pre = model.pretrain
    assert isinstance(pre, AutoencoderPretraining) and (pre.batch_size, pre.data) == (256, "all")
    sgd = pre.optimizer_factory([nn.Parameter(torch.zeros(1))])
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 1.0 and sgd.defaults["momentum"] == 0.9
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(784, 500), (500, 500), (500, 2000), (2000, 20), (10, 2000), (2000, 500), (500, 500), (500, 784)]
    for net in (model.encoder, model.decoder):  # a linear code and a linear output: no activation after the last layer
        assert isinstance([m for m in net.modules() if not list(m.children())][-1], nn.Linear)
    # pretraining fits the decoder VaDE reads: its Bernoulli -log p(x|z), not a squared error on a head of its own
    assert model.likelihood.kind == "bernoulli" and pre.loss == "nll"
    # the VaDE phase: Adam at the paper's floor rate 2e-4 from the first step, batch 100, scored on all 70k
    assert (cfg.model.optimizer.lr, cfg.model.lr_schedule, cfg.data.batch_size) == (2e-4, "constant", 100)
    assert model.eval_on == "all" and model.schedule_lr_factor() is None


def test_the_stage_composes_with_the_tuned_digits_settings() -> None:
    # conf/tuned/digits_vade.yaml's 60 in-loop pretraining epochs made model/pretrain=dec on digits a ConfigError
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        tuned = compose("config", overrides=["model=vade", "data=digits"])
        staged = compose("config", overrides=["model=vade", "data=digits", "model/pretrain=dec"])
        chosen = compose("config", overrides=["model=vade", "data=digits", "model.pretrain_epochs=30"])
    assert (tuned.model.pretrain_epochs, tuned.trainer.max_epochs) == (60, 70)
    assert (staged.model.pretrain_epochs, staged.trainer.max_epochs) == (0, 10)  # 10 VaDE epochs either way
    assert chosen.model.pretrain_epochs == 30
    model = instantiate(staged.model, data_shape=[1, 8, 8])
    assert isinstance(model.pretrain, AutoencoderPretraining) and model.pretrain_epochs == 0


@pytest.mark.parametrize(("likelihood", "loss"), [("bernoulli", "mse"), ("gaussian_fixed", "mse"), ("bernoulli", "nll")])
def test_the_stage_trains_the_decoder_vade_reads(likelihood: str, loss: str) -> None:
    # A linear head trained on squared error and then read through VaDE's sigmoid (slim1017/VaDE issue #5) starts
    # VaDE from a decoder that no longer reconstructs: the stage's loss must be VaDE's own reconstruction.
    model = build(likelihood)
    pre = stage(loss=loss)
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = pre.reconstruction_loss(model, x)
        if loss == "mse":
            assert torch.allclose(got, (model.reconstruct(x) - x).pow(2).mean(), atol=1e-6)
            raw = model.decoder(model.encode(x)).flatten(1)
            assert (likelihood == "gaussian_fixed") == bool(torch.allclose(got, (raw - x.flatten(1)).pow(2).mean()))
        else:
            assert torch.allclose(got, -model.log_likelihood(x, model.encode(x)).mean() / 64, atol=1e-6)


def test_the_start_accuracy_is_logged_against_pretraining_epochs_and_vade_starts_there(tmp_path: Path) -> None:
    model = build(pretrain=stage())
    fit(model, tmp_path)
    curve, start = rows(tmp_path, "pretrain/"), rows(tmp_path, "init/")
    assert [r["pretrain/epoch"] for r in curve] == [4, 12 - 4, 12]
    losses = [r["pretrain/loss"] for r in curve]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]
    assert curve[-1]["pretrain/nmi"] > 0.5  # an untrained encoder's codes: NMI ~0.25 on digits
    # the last point of the curve is the initialisation VaDE starts from: its GMM, its images
    assert len(start) == 1 and start[0]["init/acc"] == pytest.approx(curve[-1]["pretrain/acc"], abs=2e-3)
    assert bool(model.prior_fitted)


class ShuffledLabels(DigitsDataModule):
    """Digits with every split's labels permuted: what an unsupervised stage trains must not change."""

    def split_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().split_tensors(split)
        return x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]


def test_labels_only_score_the_start(tmp_path: Path) -> None:
    weights = []
    for i, dm in enumerate((DigitsDataModule(batch_size=64, seed=0), ShuffledLabels(batch_size=64, seed=0))):
        model = build(pretrain=stage(epochs=3, eval_every=1))
        fit(model, tmp_path / str(i), dm)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        acc = rows(tmp_path / str(i), "init/")[0]["init/acc"]
        assert (acc < 0.3) == (i == 1)  # the shuffled labels do score the same clusters worse
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_a_resumed_run_does_not_pretrain_again_and_still_reports_its_start(tmp_path: Path) -> None:
    model = build(pretrain=stage(epochs=2, eval_every=0))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(model, tmp_path / "first", enable_checkpointing=True, callbacks=[checkpoints])

    class Refuses(AutoencoderPretraining):
        def run(self, model: VaDE, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            raise AssertionError("the stage ran again on resume")

    resumed = build(pretrain=Refuses(SGD, epochs=2, eval_every=0), seed=1)
    trainer = fit(resumed, tmp_path / "second", max_epochs=2, ckpt_path=str(checkpoints.last_model_path))
    assert bool(resumed.prior_fitted) and resumed.current_epoch == 2
    # the "autoencoder + GMM" row of the final metrics: the first run's start, carried by the checkpoint
    trainer.test(resumed, datamodule=DigitsDataModule(batch_size=64, seed=0), verbose=False)
    assert set(model.start) == {"acc", "nmi", "ari"} and resumed.start == model.start
    assert float(trainer.callback_metrics["test/init_acc"]) == pytest.approx(model.start["acc"])


class AtStageEpoch(L.Callback):
    """Does ``action`` at the end of the stage's epoch ``epoch``, before the checkpoint callbacks act there."""

    def __init__(self, epoch: int, action) -> None:
        self.epoch, self.action = epoch, action

    def on_stage_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, epoch: int) -> None:
        if (stage, epoch) == ("pretrain", self.epoch):
            self.action()


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def crash() -> None:
    raise RuntimeError("the process dies here")  # as if killed: nothing after this point runs


@pytest.mark.parametrize(("action", "at", "stopped"), [(sigterm, 2, Interrupted), (crash, 3, RuntimeError)],
                         ids=["sigterm", "killed"])
def test_a_stage_stopped_mid_way_resumes_from_its_last_epoch_to_the_uninterrupted_weights(
    tmp_path: Path, action, at: int, stopped: type[Exception]
) -> None:
    # SIGTERM at the end of stage epoch 2 stops there (it used to wait for the whole stage: 35 minutes for DEC's);
    # a process dying at the end of epoch 3 leaves the last.ckpt of epoch 2. Either resumes to the same weights.
    def callbacks(folder: Path, *extra: L.Callback) -> list[L.Callback]:
        return [*extra, InterruptCheckpoint(str(folder)), LastCheckpoint(folder), ResumableRNG(), LoaderEpoch()]

    options = {"enable_checkpointing": True, "max_epochs": 2, "limit_train_batches": 2}
    whole = build(pretrain=stage(epochs=5, eval_every=2))
    fit(whole, tmp_path / "whole", callbacks=callbacks(tmp_path / "whole" / "ckpt"), **options)
    cut = build(pretrain=stage(epochs=5, eval_every=2))
    folder = tmp_path / "cut" / "ckpt"
    with pytest.raises(stopped):
        fit(cut, tmp_path / "cut", callbacks=callbacks(folder, AtStageEpoch(at, action)), **options)
    state = torch.load(folder / "last.ckpt", weights_only=True)
    assert state["vade_pretrain"]["epochs_done"] == 2 and not bool(state["state_dict"]["prior_fitted"])
    assert state["global_step"] == 0 and state["epoch"] == 0
    resumed = build(pretrain=stage(epochs=5, eval_every=2), seed=1)  # other weights: all must come from the file
    fit(resumed, tmp_path / "resumed", callbacks=callbacks(folder), ckpt_path=str(folder / "last.ckpt"), **options)
    assert resumed.pretrain.progress is None and bool(resumed.prior_fitted)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert resumed.start == whole.start
    # the curve goes on where it stopped: epochs 4 and 5 in the resumed run's rows, the clock counting the first
    assert [r["pretrain/epoch"] for r in rows(tmp_path / "resumed", "pretrain/")] == [4, 5]


@pytest.mark.parametrize(("kwargs", "key"), [({"loss": "bce"}, "pretrain.loss"), ({"data": "test"}, "pretrain.data"),
                                             ({"epochs": 0}, "pretrain.epochs"), ({"batch_size": 0}, "pretrain.batch_size"),
                                             ({"eval_every": -1}, "pretrain.eval_every")])  # fmt: skip
def test_bad_stage_keys_fail_early_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        stage(**kwargs)


def test_the_stage_replaces_the_in_loop_pretraining() -> None:
    net = functools.partial(MLP, hidden=(8,))
    with pytest.raises(ConfigError, match="pretrain_epochs=3 is not accepted with model.pretrain set: expected 0"):
        VaDE(SHAPE, encoder=net, decoder=net, optimizer=SGD, latent_dim=2, pretrain_epochs=3, pretrain=stage())
