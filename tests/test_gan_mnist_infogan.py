"""The conv nets' fully connected ``hidden`` layers and DCGAN ``init_std``, and experiment=gan_mnist_infogan: the InfoGAN
MNIST nets of the large GAN studies (google/compare_gan compare_gan/architectures/infogan.py)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from genlab.checks import ConfigError
from genlab.config import check_node
from genlab.losses.gan_losses import NonSaturating
from genlab.nets.conv import ConvDecoder, ConvEncoder
from genlab.train import CONF_DIR

SOURCE_WIDTHS = (
    "model.generator.hidden=[1024]",
    "model.generator.channels=[128,64]",
    "model.discriminator.channels=[64,128]",
    "model.discriminator.hidden=[1024]",
)


def leaves(net: nn.Module) -> list[nn.Module]:
    """The net's modules without children, in forward order (a spectral-norm parametrization counts as its layer)."""
    out = []
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            out.append(m)
        elif not list(m.children()) and not type(m).__module__.startswith("torch.nn.utils.parametriz"):
            out.append(m)
    return out


def describe(net: nn.Module) -> list[tuple]:
    """(type name, widths) per layer: enough to compare a net with a layer table."""
    rows: list[tuple] = []
    for m in leaves(net):
        if isinstance(m, nn.Linear):
            rows.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            rows.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            rows.append((type(m).__name__, m.num_features))
        elif isinstance(m, nn.LeakyReLU):
            rows.append(("LeakyReLU", m.negative_slope))
        elif not isinstance(m, (nn.Identity, nn.Flatten, nn.Unflatten)):
            rows.append((type(m).__name__,))
    return rows


def test_the_preset_is_the_infogan_mnist_nets() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=gan_mnist_infogan", *SOURCE_WIDTHS])
    check_node(OmegaConf.to_container(cfg.model, resolve=True), "model", supplied=("data_shape",))
    torch.manual_seed(0)
    model = instantiate(cfg.model, data_shape=[1, 28, 28], loss=instantiate(cfg.loss))
    # infogan.py: g_fc1 1024 BN, g_fc2 7*7*128 BN, g_dc3 4x4/2 to 64 BN, g_dc4 4x4/2 to 1, sigmoid (ReLU as in the paper)
    assert describe(model.generator) == [
        ("Linear", 64, 1024), ("BatchNorm1d", 1024), ("ReLU",),
        ("Linear", 1024, 7 * 7 * 128), ("BatchNorm2d", 128), ("ReLU",),
        ("ConvTranspose2d", 128, 64, (4, 4), (2, 2)), ("BatchNorm2d", 64), ("ReLU",),
        ("ConvTranspose2d", 64, 1, (4, 4), (2, 2)),
    ]  # fmt: skip
    # d_conv1 4x4/2 to 64 lrelu (no BN), d_conv2 to 128 BN lrelu, d_fc3 1024 BN lrelu, d_fc4 to one logit
    assert describe(model.discriminator) == [
        ("Conv2d", 1, 64, (4, 4), (2, 2)), ("LeakyReLU", 0.2),
        ("Conv2d", 64, 128, (4, 4), (2, 2)), ("BatchNorm2d", 128), ("LeakyReLU", 0.2),
        ("Linear", 7 * 7 * 128, 1024), ("BatchNorm1d", 1024), ("LeakyReLU", 0.2),
        ("Linear", 1024, 1),
    ]  # fmt: skip
    assert model.generator_output == "sigmoid" and isinstance(model.loss, NonSaturating)
    assert model.latent_dim == 64 and model.n_critic == 1 and cfg.data.batch_size == 64
    assert [(o.defaults["lr"], tuple(o.defaults["betas"])) for o in model.configure_optimizers()] == [
        (2e-4, (0.5, 0.999))
    ] * 2
    # N(0, 0.02) weights, zero biases, in every conv and linear layer of both nets
    for net in (model.generator, model.discriminator):
        for m in leaves(net):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                assert not m.bias.any()
                if m.weight.numel() >= 4096:
                    assert m.weight.std().item() == pytest.approx(0.02, rel=0.05), m
    z = torch.randn(3, 64)
    x = model.generate(z)
    assert x.shape == (3, 1, 28, 28)
    torch.testing.assert_close(x, torch.sigmoid(model.generator(z)))  # the preset's sigmoid output, not logits


def test_hidden_layers_follow_the_shape_contract_with_every_fc_norm() -> None:
    for norm, fc_norm in (("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm), ("none", nn.Identity)):
        dec = ConvDecoder((10,), (1, 8, 8), channels=[8, 4], hidden=[32, 16], norm=norm)
        enc = ConvEncoder((1, 8, 8), (3,), channels=[4, 8], hidden=[16], norm=norm)
        assert [type(m) for m in dec.project[:6]] == [nn.Linear, fc_norm, nn.ReLU] * 2
        assert dec.project[3].in_features == 32 and dec.project[6].in_features == 16
        assert isinstance(enc.features[-3], nn.Linear) and isinstance(enc.features[-2], fc_norm)
        assert enc.head.in_features == 16
        assert enc(dec(torch.randn(5, 10))).shape == (5, 3)


def test_without_the_new_options_the_nets_keep_their_parameters() -> None:
    """Checkpoints of runs before ``hidden``/``init_std`` still load: same state keys, PyTorch's default init."""
    enc, dec = ConvEncoder((1, 8, 8), (1,), channels=[4, 8]), ConvDecoder((6,), (1, 8, 8), channels=[8, 4])
    assert list(enc.state_dict()) == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias", "features.4.weight",
        "features.4.bias", "features.4.running_mean", "features.4.running_var", "features.4.num_batches_tracked",
        "head.weight", "head.bias",
    ]  # fmt: skip
    assert list(dec.state_dict())[:2] == ["project.0.weight", "project.0.bias"]
    assert dec.project[0].bias.abs().sum() > 0  # PyTorch's uniform bias init, not zeros


def test_init_std_comes_before_spectral_norm() -> None:
    """The spectral norm's power iteration starts from the N(0, std^2) weight, so the effective weight has norm 1.

    Initialising after spectral norm wrapped the layer would leave its singular vectors those of PyTorch's default
    weight, and the first forward passes would divide by a wrong sigma.
    """
    torch.manual_seed(0)
    enc = ConvEncoder((1, 8, 8), (1,), channels=[4, 8], hidden=[256], norm="none", spectral_norm=True, init_std=0.02)
    fc = enc.features[-3]
    raw = fc.parametrizations.weight.original
    assert raw.std().item() == pytest.approx(0.02, rel=0.05) and not fc.bias.any()
    enc.eval()  # no further power iteration: sigma as estimated when the layer was wrapped
    assert torch.linalg.matrix_norm(fc.weight, ord=2).item() == pytest.approx(1.0, abs=0.02)


def test_bad_hidden_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match="norm='instance'"):
        ConvEncoder((1, 8, 8), (1,), channels=[4, 8], hidden=[16], norm="instance")
    with pytest.raises(ConfigError, match="hidden"):
        ConvDecoder((4,), (1, 8, 8), channels=[8], hidden=[0])
    with pytest.raises(ConfigError, match="init_std"):
        ConvDecoder((4,), (1, 8, 8), channels=[8], init_std=-0.02)
    # instance norm stays valid without fully connected layers
    assert ConvEncoder((1, 8, 8), (1,), channels=[4, 8], norm="instance")(torch.rand(2, 1, 8, 8)).shape == (2, 1)
