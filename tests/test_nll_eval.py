"""The fast NLL evaluation (chunked, multi-threaded) equals a straightforward per-image float64 reference."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab.checks import ConfigError
from genlab.losses.distributions import reparameterize
from genlab.metrics.likelihood import eval_matmuls, importance_weighted_log_likelihood
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP

SHAPE = (1, 4, 4)
K, CHUNK = 37, 8  # four full chunks and a short one


def tiny_vae(eval_precision: str = "32") -> VAE:
    torch.manual_seed(0)
    net = functools.partial(MLP, hidden=(8,), activation="relu")
    return VAE(SHAPE, encoder=net, decoder=net, latent_dim=3, eval_precision=eval_precision).eval()


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


def sharp_vae(eval_precision: str) -> VAE:
    """A tiny VAE whose decoder logits reach |l| ~ 7 through the output bias (as Burda et al.'s data-initialised
    bias does on MNIST's border pixels): a bias rounded to bf16 would move each logit by up to 7 * 2^-9."""
    model = tiny_vae(eval_precision)
    layer = model.decoder.layers[-1]
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-7.0, 7.0, layer.bias.numel()))
    return model


# bf16 keeps 8 significant bits (one rounding: 2^-9 relative). The bf16 path (EvalMatmuls) rounds each decoder
# layer's input and weight to bf16; F.linear of two bf16 tensors returns bf16, so the product h W is rounded once more
# before the float32 bias is added. A logit is off by a few roundings of its 8 products h_j W_dj plus one of h W
# (|h W| <= 1.5 here: <= 4e-3), while the bias, which reaches 7 here, stays exact. Weighted by x - sigmoid(l) in
# log p(x|z), that is ~1e-3 nats per image on this 16-pixel model (measured on an AMD EPYC: 4e-4 mean, 1.1e-3 max),
# under 0.01 (the 784-pixel MNIST VAE: 0.02 mean, 0.12 max, experiments/BENCHMARKS.md). How the kernel accumulates
# (AMX, AVX512-BF16 or emulated) moves the last bits, not these sizes. The Bernoulli terms summed in bf16 are off by
# more (the negative control below).
BF16_ATOL = 0.01


def test_bf16_decoder_matmuls_match_float32_within_a_hundredth_of_a_nat() -> None:
    x = images(16)
    torch.manual_seed(7)
    fp32 = sharp_vae("32").log_marginal_likelihood(x, 200, 64)
    torch.manual_seed(7)
    bf16 = sharp_vae("bf16").log_marginal_likelihood(x, 200, 64)
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=BF16_ATOL)
    assert not torch.equal(bf16, fp32)  # the premise: the bf16 path did round
    # negative control: the same logits, bias included, rounded to bf16 and the Bernoulli terms summed in bf16 are
    # further off than the tolerance, so the tolerance can see a bf16 likelihood
    model = sharp_vae("32")
    mean, log_var = model.posterior(x)
    eps = torch.randn(200, 16, 3, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model.decoder_params(reparameterize(mean, log_var, eps))
        exact = (logits * x.flatten(1)).sum(-1) - F.softplus(logits).sum(-1)
        rounded = logits.bfloat16()
        coarse = ((rounded * x.flatten(1).bfloat16()).sum(-1) - F.softplus(rounded).sum(-1)).float()
    assert (coarse - exact).abs().mean() > BF16_ATOL


def test_eval_matmuls_float32_path_equals_f_linear() -> None:
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(20, 30)
    x = torch.randn(4, 5, 20, generator=gen)
    with torch.inference_mode():
        expected = layer(x)
        with eval_matmuls("32")():
            got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.dtype == torch.float32


@pytest.mark.parametrize("value", ["16", "fp16", 64, "bf32", None])
def test_bad_eval_precision_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"eval_precision=.*expected one of \['32', 'bf16'\]"):
        tiny_vae(value)  # type: ignore[arg-type]


def test_eval_precision_accepts_the_yaml_int_32() -> None:
    assert tiny_vae(32).eval_precision == "32"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "precision"),
    [(["model=vae"], 32), (["model=iwae2"], 32), (["experiment=iwae_mnist", "model.eval_precision=bf16"], "bf16")],
)
def test_composed_configs_with_eval_precision_pass_validation(overrides: list[str], precision: object) -> None:
    """YAML's ``eval_precision: 32`` is an int: the config check (type hints) must accept it as the model does."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from genlab.config import check_node

    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.model.eval_precision == precision  # YAML's 32 composes as an int: the case the hint must accept
    check_node(OmegaConf.to_container(cfg.model, resolve=True), "model", supplied=("data_shape",))  # raised "model.eval_precision=32 is not accepted: expected str" before the hint allowed int
