"""The IWAE paper's protocol options: the 59,600/400 split, the output bias from the data, active units on 500 train images."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, write_tiny_mnist
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_vae_model import quiet_trainer

from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.metrics.active_units import count_active_units
from genlab.models.vae import OUTPUT_BIAS_CLIP, VAE
from genlab.nets.mlp import MLP

SHAPE = (1, 8, 8)


def build(**kwargs) -> VAE:
    torch.manual_seed(0)
    net = functools.partial(MLP, hidden=(16,), activation="tanh")
    return VAE(
        SHAPE,
        encoder=net,
        decoder=net,
        optimizer=functools.partial(torch.optim.Adam, lr=0.0),
        latent_dim=3,
        eval_k=2,
        eval_chunk=2,
        **kwargs,
    )


def test_val_size_400_gives_the_papers_split_of_the_training_file(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path, n_train=1000, n_test=10)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=mnist", "data.val_size=400", f"data.root={tmp_path}"])
    dm = instantiate(cfg.data)
    (x_tr, _), (x_val, _) = dm.split_tensors("train"), dm.split_tensors("val")
    assert (len(x_tr), len(x_val)) == (600, 400)  # 60,000 -> 59,600 / 400 on the real file
    rows = {tuple(r) for r in torch.cat([x_tr, x_val]).flatten(1).numpy().round(4).tolist()}
    assert len(rows) == 1000  # disjoint, and together the whole training file


def test_output_bias_from_the_data_makes_the_initial_decoder_output_the_clipped_data_mean(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=64)
    model = build(init_output_bias="data")
    # lr 0: fit runs the setup hook and one step without moving the weights
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=dm)
    x = dm.train_tensors()[0].flatten(1).double()
    mean = x.mean(0).clamp(OUTPUT_BIAS_CLIP, 1 - OUTPUT_BIAS_CLIP)
    assert float(x.mean(0).min()) == 0.0  # digits has always-blank pixels: the clip is exercised
    last = model.decoder.layers[-1]
    np.testing.assert_allclose(torch.sigmoid(last.bias.detach().double()).numpy(), mean.numpy(), rtol=1e-5)
    with torch.no_grad():
        last.weight.zero_()  # the rest of the decoder only adds W h; without it the output is the bias alone
        out = model.decode(torch.randn(5, 3)).flatten(1).double()
    np.testing.assert_allclose(out.numpy(), mean.expand(5, -1).numpy(), rtol=1e-5)
    default = build()
    assert not torch.allclose(torch.sigmoid(default.decoder.layers[-1].bias.double()), mean, atol=0.05)


@pytest.mark.parametrize("kwargs", [{"likelihood": "gaussian"}, {"init_output_bias": "mean"}])
def test_output_bias_option_rejects_what_it_cannot_do(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="init_output_bias"):
        build(**({"init_output_bias": "data"} | kwargs))


def test_count_active_units_on_a_constructed_case() -> None:
    # column variances 0.0225, 0.0025, 0.015625, 0 (population): two above 0.01
    base = torch.tensor([0.0, 1.0]).repeat(250)
    means = torch.stack([0.3 * base, 0.1 * base, 0.25 * base, torch.zeros(500)], dim=1)
    assert count_active_units(means, 0.01) == 2
    assert count_active_units(means, 0.002) == 3


def test_active_units_train_counts_over_the_first_n_training_images_only(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=64)
    model = build(active_units_train=500)
    x = dm.train_tensors()[0]
    var10 = float(x[:500].flatten(1)[:, 10].double().var(correction=0))
    # a linear encoder: mean u (u < 3) reads pixel 10 with weight scales[u]; the log-variances are 0
    model.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 6, bias=False))
    scales = torch.tensor([0.02, 0.5, 1.0]) / var10**0.5  # variances 0.0004, 0.25, 1.0 on those 500 images
    with torch.no_grad():
        model.encoder[1].weight.zero_()
        model.encoder[1].weight[:3, 10] = scales
    fit = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0, limit_test_batches=1)
    fit.fit(model, datamodule=dm)
    (test,) = fit.test(model, datamodule=dm, verbose=False)
    assert test["test/active_units_train"] == 2
    assert count_active_units(model.encode(x[:500]).detach()) == 2
