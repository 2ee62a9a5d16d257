"""The hand-written baselines of the speed benchmark: the same nets, losses and Adam as genlab's models, in plain loops.

Two loops per model, as a user writes them by hand: ``minimal`` (one shuffled index per epoch over the in-memory
tensors) and ``dataloader`` (``DataLoader(TensorDataset(x, y), shuffle=True)``). The maths is genlab's own: the nets
are :class:`genlab.nets.mlp.MLP`, the VAE loss is built from :mod:`genlab.losses` exactly as
:meth:`genlab.models.vae.VAE.objective_terms` builds it at k=1, and the GAN uses the configured
:class:`genlab.losses.gan_losses.GANLoss` with one discriminator and one generator step per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.losses.distributions import floor_log_var, reparameterize
from genlab.losses.elbo import elbo, kl_standard_normal
from genlab.losses.gan_losses import GANLoss, NonSaturating
from genlab.losses.likelihoods import DecoderLikelihood
from genlab.nets.mlp import MLP

Step = Callable[[Tensor], None]
LOOPS = ("minimal", "dataloader")


@dataclass
class VAEParts:
    """The 784-400-20 MLP VAE of ``conf/model/vae.yaml``: encoder to (mean, raw log-variance), decoder to logits."""

    encoder: nn.Module
    decoder: nn.Module
    likelihood: DecoderLikelihood
    latent_dim: int
    encoder_min_log_var: float = -12.0

    def to(self, device: torch.device | str) -> VAEParts:
        self.encoder.to(device)
        self.decoder.to(device)
        return self

    def loss(self, x: Tensor) -> Tensor:
        """-ELBO batch mean at one sample: -(log p(x|z) - KL(q(z|x) || N(0, I))), z = mean + sigma * eps."""
        mean, raw = self.encoder(x).chunk(2, dim=-1)
        log_var = floor_log_var(raw, self.encoder_min_log_var)
        z = reparameterize(mean, log_var, torch.randn_like(mean))
        log_px_z = self.likelihood.log_prob(x.flatten(1), self.decoder(z).flatten(1))
        return -elbo(log_px_z, kl_standard_normal(mean, log_var)).mean()


def make_vae(data_shape: tuple[int, ...], latent_dim: int = 20, hidden: int = 400) -> VAEParts:
    """Encoder MLP(data_shape -> 2J) and decoder MLP(J -> data_shape), built in the order genlab's VAE builds them."""
    encoder = MLP(data_shape, (2 * latent_dim,), hidden=[hidden], activation="relu")
    decoder = MLP((latent_dim,), data_shape, hidden=[hidden], activation="relu")
    return VAEParts(encoder, decoder, DecoderLikelihood("bernoulli"), latent_dim)


def vae_step(parts: VAEParts, lr: float = 1e-3) -> Step:
    """One Adam step on the -ELBO per batch."""
    params = [*parts.encoder.parameters(), *parts.decoder.parameters()]
    opt = torch.optim.Adam(params, lr=lr)

    def step(x: Tensor) -> None:
        loss = parts.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


@dataclass
class GANParts:
    """Generator MLP(latent -> data_shape) and discriminator MLP(data_shape -> 1), as genlab's GAN builds them."""

    generator: nn.Module
    discriminator: nn.Module
    loss: GANLoss
    latent_dim: int
    sigmoid_output: bool = False
    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> GANParts:
        self.device = torch.device(device)
        self.generator.to(device)
        self.discriminator.to(device)
        return self

    def generate(self, n: int) -> Tensor:
        out = self.generator(torch.randn(n, self.latent_dim, device=self.device))
        return out.sigmoid() if self.sigmoid_output else out


def make_gan(
    data_shape: tuple[int, ...], latent_dim: int, hidden: list[int], sigmoid_output: bool, loss: GANLoss | None = None
) -> GANParts:
    """The MLP GAN of ``conf/model/gan.yaml`` (ReLU generator, leaky-ReLU discriminator) with ``hidden`` widths."""
    generator = MLP((latent_dim,), data_shape, hidden=hidden, activation="relu")
    discriminator = MLP(data_shape, (1,), hidden=hidden, activation="leaky_relu")
    return GANParts(generator, discriminator, loss or NonSaturating(), latent_dim, sigmoid_output)


def gan_step(parts: GANParts, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999)) -> Step:
    """One discriminator step then one generator step per real batch, each on fresh noise (as genlab at n_critic=1)."""
    opt_d = torch.optim.Adam(parts.discriminator.parameters(), lr=lr, betas=betas)
    opt_g = torch.optim.Adam(parts.generator.parameters(), lr=lr, betas=betas)

    def step(x: Tensor) -> None:
        m = x.shape[0]
        with torch.no_grad():
            fake = parts.generate(m)
        d_loss = parts.loss.discriminator_loss(parts.discriminator(x), parts.discriminator(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = parts.loss.generator_loss(parts.discriminator(parts.generate(m)))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    return step


def minimal_batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Endless shuffled batches of the in-memory ``x``: a fresh permutation per epoch, the last short batch kept."""
    while True:
        order = torch.randperm(len(x), device=x.device)
        for start in range(0, len(x), batch_size):
            yield x[order[start : start + batch_size]]


def dataloader_batches(x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Endless batches from a standard ``DataLoader(TensorDataset(x, y), shuffle=True)`` with no workers, each
    moved to ``device`` (the data stay on the CPU, as a DataLoader user keeps them)."""
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=batch_size, shuffle=True)
    while True:
        for xb, _ in loader:
            yield xb.to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Step, batches: Iterator[Tensor], steps: int, warmup: int, device: torch.device) -> float:
    """Steps per second over ``steps`` steps (data fetch included) after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(next(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    synchronize(device)
    return steps / (time.perf_counter() - start)


def run_loop(loop: str, step: Step, x: Tensor, y: Tensor, batch_size: int, steps: int, warmup: int,
             device: torch.device | str = "cpu") -> float:
    """Steps per second of ``step`` (its nets already on ``device``) fed by the ``minimal`` loop (``x`` moved to
    ``device`` once) or the ``dataloader`` loop (each batch moved)."""
    if loop not in LOOPS:
        raise ValueError(f"loop={loop!r}: expected one of {LOOPS}")
    device = torch.device(device)
    batches = (minimal_batches(x.to(device), batch_size) if loop == "minimal"
               else dataloader_batches(x, y, batch_size, device))
    return time_steps(step, batches, steps, warmup, device)
