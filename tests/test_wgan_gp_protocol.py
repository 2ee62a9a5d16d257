"""experiment=wgan_gp_toy is gan_toy.py's protocol (Gulrajani et al. 2017), and each loss brings its own Adam settings."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from genlab.config import check_node
from genlab.train import CONF_DIR


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def check_model(cfg: DictConfig) -> None:
    """genlab's validation of the model keys (unknown keys, types), as a run does before training."""
    check_node(OmegaConf.to_container(cfg.model, resolve=True), "model", supplied=("data_shape",))


def adam_settings(cfg: DictConfig) -> list[tuple[float, tuple[float, float]]]:
    """(lr, betas) of the discriminator's and the generator's optimizers, as the model builds them."""
    model = instantiate(cfg.model, data_shape=[2], loss=instantiate(cfg.loss))
    return [(o.defaults["lr"], tuple(o.defaults["betas"])) for o in model.configure_optimizers()]


@pytest.mark.parametrize(("experiment", "kind", "scale", "noise"),
                         [("wgan_gp_toy", "ring8", 2 / 1.414, 0.02 / 1.414),
                          ("wgan_gp_toy_grid25", "grid25", 2 / 2.828, 0.05 / 2.828)])  # fmt: skip
def test_the_preset_is_gan_toy_py(experiment: str, kind: str, scale: float, noise: float) -> None:
    cfg = composed(f"experiment={experiment}")
    check_model(cfg)
    model = instantiate(cfg.model, data_shape=[2], loss=instantiate(cfg.loss))
    for net, widths in ((model.generator, [(2, 512), (512, 512), (512, 512), (512, 2)]),
                        (model.discriminator, [(2, 512), (512, 512), (512, 512), (512, 1)])):  # fmt: skip
        layers = [m for m in net.modules() if not list(m.children())]
        assert [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)] == widths
        assert {type(m) for m in layers} == {nn.Linear, nn.ReLU} and isinstance(layers[-1], nn.Linear)
    assert model.loss.gp_weight == 0.1 and model.n_critic == 5 and model.latent_dim == 2
    assert adam_settings(cfg) == [(1e-4, (0.5, 0.9))] * 2
    # gan_toy.py divides its 8 / 25 Gaussians by their stdev (1.414 / 2.828)
    assert cfg.data.kind == kind and cfg.data.scale == pytest.approx(scale, rel=1e-4)
    assert cfg.data.noise == pytest.approx(noise, rel=1e-4)
    # batch 256 and 100,000 generator iterations: every epoch is whole batches
    assert cfg.data.batch_size == 256 and cfg.data.n_train % 256 == 0
    assert math.ceil(cfg.data.n_train / 256) * cfg.trainer.max_epochs == 100_000


def test_each_loss_brings_its_own_adam_unless_told_otherwise() -> None:
    shared = [(1e-3, (0.5, 0.999))] * 2
    for loss in ("minimax", "nonsaturating", "hinge", "lsgan"):
        assert adam_settings(composed("model=gan", "data=ring8", f"loss={loss}")) == shared, loss
    assert adam_settings(composed("model=gan", "data=ring8", "loss=wgan_gp")) == [(1e-4, (0.5, 0.9))] * 2
    # the command line wins, per optimizer
    cfg = composed("model=gan", "data=ring8", "loss=wgan_gp", "model.optimizer_g.lr=1e-3", "model.optimizer_d.betas=[0.5,0.999]")
    assert adam_settings(cfg) == [(1e-4, (0.5, 0.999)), (1e-3, (0.5, 0.9))]
    # and so does a preset that states its own (PacGAN's Adam)
    assert adam_settings(composed("experiment=pacgan_ring", "loss=wgan_gp")) == [(1e-4, (0.8, 0.999))] * 2


def test_the_loss_settings_leave_the_other_models_alone() -> None:
    cfg = composed("model=vae", "loss=wgan_gp")
    check_model(cfg)
    model = instantiate(cfg.model, data_shape=[1, 8, 8])
    assert isinstance(model.configure_optimizers(), torch.optim.Adam) and "optimizer_g" not in cfg.model
