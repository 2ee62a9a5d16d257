"""The two-stochastic-layer VAE/IWAE: log-weights from the distributions, L_1 = ELBO, L_k rising in k towards an exact
log p(x) (2-D quadrature), shapes, a fit on digits, the CLI, and the paper's 2-layer rows of conf/table/iwae.yaml."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, TINY, read_metrics, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.distributions import Bernoulli, Normal

from genlab.checks import ConfigError
from genlab.config import check_node
from genlab.data.digits import DigitsDataModule
from genlab.losses.distributions import log_normal, log_standard_normal
from genlab.losses.iwae import log_mean_exp
from genlab.models.hierarchical_vae import HierarchicalVAE
from genlab.nets.mlp import MLP
from genlab.table import load_table
from genlab.table.render import rows as table_rows

D, J1, J2 = 4, 1, 1  # the tiny model whose log p(x) is a 2-D integral
X = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)


def tiny(seed: int = 0, data_shape=(D,), j1: int = J1, j2: int = J2, hidden=(8,), **kwargs) -> HierarchicalVAE:
    torch.manual_seed(seed)
    net = functools.partial(MLP, hidden=list(hidden), activation="tanh")
    return HierarchicalVAE(data_shape, net, net, net, net, latent_dim=j1, latent_dim2=j2, **kwargs)


def wide_proposal(model: HierarchicalVAE) -> HierarchicalVAE:
    """float64, eval, and q(z1|x), q(z2|z1) widened by e^1 in variance: light-tailed importance weights, so a k=50,000
    estimate sits within a few hundredths of a nat of log p(x) (with the initial q some weights are heavy-tailed)."""
    model = model.double().eval()
    with torch.no_grad():
        model.encoder.layers[-1].bias[model.latent_dim :] += 1.0
        model.encoder2.layers[-1].bias[model.latent_dim2 :] += 1.0
    return model


def exact_log_px(model: HierarchicalVAE, x: torch.Tensor, n1: int = 2001, n2: int = 801) -> torch.Tensor:
    """log p(x) = log of the double integral of p(x|z1) p(z1|z2) p(z2) over a grid on [-10, 10] x [-7, 7] (J1 = J2 = 1),
    the rectangle rule (spectrally accurate for a smooth integrand that vanishes at the edges)."""
    z1 = torch.linspace(-10, 10, n1, dtype=torch.float64)[:, None]
    z2 = torch.linspace(-7, 7, n2, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_px_z1 = model.log_likelihood(x, z1[:, None, :].expand(n1, x.shape[0], 1))  # (n1, B)
        prior_mean, prior_log_var = model.prior1(z2)  # (n2, 1)
        log_joint_z = log_normal(z1.T, prior_mean, prior_log_var) + log_standard_normal(z2)  # (n2, n1)
    log_cell = math.log(20 / (n1 - 1)) + math.log(14 / (n2 - 1))
    return torch.logsumexp((log_px_z1[None] + log_joint_z[:, :, None]).flatten(0, 1), 0) + log_cell


def test_log_weight_is_the_sum_of_the_five_log_densities_recomputed_from_the_nets() -> None:
    model = tiny(j1=3, j2=2).double()
    x = X
    eps = torch.randn(7, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mean, log_var = model.posterior(x)
    log_w = model.log_weight_terms(x, mean, log_var, eps).log_w  # the training path, in float64 here

    def gaussian(out: torch.Tensor, j: int) -> Normal:
        m, raw = out[..., :j], out[..., j:]
        return Normal(m, torch.exp(0.5 * (-12.0 + F.softplus(raw + 12.0))))  # the soft floor at -12

    q1 = gaussian(model.encoder(x), 3)
    z1 = q1.loc + q1.scale * eps[..., :3]
    q2 = gaussian(model.encoder2(z1.reshape(-1, 3)).reshape(7, 3, 4), 2)
    z2 = q2.loc + q2.scale * eps[..., 3:]
    p1 = gaussian(model.decoder2(z2.reshape(-1, 2)).reshape(7, 3, 6), 3)
    px = Bernoulli(logits=model.decoder(z1.reshape(-1, 3)).reshape(7, 3, D))
    expected = (
        px.log_prob(x).sum(-1) + p1.log_prob(z1).sum(-1) + Normal(0.0, 1.0).log_prob(z2).sum(-1)
        - q1.log_prob(z1).sum(-1) - q2.log_prob(z2).sum(-1)
    )
    assert log_w.shape == (7, 3)
    torch.testing.assert_close(log_w, expected, rtol=1e-10, atol=1e-10)
    # the estimate's path: the same, with log p(x|z1) in float32 (the VAE's eval_log_likelihood)
    torch.testing.assert_close(model.log_weights(x, mean, log_var, eps), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_with_one_sample_the_bound_is_the_elbo_and_the_two_objectives_have_the_same_gradients(objective) -> None:
    x = X.float()
    model = tiny(j1=3, j2=2, objective=objective, kl="sampled")
    torch.manual_seed(5)
    terms = model.objective_terms(x, 1)[0]
    terms["loss"].backward()
    grads = [p.grad.clone() for p in model.parameters()]
    reference = tiny(j1=3, j2=2, objective="iwae", kl="sampled")
    torch.manual_seed(5)
    ref_terms = reference.objective_terms(x, 1)[0]
    ref_terms["loss"].backward()
    torch.testing.assert_close(terms["elbo"], ref_terms["bound"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(terms["loss"], -ref_terms["elbo"], rtol=1e-6, atol=1e-6)
    for g, g_ref in zip(grads, (p.grad for p in reference.parameters()), strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_analytic_and_sampled_kl_have_the_same_expectation() -> None:
    terms = {}
    for kl in ("analytic", "sampled"):
        model = tiny(j1=3, j2=2, kl=kl).double()
        torch.manual_seed(0)
        with torch.no_grad():
            terms[kl] = model.objective_terms(X, 40_000)[0]
    # the KL estimates average 40,000 samples of terms of O(1) spread: their standard error is ~0.01 nats
    assert terms["analytic"]["kl"].item() == pytest.approx(terms["sampled"]["kl"].item(), abs=0.05)
    assert terms["analytic"]["kl"].item() > 0.1  # and a KL that is not trivially zero


def test_bounds_rise_with_k_towards_the_exact_log_likelihood_from_quadrature() -> None:
    model = wide_proposal(tiny())
    exact = exact_log_px(model, X)
    torch.testing.assert_close(exact, exact_log_px(model, X, 4001, 1601), rtol=0, atol=1e-9)  # the grid has converged
    mean, log_var = model.posterior(X)
    with torch.no_grad():
        log_w = model.log_weights(X, mean, log_var, model.noise(50 * 400, mean))  # (20000, B), seeded below
    bounds, errors = [], []
    for k in (1, 5, 50):  # E[L_k] from 20000 / k independent groups of k samples
        groups = log_mean_exp(log_w.reshape(-1, k, X.shape[0]), dim=1)
        bounds.append(groups.mean(0))
        errors.append(groups.std(0) / math.sqrt(groups.shape[0]))
    for lower, higher, e1, e2 in zip(bounds, bounds[1:], errors, errors[1:]):
        assert (higher - lower > 3 * (e1 + e2)).all(), (bounds, errors)
    assert (bounds[-1] < exact + 3 * errors[-1]).all()
    torch.manual_seed(1)
    estimate = model.log_marginal_likelihood(X, k=50_000, chunk=10_000).double()
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.02)
    assert (bounds[-1] < estimate + 3 * errors[-1]).all()  # L_50 <= the k=50,000 estimate
    assert (exact - bounds[0] > 0.2).all()  # the one-sample bound is far from it: the test can tell them apart


def test_estimate_is_the_same_on_one_or_two_worker_threads() -> None:
    model = tiny(j1=3, j2=2).double()
    estimates = []
    for workers in (1, 2):
        torch.manual_seed(4)
        estimates.append(model.log_marginal_likelihood(X, k=300, chunk=64, workers=workers))
    torch.testing.assert_close(estimates[0], estimates[1], rtol=0, atol=1e-6)


def test_eval_precision_bf16_reaches_the_decoder_and_stays_close_to_float32() -> None:
    model = tiny(data_shape=(1, 8, 8), j1=5, j2=3, hidden=(32,))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).bernoulli()
    estimates = {}
    for precision in ("32", "bf16"):
        model.eval_precision = precision
        torch.manual_seed(2)
        estimates[precision] = model.log_marginal_likelihood(x, k=200, chunk=50, workers=1)
    difference = (estimates["bf16"] - estimates["32"]).abs()
    assert (difference > 0).any() and (difference < 0.05).all(), difference  # applied, and harmless


def test_shapes_of_every_output() -> None:
    model = tiny(data_shape=(1, 8, 8), j1=5, j2=3, eval_k=20, eval_chunk=7)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).bernoulli()
    terms, mean, log_var = model.objective_terms(x, 4)
    assert mean.shape == log_var.shape == (6, 5 + 3)
    assert all(v.shape == () for v in terms.values()) and set(terms) == {"elbo", "recon", "kl", "loss"}
    assert model.noise(4, mean[:, :5]).shape == (4, 6, 8)
    assert model.log_marginal_likelihood(x).shape == (6,)
    assert model.encode(x).shape == (6, 5) and model.sample_prior(9).shape == (9, 5)
    assert model.sample(9).shape == (9, 1, 8, 8) and model.reconstruct(x).shape == x.shape
    assert model.posterior2(torch.zeros(2, 4, 5))[0].shape == (2, 4, 3)  # any leading dims
    assert model.prior1(torch.zeros(2, 4, 3))[1].shape == (2, 4, 5)


def test_bad_latent_dim2_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="latent_dim2=0"):
        tiny(j2=0)


def test_fit_on_digits_improves_the_bound_and_logs_active_units_per_layer(tmp_path) -> None:
    model = tiny(
        data_shape=(1, 8, 8), j1=8, j2=4, hidden=(32,), objective="iwae", k=5, eval_k=50, active_units_train=100,
        init_output_bias="data", optimizer=functools.partial(torch.optim.Adam, lr=3e-3),
    )
    dm = DigitsDataModule(batch_size=32, binarize="dynamic")
    dm.setup("fit")
    x = dm.split_tensors("test")[0][:200].bernoulli(generator=torch.Generator().manual_seed(0))

    def held_out_bound() -> float:
        torch.manual_seed(7)
        with torch.no_grad():
            return model.objective_terms(x, 5)[0]["bound"].item()

    before = held_out_bound()
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = L.Trainer(**quiet, enable_model_summary=False, default_root_dir=tmp_path, max_epochs=1,
                        limit_train_batches=40, limit_val_batches=1, limit_test_batches=2)
    trainer.fit(model, datamodule=dm)
    after = held_out_bound()
    assert after > before + 3.0, (before, after)  # -45.4 -> -27.0 nats here
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/active_units", "test/active_units_z2", "test/active_units_train_z2"} <= set(metrics)
    assert 0 <= metrics["test/active_units_train"] <= 8 and 0 <= metrics["test/active_units_train_z2"] <= 4
    assert math.isfinite(metrics["test/nll"]) and metrics["test/nll"] < -metrics["test/bound"] + 1.0


def test_cli_runs_the_two_layer_model_on_digits(tmp_path) -> None:
    run_dir = tmp_path / "run"
    curve = "callbacks.learning_curve"
    proc = run_cli(
        "model=iwae2", "data=digits", *TINY, "trainer.log_every_n_steps=1", "model.eval_k=50",
        "model.active_units_train=100", f"+{curve}._target_=genlab.callbacks.learning_curve.LearningCurve",
        f"+{curve}.n_images=20", f"+{curve}.k=10", f"+{curve}.chunk=10", f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["model"] == "iwae2" and 0 < metrics["test/nll"] < 64 * math.log(2)  # below coin flips per pixel
    assert {"test/active_units_z2", "test/active_units_train_z2", "val/active_units_z2"} <= set(metrics)
    text = (run_dir / "csv" / "metrics.csv").read_text()
    assert "curve/test_nll" in text
    pngs = {p.name.split("_epoch")[0] for p in (run_dir / "images").glob("*.png")}
    assert {"reconstructions", "samples", "interpolations"} <= pngs, pngs


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_the_experiment_builds_the_authors_two_layer_nets() -> None:
    cfg = composed("experiment=iwae2_mnist")
    model = instantiate(cfg.model, data_shape=(1, 28, 28))

    def widths(net) -> list[tuple[int, int]]:
        return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]

    # yburda/iwae experiments.py --layers 2: latent [100, 50], q hidden [[200, 200], [100, 100]], p mirrored
    assert widths(model.encoder) == [(784, 200), (200, 200), (200, 200)]  # mean and log-variance of z1
    assert widths(model.encoder2) == [(100, 100), (100, 100), (100, 100)]  # mean and log-variance of z2
    assert widths(model.decoder2) == [(50, 100), (100, 100), (100, 200)]
    assert widths(model.decoder) == [(100, 200), (200, 200), (200, 784)]
    assert all(isinstance(m, torch.nn.Tanh) for m in model.encoder2.layers[1:-1:2])
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.trainer.max_epochs) == (20, 400, 3280)
    assert (cfg.model.init_output_bias, cfg.model.active_units_train, cfg.model.eval_k) == ("data", 500, 5000)


def check_model(*overrides: str) -> None:
    """The check genlab.train runs on the model node before building anything."""
    check_node(OmegaConf.to_container(composed(*overrides).model, resolve=True), "model", supplied=("data_shape",))


def test_unknown_or_mistyped_model_keys_are_named_before_training() -> None:
    check_model("model=iwae2")
    with pytest.raises(ConfigError, match=r"model.latent_dim_2 is not a known key. Did you mean model.latent_dim2"):
        check_model("model=iwae2", "+model.latent_dim_2=3")
    with pytest.raises(ConfigError, match=r"model.eval_k='many' is not accepted: expected"):  # a VAE key, checked too
        check_model("model=iwae2", "model.eval_k=many")


def test_the_iwae_table_has_the_papers_two_layer_rows() -> None:
    table = load_table("iwae")  # conf/table/iwae.yaml
    rows = ("VAE, 2 layers", "IWAE k=50, 2 layers")
    assert [table.published[r]["test/nll"][0] for r in rows] == [85.33, 82.90]
    for budget, epochs in (("paper", 3280), ("cpu", 200)):
        cfgs = [composed(*table.overrides(r, budget)) for r in rows]
        assert [(c.model.objective, c.model.k) for c in cfgs] == [("elbo", 1), ("iwae", 50)]
        assert all((c.model.latent_dim, c.model.latent_dim2, c.trainer.max_epochs) == (100, 50, epochs) for c in cfgs)
    record = {"row": rows[0], "budget": "cpu", "seed": 0, "command": "", "epochs": 200, "provenance": {}, "curve": {},
              "metrics": {"test/nll": 84.0, "test/active_units_train": 16.0, "test/active_units_train_z2": 5.0}}
    header, lines = table_rows(table, [record])
    line = dict(zip(header, lines[0]))
    assert (line["active units (z1)"], line["active units (z2)"]) == ("**16**", "**5**")
