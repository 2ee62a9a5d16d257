"""The fast NLL evaluation (chunked, multi-threaded) equals a straightforward per-image float64 reference."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from genlab.checks import ConfigError
from genlab.metrics.likelihood import importance_weighted_log_likelihood
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP

SHAPE = (1, 4, 4)
K, CHUNK = 37, 8  # four full chunks and a short one


def tiny_vae() -> VAE:
    torch.manual_seed(0)
    net = functools.partial(MLP, hidden=(8,), activation="relu")
    return VAE(SHAPE, encoder=net, decoder=net, latent_dim=3).eval()


def images(n: int = 5) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *SHAPE), 0.4), generator=torch.Generator().manual_seed(1))


def reference_log_px(model: VAE, x: torch.Tensor, seed: int) -> torch.Tensor:
    """log (1/k) sum_i p(x, z_i)/q(z_i|x), one image and one sample at a time in float64, from the same noise."""
    torch.manual_seed(seed)
    # the noise stream of the evaluation: chunk-sized draws of (n, B, J), in order
    eps = torch.cat([torch.randn(min(CHUNK, K - s), len(x), 3) for s in range(0, K, CHUNK)]).double()
    m = model.double()
    out = []
    with torch.no_grad():
        for b in range(len(x)):
            xb = x[b : b + 1].double()
            mean, log_var = m.posterior(xb)
            sigma = torch.exp(0.5 * log_var[0])
            log_w = []
            for i in range(K):
                z = mean[0] + sigma * eps[i, b]
                logits = m.decoder(z[None]).flatten()
                log_px_z = (xb.flatten() * logits - torch.nn.functional.softplus(logits)).sum()
                log_pz = (-0.5 * (math.log(2 * math.pi) + z**2)).sum()
                log_qz = (-0.5 * (math.log(2 * math.pi) + log_var[0] + eps[i, b] ** 2)).sum()
                log_w.append(log_px_z + log_pz - log_qz)
            out.append(torch.logsumexp(torch.stack(log_w), 0) - math.log(K))
    model.float()
    return torch.stack(out).float()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_chunked_threaded_estimate_equals_the_per_image_reference(workers: int) -> None:
    model, x = tiny_vae(), images()
    expected = reference_log_px(model, x, seed=7)
    torch.manual_seed(7)
    got = model.log_marginal_likelihood(x, K, CHUNK, workers=workers)
    # a dropped or repeated chunk, a merge other than logaddexp, or noise drawn out of order moves it by > 1e-2
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # negative control: another seed's noise is a different estimate at this k (what the tolerance must exclude)
    torch.manual_seed(8)
    assert (model.log_marginal_likelihood(x, K, CHUNK, workers=workers) - expected).abs().max() > 1e-2


def test_workers_leave_the_intra_op_thread_count_as_it_was() -> None:
    model, x = tiny_vae(), images()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.log_marginal_likelihood(x, K, CHUNK, workers=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_chunks_merge_to_the_one_shot_log_mean_exp() -> None:
    log_w = torch.randn(23, 4, generator=torch.Generator().manual_seed(3)) * 30  # spread: needs a stable merge
    draws = iter(log_w.split(5))
    got = importance_weighted_log_likelihood(lambda w: w, lambda n: next(draws), k=23, chunk=5, workers=2)
    torch.testing.assert_close(got, torch.logsumexp(log_w, 0) - math.log(23))


@pytest.mark.parametrize("key, kwargs", [("k", {"k": 0}), ("chunk", {"chunk": 0}), ("workers", {"workers": 0})])
def test_bad_sizes_name_the_key(key: str, kwargs: dict[str, int]) -> None:
    args = {"k": 4, "chunk": 2, "workers": 1} | kwargs
    with pytest.raises(ConfigError, match=key):
        importance_weighted_log_likelihood(lambda w: w, lambda n: torch.zeros(n, 1), **args)
