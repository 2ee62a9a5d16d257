"""PacGAN packing (``model.pack``): shapes, pack=1 is the plain GAN bit for bit, what the packed discriminator sees."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from test_gan_model import trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.data.toy2d import Toy2DDataModule
from genlab.losses.gan_losses import LSGAN, WGANGP, Hinge, Minimax, NonSaturating
from genlab.models.gan import GAN, pack_samples, packed_shape
from genlab.nets.conv import ConvDecoder, ConvEncoder
from genlab.nets.mlp import MLP

ADAM = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.9))
LOSSES = [Minimax(), NonSaturating(), WGANGP(gp_weight=1.0), Hinge(), LSGAN()]


def gan(pack: int = 1, loss=None, hidden=(16, 16), g_batch_norm: bool = False, **kwargs) -> GAN:
    return GAN(
        (2,),
        generator=functools.partial(MLP, hidden=list(hidden), batch_norm=g_batch_norm),
        discriminator=functools.partial(MLP, hidden=list(hidden), activation="leaky_relu"),
        loss=loss or NonSaturating(),
        optimizer_g=ADAM,
        optimizer_d=ADAM,
        **{"latent_dim": 4, "eval_samples": 500, "pack": pack, **kwargs},
    )


# -- shapes -------------------------------------------------------------------------------------------
def test_pack_samples_concatenates_consecutive_samples() -> None:
    x = torch.arange(12.0).view(6, 2)
    packed = pack_samples(x, 3)
    assert packed.shape == (2, 6)
    torch.testing.assert_close(packed[1], torch.cat([x[3], x[4], x[5]]))
    # A partial last batch drops its remainder; fewer samples than one pack repeat to fill it.
    assert torch.equal(pack_samples(x[:5], 2), x[:4].reshape(2, 4))
    assert torch.equal(pack_samples(x[:3], 4), torch.cat([x[0], x[1], x[2], x[0]])[None])
    assert pack_samples(x, 1) is x
    # Images stack as channels: row 0 holds image 0 in channel 0 and image 1 in channel 1.
    images = torch.randn(4, 1, 8, 8)
    stacked = pack_samples(images, 2)
    assert stacked.shape == (2, 2, 8, 8)
    assert torch.equal(stacked[0, 1], images[1, 0]) and torch.equal(stacked[1, 0], images[2, 0])
    assert packed_shape((2,), 3) == (6,) and packed_shape((1, 28, 28), 4) == (4, 28, 28)


@pytest.mark.parametrize("pack", [1, 2, 4])
def test_discriminator_input_is_pack_times_wider(pack: int) -> None:
    model = gan(pack)
    first = model.discriminator.layers[0]
    assert isinstance(first, nn.Linear) and first.in_features == 2 * pack
    assert model.discriminate(torch.randn(8, 2)).shape == (8 // pack, 1)
    # The generator and its samples do not change with packing.
    assert model.generator.layers[0].in_features == 4 and model.sample(7).shape == (7, 2)


def test_conv_discriminator_packs_images_as_channels() -> None:
    model = GAN(
        (1, 8, 8),
        generator=functools.partial(ConvDecoder, channels=[16, 8]),
        discriminator=functools.partial(ConvEncoder, channels=[8, 16]),
        loss=Hinge(),
        optimizer_g=ADAM,
        optimizer_d=ADAM,
        latent_dim=8,
        generator_output="sigmoid",
        pack=3,
    )
    first_conv = next(m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 3
    assert model.discriminate(model.sample(6)).shape == (2, 1)


# -- pack=1 is today's GAN ------------------------------------------------------------------------------
def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in net.parameters()])


def unpacked_reference(generator: nn.Module, discriminator: nn.Module, loss, n_critic: int,
                       steps: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The plain GAN, written out with no packing anywhere: per minibatch, ``n_critic`` discriminator steps on real
    x and G(z) made without a graph (plus the loss's penalty), then one generator step; each an Adam step after
    zeroing the gradients. ``steps`` holds each minibatch and the global RNG state it started from, so that z (and
    WGAN-GP's interpolation weights) are the draws the module made, in the order this loop makes them."""
    opt_d, opt_g = ADAM(discriminator.parameters()), ADAM(generator.parameters())
    for x, rng in steps:
        torch.random.set_rng_state(rng)
        for _ in range(n_critic):
            with torch.no_grad():
                fake = generator(torch.randn(len(x), 4))
            d_loss = loss.discriminator_loss(discriminator(x), discriminator(fake))
            penalty = loss.penalty(discriminator, x, fake)
            d_loss = d_loss if penalty is None else d_loss + penalty
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = loss.generator_loss(discriminator(generator(torch.randn(len(x), 4))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()


@pytest.mark.parametrize("loss", [NonSaturating(), WGANGP(gp_weight=1.0), Hinge()], ids=repr)
def test_pack_1_trains_exactly_as_the_unpacked_gan(loss, tmp_path: Path) -> None:
    """4 batches x (2 D steps + 1 G step) of the module at pack=1 end at the weights of the plain loop above, bit for
    bit (float64 and a batch-norm generator, as the runs had before packing existed)."""
    L.seed_everything(0, verbose=False)
    model = gan(1, loss=loss, g_batch_norm=True, n_critic=2).double()
    generator, discriminator = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    train_step = model.train_step

    def recorded(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        steps.append((batch[0].clone(), torch.random.get_rng_state()))
        train_step(batch)

    model.train_step = recorded
    dm = Toy2DDataModule(kind="ring8", n_train=256, n_val=64, n_test=64, batch_size=32)
    trainer(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=0, precision="64-true").fit(
        model, datamodule=dm
    )
    assert len(steps) == 4 and steps[0][0].dtype == torch.float64
    initial = flat(generator), flat(discriminator)
    torch.set_default_dtype(torch.float64)  # what precision="64-true" sets while training; conftest restores it
    unpacked_reference(generator.train(), discriminator.train(), loss, 2, steps)
    assert torch.equal(flat(model.generator), flat(generator))
    assert torch.equal(flat(model.discriminator), flat(discriminator))
    # the premise: both nets moved, so the equality is of 12 updates and not of two untouched copies
    assert not torch.equal(flat(generator), initial[0]) and not torch.equal(flat(discriminator), initial[1])


# -- what the packed discriminator sees -------------------------------------------------------------------
REAL_OFFSET = 1000.0  # real samples live far from anything the small generator can produce


def tagged_loader(n: int = 96, batch_size: int = 24) -> DataLoader:
    """Real samples (1000 + i, -1000 - i): each identifiable by i, all beyond the generator's reach."""
    i = torch.arange(n, dtype=torch.float32)
    x = torch.stack([REAL_OFFSET + i, -REAL_OFFSET - i], 1)
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=batch_size, shuffle=True)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_packed_discriminator_sees_m_distinct_samples_of_one_kind(loss, tmp_path: Path) -> None:
    pack, batch, n_critic = 3, 24, 2
    L.seed_everything(0, verbose=False)
    model = gan(pack, loss=loss, n_critic=n_critic)
    inputs: list[torch.Tensor] = []
    model.discriminator.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach().clone()))
    trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0).fit(
        model, train_dataloaders=tagged_loader(batch_size=batch)
    )
    per_d_step = 3 if isinstance(loss, WGANGP) else 2  # real, fake (, interpolates for the penalty)
    assert len(inputs) == 2 * (n_critic * per_d_step + 1)
    for step in range(2):
        calls = inputs[step * (n_critic * per_d_step + 1) : (step + 1) * (n_critic * per_d_step + 1)]
        for k in range(n_critic):
            real, fake, *interp = calls[k * per_d_step : (k + 1) * per_d_step]
            assert real.shape == fake.shape == (batch // pack, 2 * pack)
            samples = real.view(-1, pack, 2)
            # Real rows hold only real samples: the whole batch, each sample once, m different ones per row.
            assert (samples[..., 0] >= REAL_OFFSET).all()
            ids = samples[..., 0] - REAL_OFFSET
            assert len(set(ids.flatten().tolist())) == batch
            assert all(len(set(row.tolist())) == pack for row in ids)
            # Fake rows hold only generated samples, m different ones per row.
            fakes = fake.view(-1, pack, 2)
            assert (fakes.abs() < REAL_OFFSET / 10).all()
            assert all(len({tuple(s.tolist()) for s in row}) == pack for row in fakes)
            if interp:
                # WGAN-GP's interpolates: one e per packed row, e * real_row + (1 - e) * fake_row.
                (x_hat,) = interp
                e = (x_hat - fake) / (real - fake)
                torch.testing.assert_close(e, e[:, :1].expand_as(e), rtol=1e-4, atol=1e-4)
                assert ((e >= 0) & (e <= 1)).all() and e[:, 0].std() > 0
        g_input = calls[-1].view(-1, pack, 2)  # the generator step judges fresh fakes only
        assert g_input.shape == (batch // pack, pack, 2) and (g_input.abs() < REAL_OFFSET / 10).all()


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_every_loss_trains_with_packing_and_n_critic(loss, tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = gan(2, loss=loss, n_critic=3)
    dm = Toy2DDataModule(kind="ring8", n_train=128, n_val=64, n_test=64, batch_size=32)
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    before = flat(model.discriminator)
    t.fit(model, datamodule=dm)
    opt_d, opt_g = t.optimizers
    assert {int(s["step"]) for s in opt_d.state.values()} == {9}
    assert {int(s["step"]) for s in opt_g.state.values()} == {3}
    assert not torch.equal(flat(model.discriminator), before)
    metrics = t.callback_metrics
    assert all(torch.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss", "val/d_loss", "val/mode_kl"))
    assert ("train/penalty" in metrics) == isinstance(loss, WGANGP)


def test_mode_metrics_do_not_depend_on_packing(tmp_path: Path) -> None:
    """Same generator weights, pack 1 vs 3: identical modes / hq / KL, different discriminator losses."""
    dm = Toy2DDataModule(kind="ring8", n_train=128, n_val=96, n_test=96, batch_size=24)
    plain, packed = gan(1), gan(3)
    packed.generator.load_state_dict(plain.generator.state_dict())
    results = []
    for model in (plain, packed):
        t = trainer(tmp_path, limit_val_batches=1)
        t.validate(model, datamodule=dm, verbose=False)
        results.append({k: v.clone() for k, v in t.callback_metrics.items()})
    for key in ("val/modes", "val/hq", "val/mode_kl"):
        assert torch.equal(results[0][key], results[1][key]), key
    assert not torch.equal(results[0]["val/d_loss"], results[1]["val/d_loss"])


def test_batch_size_not_a_multiple_of_pack_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.batch_size=32 is not accepted with model.pack=3"):
        trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(
            gan(3), datamodule=Toy2DDataModule(kind="ring8", n_train=64, n_val=32, n_test=32, batch_size=32)
        )
    with pytest.raises(ConfigError, match="pack=0"):
        gan(0)


def test_conv_gan_trains_packed_on_digits(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=32)
    model = GAN(
        dm.data_shape,
        generator=functools.partial(ConvDecoder, channels=[16, 8]),
        discriminator=functools.partial(ConvEncoder, channels=[8, 16]),
        loss=WGANGP(gp_weight=1.0),
        optimizer_g=ADAM,
        optimizer_d=ADAM,
        latent_dim=8,
        generator_output="sigmoid",
        pack=2,
        sample_metrics=False,
    )
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    t.fit(model, datamodule=dm)
    assert torch.isfinite(t.callback_metrics["train/penalty"]) and torch.isfinite(t.callback_metrics["val/loss"])


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
def test_a_last_batch_shorter_than_one_pack_still_trains(tmp_path: Path) -> None:
    x = torch.randn(25, 2)  # batches of 24 and 1 with pack 3
    loader = DataLoader(TensorDataset(x, torch.zeros(25, dtype=torch.long)), batch_size=24)
    model = gan(3)
    t = trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    t.fit(model, train_dataloaders=loader)
    assert {int(s["step"]) for s in t.optimizers[1].state.values()} == {2}
