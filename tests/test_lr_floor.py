"""model.lr_min: the step schedule's learning rate never falls under the floor (VaDE: 2e-3 x 0.9 / 10 epochs, >= 2e-4)."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir

from genlab.checks import ConfigError
from genlab.models.vade import VaDE
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP
from genlab.train import CONF_DIR

LR, FLOOR = 2e-3, 2e-4


def build(cls, lr: float = LR, **kwargs):
    torch.manual_seed(0)
    net = functools.partial(MLP, hidden=(8,), activation="relu")
    optimizer = functools.partial(torch.optim.Adam, lr=lr)
    return cls((1, 8, 8), encoder=net, decoder=net, optimizer=optimizer, latent_dim=2, **kwargs)


def lr_sequence(model, epochs: int) -> list[float]:
    """The optimizer's rate at each epoch, stepping the model's own LambdaLR once per epoch as training does."""
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: no update, but the scheduler sees the order training uses
        scheduler.step()
    return rates


def test_step_schedule_with_a_floor_follows_the_closed_form() -> None:
    model = build(VAE, lr_schedule="step", lr_decay=0.9, lr_decay_every=10, lr_min=FLOOR)
    expected = [max(LR * 0.9 ** (e // 10), FLOOR) for e in range(300)]
    assert lr_sequence(model, 300) == pytest.approx(expected, rel=1e-9)
    # the floor binds from epoch 220 (0.9^22 < 0.1) on; without it the rate keeps falling
    unfloored = lr_sequence(build(VAE, lr_schedule="step", lr_decay=0.9, lr_decay_every=10), 300)
    assert unfloored[:220] == pytest.approx(expected[:220], rel=1e-9)
    assert unfloored[-1] == pytest.approx(LR * 0.9**29) and unfloored[-1] < 0.5 * FLOOR


def test_vade_floor_applies_to_the_vade_phase_counted_from_its_start() -> None:
    model = build(VaDE, pretrain_epochs=3, finetune_lr_factor=0.5, lr_schedule="step", lr_min=FLOOR)
    expected = [LR if e < 3 else max(0.5 * LR * 0.9 ** ((e - 3) // 10), FLOOR) for e in range(250)]
    assert lr_sequence(model, 250) == pytest.approx(expected, rel=1e-9)
    assert min(expected) == FLOOR and expected[-1] == FLOOR


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (VAE, {"lr_min": -1e-4}),
        (VAE, {"lr_min": 3e-3}),  # above optimizer.lr
        (VAE, {"lr_min": "2e-4"}),
        (VaDE, {"lr_min": 5e-4, "finetune_lr_factor": 0.2}),  # above the VaDE phase's 0.2 x 2e-3
    ],
)
def test_bad_floors_are_refused_naming_the_key(cls, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="lr_min"):
        build(cls, lr_schedule="step", **kwargs)


def test_the_vade_mnist_experiment_sets_the_papers_floor_and_the_default_has_none() -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        assert compose(config_name="config", overrides=["experiment=vade_mnist"]).model.lr_min == FLOOR
        assert compose(config_name="config", overrides=["model=vae"]).model.lr_min is None
