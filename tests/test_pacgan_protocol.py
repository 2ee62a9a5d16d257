"""The PacGAN 2-D protocol's parts: the maxout layer, N(0, std^2) init, the PacGAN ring/grid data and presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from genlab.checks import ConfigError
from genlab.config import product  # noqa: F401 - registers ${mul:...}, as `python -m genlab` does at start
from genlab.data.toy2d import Toy2DDataModule
from genlab.nets.mlp import MLP, Maxout

REPO = Path(__file__).resolve().parent.parent


# -- maxout and init --------------------------------------------------------------------------------------
def test_maxout_is_the_max_over_each_units_pieces() -> None:
    torch.manual_seed(0)
    layer = Maxout(3, 4, pieces=5)
    x = torch.randn(7, 3)
    w, b = layer.linear.weight, layer.linear.bias  # (5 * 4, 3): piece k of unit j is row 4k + j
    expected = torch.stack(
        [torch.stack([x @ w[4 * k + j] + b[4 * k + j] for k in range(5)], 1).max(1).values for j in range(4)], 1
    )
    torch.testing.assert_close(layer(x), expected)
    # Each unit's gradient flows to the winning piece only.
    layer(x[:1]).sum().backward()
    assert int((w.grad.abs().sum(1) > 0).sum()) == 4


def test_mlp_with_maxout_hidden_layers_has_the_reference_parameter_count() -> None:
    # PacGAN's discriminator for packing 2: 4 -> 3 maxout layers of 200 units x 5 pieces -> 1.
    net = MLP((4,), (1,), hidden=[200, 200, 200], activation=None, maxout_pieces=5)
    assert sum(p.numel() for p in net.parameters()) == (4 * 1000 + 1000) + 2 * (200 * 1000 + 1000) + 201
    assert net(torch.randn(3, 4)).shape == (3, 1)
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in net.modules())
    with pytest.raises(ConfigError, match="activation='relu' is not accepted with maxout_pieces=5"):
        MLP((2,), (1,), hidden=[8], activation="relu", maxout_pieces=5)
    with pytest.raises(ConfigError, match="maxout_pieces"):
        MLP((2,), (1,), hidden=[8], activation=None, maxout_pieces=0)


def test_init_std_draws_linear_weights_from_a_normal_and_zero_biases() -> None:
    torch.manual_seed(0)
    net = MLP((400,), (2,), hidden=[400, 400], batch_norm=True, init_std=0.02, hidden_bias=False)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    # 320,800 draws: the sample std is within 1% of 0.02 and the mean within 5 standard errors of 0.
    assert weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert abs(weights.mean().item()) < 5 * 0.02 / math.sqrt(weights.numel())
    assert [m.bias is None for m in linears] == [True, True, False]  # hidden layers without bias, output with
    assert torch.equal(linears[-1].bias, torch.zeros(2))
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    assert all(torch.equal(m.weight, torch.ones(400)) and torch.equal(m.bias, torch.zeros(400)) for m in bn)
    # PyTorch's default init (uniform, bound 1/sqrt(fan_in)) is kept without init_std: std 1/sqrt(3 * 400).
    default = MLP((400,), (2,), hidden=[400])
    assert default.layers[0].weight.std().item() == pytest.approx(1 / math.sqrt(1200), rel=0.02)
    with pytest.raises(ConfigError, match="init_std"):
        MLP((2,), (1,), init_std=0)


# -- data --------------------------------------------------------------------------------------------------
def test_scale_sets_the_ring_radius_and_the_grid_spacing() -> None:
    ring = Toy2DDataModule(kind="ring8", scale=1.0, noise=0.01, n_train=4000, n_val=10, n_test=10)
    torch.testing.assert_close(ring.centers.norm(dim=1), torch.ones(8))
    ring.setup("fit")
    x, y = ring.train_tensors()
    offsets = x - ring.centers[y]
    assert offsets.std().item() == pytest.approx(0.01, rel=0.05)
    grid = Toy2DDataModule(kind="grid25", scale=2.0)
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert Toy2DDataModule(kind="ring8").centers.norm(dim=1)[0].item() == pytest.approx(2.0)  # VEEGAN default
    with pytest.raises(ConfigError, match="scale"):
        Toy2DDataModule(kind="moons", scale=2.0)
    with pytest.raises(ConfigError, match="scale"):
        Toy2DDataModule(kind="ring8", scale=-1.0)


# -- presets -----------------------------------------------------------------------------------------------
def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    ("preset", "radius_or_spacing", "std", "modes"), [("ring", 1.0, 0.01, 8), ("grid", 2.0, 0.05, 25)]
)
def test_pacgan_presets_follow_the_reference_code(preset, radius_or_spacing, std, modes) -> None:
    """Numbers from fjxmlzn/PacGAN synthetic_data_experiments/2D{Ring,Grid}_GAN&PacGAN/{config,pacgan_task}.py."""
    cfg = composed([f"experiment=pacgan_{preset}", "logger=none"])
    assert (cfg.data.n_train, cfg.data.batch_size, cfg.data.noise, cfg.data.scale) == (
        100000,
        100,
        std,
        radius_or_spacing,
    )
    assert cfg.trainer.max_epochs == 400 and cfg.model.pack == 1 and cfg.model.latent_dim == 2
    assert cfg.loss._target_.endswith("NonSaturating")
    for opt in (cfg.model.optimizer_g, cfg.model.optimizer_d):
        assert opt.lr == 1e-4 and list(opt.betas) == [0.8, 0.999]
    assert (cfg.model.eval_samples, cfg.model.mode_n_std, cfg.model.mode_min_count) == (2500, 3.0, 1)
    dm = instantiate(cfg.data)
    assert len(dm.centers) == modes and dm.std == std
    model = instantiate(cfg.model, data_shape=[2], loss=instantiate(cfg.loss))
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    # Generator 2 -> 4 x (400, no bias, batch norm, ReLU) -> 2; discriminator 2 -> 3 x maxout(200 x 5) -> 1.
    assert count(model.generator) == 2 * 400 + 3 * 400 * 400 + 4 * 2 * 400 + 400 * 2 + 2
    assert count(model.discriminator) == (2 * 1000 + 1000) + 2 * (200 * 1000 + 1000) + 201
    assert model.generator.layers[0].weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("preset", ["ring", "grid"])
@pytest.mark.parametrize("pack", [1, 2, 3, 4])
def test_model_pack_alone_gives_pacgan_m_as_the_paper_runs_it(preset: str, pack: int) -> None:
    """PacGAN-m: 100 packed discriminator inputs per generator step and 400,000 generator steps, from one key."""
    cfg = composed([f"experiment=pacgan_{preset}", f"model.pack={pack}"])
    batch, epochs = cfg.data.batch_size, cfg.trainer.max_epochs
    assert batch == 100 * pack and batch // cfg.model.pack == 100 and cfg.model.n_critic == 1
    steps_per_epoch = math.ceil(cfg.data.n_train / batch)  # the loader keeps a short last batch
    assert epochs * steps_per_epoch == {1: 400_000, 2: 400_000, 3: 400_800, 4: 400_000}[pack]
    assert cfg.trainer.check_val_every_n_epoch * steps_per_epoch in (10_000, 10_020)  # the learning curve's points
    model = instantiate(cfg.model, data_shape=[2], loss=instantiate(cfg.loss))
    assert model.discriminator.layers[0].linear.in_features == 2 * pack
    assert model.discriminate(torch.randn(batch, 2)).shape == (100, 1)
    # An explicit key still wins over the derived one.
    assert composed([f"experiment=pacgan_{preset}", f"model.pack={pack}", "trainer.max_epochs=7"]).trainer.max_epochs == 7
