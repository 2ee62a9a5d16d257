"""cpu_matmul: which library multiplies float32 matrices on the CPU, chosen without losing float32 accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from genlab import cpu_matmul
from genlab.checks import ConfigError

needs_switch = pytest.mark.skipif(not cpu_matmul.available(), reason="this torch has no oneDNN fp32 matmul switch")


@pytest.fixture(autouse=True)
def _restore_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(tmp_path / "cache"))
    before = cpu_matmul.onednn_enabled()
    yield
    cpu_matmul.use_onednn(before)


def relative_error(product: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    exact = a.double() @ b.double()
    return ((product.double() - exact).abs().max() / exact.abs().max()).item()


def test_an_unknown_setting_names_the_key_and_the_choices() -> None:
    expected = r"cpu_matmul='fast' is not accepted: expected one of \['auto', 'blas', 'onednn'\]"
    with pytest.raises(ConfigError, match=expected):
        cpu_matmul.select("fast")


@needs_switch
def test_blas_and_onednn_set_the_switch_and_report_it() -> None:
    assert cpu_matmul.select("onednn") == "onednn" and cpu_matmul.onednn_enabled()
    assert cpu_matmul.select("blas") == "blas" and not cpu_matmul.onednn_enabled()


@needs_switch
def test_auto_follows_the_probe_and_the_probe_leaves_the_switch_as_it_was() -> None:
    cpu_matmul.use_onednn(False)
    result = cpu_matmul.probe()
    assert not cpu_matmul.onednn_enabled()
    assert result.blas_us > 0 and result.onednn_us > 0
    assert cpu_matmul.select("auto") == ("onednn" if result.onednn_wins else "blas")
    assert cpu_matmul.onednn_enabled() == result.onednn_wins


@needs_switch
def test_auto_keeps_the_machines_cached_verdict_and_reprobes_a_corrupt_cache() -> None:
    path = cpu_matmul.cache_file()
    probed = cpu_matmul.probe().onednn_wins
    assert cpu_matmul.select("auto") == ("onednn" if probed else "blas")
    cached = json.loads(path.read_text())[cpu_matmul.machine_key()]
    assert cached["onednn"] == probed and cached["blas_us"] > 0
    # a verdict on record wins over a new measurement: every run on this machine multiplies alike
    path.write_text(json.dumps({cpu_matmul.machine_key(): {"onednn": not probed}}))
    assert cpu_matmul.select("auto") == ("blas" if probed else "onednn")
    path.write_text("{not json")
    assert cpu_matmul.select("auto") == ("onednn" if probed else "blas")
    assert json.loads(path.read_text())[cpu_matmul.machine_key()]["onednn"] == probed


def test_a_probe_that_is_not_float32_exact_or_not_faster_keeps_blas() -> None:
    assert cpu_matmul.Probe(7e-7, blas_us=500.0, onednn_us=250.0).onednn_wins
    assert not cpu_matmul.Probe(2e-3, blas_us=500.0, onednn_us=250.0).onednn_wins  # bfloat16 inside: refused
    assert not cpu_matmul.Probe(7e-7, blas_us=280.0, onednn_us=250.0).onednn_wins  # a tie: torch's default


@needs_switch
def test_auto_keeps_float32_accuracy_forward_and_backward() -> None:
    """Whatever auto picks, products and their gradients stay at float32 accuracy (bfloat16 would be ~1e-3)."""
    cpu_matmul.select("auto")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 784, generator=gen)
    w = torch.randn(400, 784, generator=gen, requires_grad=True)
    y = torch.nn.functional.linear(x, w)
    assert relative_error(y, x, w.detach().T) < cpu_matmul.FLOAT32_EXACT
    g = torch.randn(64, 400, generator=gen)
    y.backward(g)
    assert relative_error(w.grad, g.T, x) < cpu_matmul.FLOAT32_EXACT


@needs_switch
def test_training_steps_agree_between_the_two_libraries() -> None:
    """Eight Adam steps of a small MLP end at the same weights (to float32 rounding) under blas and onednn."""

    def train(setting: str) -> torch.Tensor:
        cpu_matmul.select(setting)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 64))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x = torch.randn(32, 64)
        for _ in range(8):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), x).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    blas, onednn = train("blas"), train("onednn")
    torch.testing.assert_close(onednn, blas, rtol=1e-4, atol=1e-5)
    assert torch.equal(train("onednn"), onednn)  # and each library is deterministic: same seed, same weights
