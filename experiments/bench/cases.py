"""The bench's training cases and their hand-written baselines: genlab's nets, losses and Adam in plain loops fed by
an index over in-memory tensors (``minimal``) or by ``DataLoader(TensorDataset)`` (``dataloader``)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.losses.distributions import floor_log_var, reparameterize
from genlab.losses.elbo import elbo, kl_standard_normal
from genlab.losses.gan_losses import NonSaturating
from genlab.losses.likelihoods import DecoderLikelihood
from genlab.nets.mlp import MLP

Step = Callable[[Tensor], None]
LOOPS = ("minimal", "dataloader")


def vae_nets(shape: tuple[int, ...], latent_dim: int = 20, hidden: int = 400) -> tuple[nn.Module, nn.Module]:
    """conf/model/vae.yaml's encoder MLP(shape -> 2J) and decoder MLP(J -> shape), built in genlab's order."""
    return (MLP(shape, (2 * latent_dim,), hidden=[hidden], activation="relu"),
            MLP((latent_dim,), shape, hidden=[hidden], activation="relu"))


def vae_loss(encoder: nn.Module, decoder: nn.Module, x: Tensor) -> Tensor:
    """-ELBO batch mean at one sample: -(log p(x|z) - KL(q(z|x) || N(0, I))), z = mean + sigma * eps, Bernoulli p."""
    mean, raw = encoder(x).chunk(2, dim=-1)
    log_var = floor_log_var(raw, -12.0)
    z = reparameterize(mean, log_var, torch.randn_like(mean))
    log_px_z = DecoderLikelihood("bernoulli").log_prob(x.flatten(1), decoder(z).flatten(1))
    return -elbo(log_px_z, kl_standard_normal(mean, log_var)).mean()


def vae_step(shape: tuple[int, ...], device: torch.device, compiled: bool = False) -> Step:
    """One Adam(1e-3) step on the -ELBO per batch (``compiled``: the loss through ``torch.compile``)."""
    encoder, decoder = (net.to(device) for net in vae_nets(shape))
    loss = functools.partial(vae_loss, encoder, decoder)
    loss = torch.compile(loss) if compiled else loss
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)

    def step(x: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss(x).backward()
        opt.step()

    return step


def gan_nets(shape: tuple[int, ...], latent_dim: int, hidden: list[int]) -> tuple[nn.Module, nn.Module]:
    """conf/model/gan.yaml's MLP generator (ReLU) and discriminator (leaky ReLU) with ``hidden`` widths."""
    return (MLP((latent_dim,), shape, hidden=hidden, activation="relu"),
            MLP(shape, (1,), hidden=hidden, activation="leaky_relu"))


def gan_step(shape: tuple[int, ...], device: torch.device, compiled: bool = False, *, latent_dim: int,
             hidden: list[int], sigmoid: bool) -> Step:
    """Per batch one discriminator then one generator Adam(1e-3, betas (0.5, 0.999)) step of the non-saturating
    game, each on fresh noise (genlab's GAN at n_critic=1; ``compiled``: both nets through ``torch.compile``)."""
    loss = NonSaturating()
    g, d = (net.to(device) for net in gan_nets(shape, latent_dim, hidden))
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999)) for net in (g, d))
    g, d = (torch.compile(g), torch.compile(d)) if compiled else (g, d)

    def fake(n: int) -> Tensor:
        out = g(torch.randn(n, latent_dim, device=device))
        return out.sigmoid() if sigmoid else out

    def step(x: Tensor) -> None:
        with torch.no_grad():
            x_fake = fake(len(x))
        opt_d.zero_grad(set_to_none=True)
        loss.discriminator_loss(d(x), d(x_fake)).backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        loss.generator_loss(d(fake(len(x)))).backward()
        opt_g.step()

    return step


def batches(loop: str, x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Endless shuffled batches on ``device``: ``minimal`` indexes ``x`` moved there once (a fresh permutation per
    epoch, the short last batch kept); ``dataloader`` moves each batch of a ``DataLoader(TensorDataset(x, y))``."""
    if loop not in LOOPS:
        raise ValueError(f"loop={loop!r}: expected one of {LOOPS}")
    if loop == "minimal":
        x = x.to(device)
        while True:
            order = torch.randperm(len(x), device=device)
            yield from (x[order[i : i + batch_size]] for i in range(0, len(x), batch_size))
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=batch_size, shuffle=True)
    while True:
        yield from (xb.to(device, non_blocking=True) for xb, _ in loader)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read next counts it (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_rate(loop: str, step: Step, x: Tensor, y: Tensor, batch_size: int, steps: int, warmup: int,
              device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    """Steps per ``clock`` second of ``step`` over ``steps`` batches (fetch included) after ``warmup`` untimed ones."""
    stream = batches(loop, x, y, batch_size, device)
    for _ in range(warmup):
        step(next(stream))
    synchronize(device)
    start = clock()
    for _ in range(steps):
        step(next(stream))
    synchronize(device)
    return steps / (clock() - start)


@dataclass(frozen=True)
class Case:
    """One training case: its ``python -m genlab`` overrides and the baseline step computing the same maths."""

    name: str
    overrides: tuple[str, ...]
    data: str  # "mnist:<binarize>" or "ring8"
    step: Callable[..., Step]  # (data shape, device, compiled) -> one training step on a batch
    batch_size: int
    steps: int
    warmup: int
    optimizer_steps_per_batch: int = 1  # a GAN minibatch takes a D and a G step
    bar_off: bool = False  # genlab is also timed with its progress bar off


CASES = (
    Case("vae", ("model=vae", "data=mnist", "data.binarize=static"), "mnist:static", vae_step, 128, 150, 20),
    Case("gan", ("model=gan", "data=mnist", "model.generator_output=sigmoid", "model.sample_metrics=false"),
         "mnist:none", functools.partial(gan_step, latent_dim=16, hidden=[128, 128, 128], sigmoid=True), 128, 150, 20,
         optimizer_steps_per_batch=2),
    Case("toy_gan", ("model=gan", "data=ring8", "model.latent_dim=2", "model.generator.hidden=[128,128]",
                     "model.discriminator.hidden=[128,128]"),
         "ring8", functools.partial(gan_step, latent_dim=2, hidden=[128, 128], sigmoid=False), 256, 300, 30,
         optimizer_steps_per_batch=2, bar_off=True),
)


def load_mnist(binarize: str, split: str = "train") -> tuple[Tensor, Tensor]:
    """genlab's MNIST ``split`` (x, y) from ``$GENLAB_DATA_DIR/mnist``, binarized as ``data.binarize`` says."""
    from genlab.data.mnist import MNISTDataModule

    return MNISTDataModule(binarize=binarize).split_tensors(split)


def case_data(case: Case) -> tuple[Tensor, Tensor]:
    """The training tensors genlab's run of ``case`` uses (the same split and binarization)."""
    if case.data == "ring8":
        from genlab.data.toy2d import Toy2DDataModule

        return Toy2DDataModule(kind="ring8", n_train=20000, n_val=2000, n_test=2000).train_tensors()
    return load_mnist(case.data.split(":")[1])
