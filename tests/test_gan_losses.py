"""GAN losses against direct formulas, the chapter's saturation argument, and the WGAN-GP penalty."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.checks import ConfigError
from genlab.losses.gan_losses import (
    LSGAN,
    WGANGP,
    Hinge,
    Minimax,
    NonSaturating,
    gradient_penalty,
    minimax_generator_loss,
    nonsaturating_generator_loss,
)

F64 = torch.float64


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 1, generator=g, dtype=F64) * 3, torch.randn(64, 1, generator=g, dtype=F64) * 3


def test_minimax_and_nonsaturating_match_the_chapter_formulas(logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    real, fake = logits
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    value = torch.log(d_real).mean() + torch.log(1 - d_fake).mean()  # D ascends this
    for loss in (Minimax(), NonSaturating()):
        torch.testing.assert_close(loss.discriminator_loss(real, fake), -value)
    torch.testing.assert_close(Minimax().generator_loss(fake), torch.log(1 - d_fake).mean())
    torch.testing.assert_close(NonSaturating().generator_loss(fake), -torch.log(d_fake).mean())


def test_hinge_and_lsgan_match_direct_formulas(logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    real, fake = logits
    hinge_d = sum(max(0.0, 1 - r) for r in real.flatten().tolist()) / 64 + sum(
        max(0.0, 1 + f) for f in fake.flatten().tolist()
    ) / 64
    assert Hinge().discriminator_loss(real, fake).item() == pytest.approx(hinge_d)
    assert Hinge().generator_loss(fake).item() == pytest.approx(-fake.mean().item())
    ls_d = 0.5 * sum((r - 1) ** 2 for r in real.flatten().tolist()) / 64 + 0.5 * sum(
        f**2 for f in fake.flatten().tolist()
    ) / 64
    assert LSGAN().discriminator_loss(real, fake).item() == pytest.approx(ls_d)
    ls_g = 0.5 * sum((f - 1) ** 2 for f in fake.flatten().tolist()) / 64
    assert LSGAN().generator_loss(fake).item() == pytest.approx(ls_g)
    assert Hinge().penalty(lambda x: x, real, fake) is None


def test_wasserstein_losses(logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    real, fake = logits
    loss = WGANGP(gp_weight=0.0)
    torch.testing.assert_close(loss.discriminator_loss(real, fake), fake.mean() - real.mean())
    torch.testing.assert_close(loss.generator_loss(fake), -fake.mean())
    assert loss.penalty(lambda x: x, real, fake) is None


@pytest.mark.parametrize("logit", [-1.0, -5.0, -10.0, -20.0, -40.0])
def test_minimax_generator_gradient_vanishes_when_d_rejects_fakes(logit: float) -> None:
    """The chapter's argument: as D(G(z)) -> 0 the minimax gradient -> 0, the non-saturating one -> -1."""
    x = torch.tensor([logit], dtype=F64, requires_grad=True)
    (g_minimax,) = torch.autograd.grad(minimax_generator_loss(x), x)
    (g_nonsat,) = torch.autograd.grad(nonsaturating_generator_loss(x), x)
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = -(1 - sigmoid(l)).
    assert g_minimax.item() == pytest.approx(-_sigmoid(logit), rel=1e-9, abs=0)
    assert g_nonsat.item() == pytest.approx(-(1 - _sigmoid(logit)), rel=1e-9)
    assert abs(g_minimax.item()) < math.exp(logit) * 1.0001
    assert abs(g_nonsat.item()) > 0.26  # at least |-(1 - sigmoid(-1))|


def test_saturation_ratio_grows_without_bound() -> None:
    ratios = []
    for logit in (-2.0, -6.0, -12.0, -24.0):
        x = torch.tensor([logit], dtype=F64, requires_grad=True)
        (a,) = torch.autograd.grad(minimax_generator_loss(x), x)
        (b,) = torch.autograd.grad(nonsaturating_generator_loss(x), x)
        ratios.append((b / a).item())
    assert all(r2 > r1 * 50 for r1, r2 in zip(ratios, ratios[1:]))
    assert ratios[-1] > 1e10


def test_losses_stay_finite_at_extreme_logits() -> None:
    x = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=torch.float32, requires_grad=True)
    for loss in (Minimax(), NonSaturating()):
        for value in (loss.generator_loss(x), loss.discriminator_loss(x, x)):
            (grad,) = torch.autograd.grad(value, x)
            assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_gradient_penalty_of_a_linear_critic_is_known() -> None:
    """f(x) = w.x with ||w|| = 2 has gradient norm 2 everywhere: penalty = lambda (2 - 1)^2."""
    w = torch.tensor([1.2, -1.6], dtype=F64)  # norm 2
    critic = lambda x: (x * w).sum(dim=1, keepdim=True)  # noqa: E731
    real, fake = torch.randn(32, 2, dtype=F64), torch.randn(32, 2, dtype=F64)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(1.0)
    assert WGANGP(gp_weight=10.0).penalty(critic, real, fake).item() == pytest.approx(10.0)


def test_gradient_penalty_uses_interpolates_and_trains_the_critic() -> None:
    """For f(x) = ||x||^2 / 2 the gradient at x_hat is x_hat; with real = fake = a the penalty is (||a|| - 1)^2."""
    a = torch.tensor([[3.0, 4.0]], dtype=F64).repeat(8, 1)
    scale = torch.tensor(1.0, dtype=F64, requires_grad=True)
    critic = lambda x: scale * 0.5 * x.square().sum(dim=1, keepdim=True)  # noqa: E731
    gp = gradient_penalty(critic, a, a.clone())
    assert gp.item() == pytest.approx(16.0)  # (5 - 1)^2
    (d_scale,) = torch.autograd.grad(gp, scale)
    assert d_scale.item() == pytest.approx(2 * (5 - 1) * 5)  # d/ds (5 s - 1)^2 at s = 1
    # Images: the norm is over all pixels of each sample.
    img = torch.full((4, 1, 2, 2), 0.5, dtype=F64)
    gp_img = gradient_penalty(lambda x: 0.5 * x.square().flatten(1).sum(1, keepdim=True), img, img)
    assert gp_img.item() == pytest.approx(0.0)  # ||x_hat|| = sqrt(4 * 0.25) = 1


def test_bad_gp_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="loss.gp_weight"):
        WGANGP(gp_weight=-1.0)
