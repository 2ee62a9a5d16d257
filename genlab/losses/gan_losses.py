"""GAN losses from discriminator logits: the chapter's minimax and non-saturating games, WGAN-GP, hinge, LSGAN.

Notation: ``real`` / ``fake`` are the discriminator's raw outputs ("logits" ``l``) on data and on generated
samples; for the two log-loss games ``D(x) = sigmoid(l)``. Every formula uses ``softplus`` so that it stays
finite and keeps its gradient for any logit: ``-log sigmoid(l) = softplus(-l)`` and
``-log(1 - sigmoid(l)) = softplus(l)``. Each loss is a mean over the batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.accelerator import autocast_off
from genlab.checks import positive

Critic = Callable[[Tensor], Tensor]


# -- pure formulas ------------------------------------------------------------------------------
def bce_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """-E[log D(x)] - E[log(1 - D(G(z)))] = E[softplus(-l_real)] + E[softplus(l_fake)] (D ascends the value)."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_generator_loss(fake: Tensor) -> Tensor:
    """E[log(1 - D(G(z)))] = -E[softplus(l_fake)], minimised by G exactly as the chapter writes it."""
    return -F.softplus(fake).mean()


def nonsaturating_generator_loss(fake: Tensor) -> Tensor:
    """-E[log D(G(z))] = E[softplus(-l_fake)]: the chapter's modification, whose gradient survives D(G(z)) -> 0."""
    return F.softplus(-fake).mean()


def wasserstein_critic_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E[f(G(z))] - E[f(x)]: the negated Kantorovich-Rubinstein estimate the critic minimises."""
    return fake.mean() - real.mean()


def wasserstein_generator_loss(fake: Tensor) -> Tensor:
    """-E[f(G(z))] (also the hinge generator loss)."""
    return -fake.mean()


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """E[(||grad f(x_hat)||_2 - 1)^2] at x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per sample (Gulrajani et al. 2017).

    Differentiable w.r.t. the critic's parameters (``create_graph``) so that it can be minimised. Computed in
    float32 under mixed precision: under float16 autocast the input gradient runs through float16 layers without
    the GradScaler's scaling, and small gradients underflow to 0 (PyTorch's AMP notes scale this call by hand).
    """
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    dtype = torch.promote_types(real.dtype, torch.float32)  # the fakes may come out of autocast in 16 bits
    eps = torch.rand(eps_shape, device=real.device, dtype=dtype, generator=generator)
    with autocast_off(real.device):
        x_hat = (eps * real.detach().to(dtype) + (1 - eps) * fake.detach().to(dtype)).requires_grad_(True)
        out = critic(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E[relu(1 - l_real)] + E[relu(1 + l_fake)] (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def lsgan_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """1/2 E[(l_real - 1)^2] + 1/2 E[l_fake^2]: least squares with targets b=1 (real), a=0 (fake) (Mao et al. 2017)."""
    return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()


def lsgan_generator_loss(fake: Tensor) -> Tensor:
    """1/2 E[(l_fake - 1)^2]: G pulls its samples' outputs to the real target c=1."""
    return 0.5 * (fake - 1).square().mean()


# -- the ``loss`` config group: one small class per variant --------------------------------------
class GANLoss(ABC):
    """A GAN objective: the discriminator's loss, an optional penalty that needs the critic, the generator's loss."""

    name: str = "gan"

    @abstractmethod
    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """The loss the discriminator minimises, from its outputs on real and generated batches."""

    @abstractmethod
    def generator_loss(self, fake: Tensor) -> Tensor:
        """The loss the generator minimises, from the discriminator's outputs on generated samples."""

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor | None:
        """A regulariser added to the discriminator loss that needs the critic itself; None when there is none."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LogLossGame(GANLoss, ABC):
    """The chapter's discriminator: D(x) = sigmoid(logit) maximises E[log D(x)] + E[log(1 - D(G(z)))]."""

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return bce_discriminator_loss(real, fake)


class Minimax(LogLossGame):
    """The chapter's game as written: G minimises log(1 - D(G(z)))."""

    name = "minimax"

    def generator_loss(self, fake: Tensor) -> Tensor:
        return minimax_generator_loss(fake)


class NonSaturating(LogLossGame):
    """The chapter's modification: G minimises -log D(G(z))."""

    name = "nonsaturating"

    def generator_loss(self, fake: Tensor) -> Tensor:
        return nonsaturating_generator_loss(fake)


class WGANGP(GANLoss):
    """Wasserstein critic with gradient penalty: E[f(G(z))] - E[f(x)] + gp_weight * E[(||grad f(x_hat)|| - 1)^2]."""

    name = "wgan_gp"

    def __init__(self, gp_weight: float = 10.0) -> None:
        self.gp_weight = float(positive("loss.gp_weight", gp_weight, allow_zero=True))

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return wasserstein_critic_loss(real, fake)

    def generator_loss(self, fake: Tensor) -> Tensor:
        return wasserstein_generator_loss(fake)

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor | None:
        if self.gp_weight == 0:
            return None
        return self.gp_weight * gradient_penalty(critic, real, fake)

    def __repr__(self) -> str:
        return f"WGANGP(gp_weight={self.gp_weight})"


class Hinge(GANLoss):
    """Hinge loss: D minimises E[relu(1 - l_real)] + E[relu(1 + l_fake)], G minimises -E[l_fake]."""

    name = "hinge"

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return hinge_discriminator_loss(real, fake)

    def generator_loss(self, fake: Tensor) -> Tensor:
        return wasserstein_generator_loss(fake)


class LSGAN(GANLoss):
    """Least-squares GAN with the 0-1 coding (a=0, b=1, c=1) on the raw discriminator output."""

    name = "lsgan"

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return lsgan_discriminator_loss(real, fake)

    def generator_loss(self, fake: Tensor) -> Tensor:
        return lsgan_generator_loss(fake)
