"""cpu_matmul: which library multiplies float32 matrices on the CPU, chosen without losing float32 accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from genlab import cpu_matmul
from genlab.checks import ConfigError

MEASURE = cpu_matmul.probe  # the real probe (functools-cached once a process); tests below may stand in for it
needs_switch = pytest.mark.skipif(not cpu_matmul.available(), reason="this torch has no oneDNN fp32 matmul switch")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A cache of this test's own (not the suite's seeded "blas" verdict) and a probe measured afresh."""
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(tmp_path / "cache"))
    MEASURE.cache_clear()
    yield
    MEASURE.cache_clear()  # the switch, threads and environment are restored by conftest


def fabricated(probe: cpu_matmul.Probe):
    """A stand-in for :func:`cpu_matmul.probe` that reports ``probe`` without measuring anything."""
    return lambda: probe


# What the probe measures on three kinds of machine (errors and times as seen on an EPYC and an AMX Xeon).
EXACT_AND_FAST = cpu_matmul.Probe(7.4e-7, blas_us=577.0, onednn_us=264.0)  # AMD EPYC: oneDNN float32, 2x faster
BF16_INSIDE = cpu_matmul.Probe(2.2e-3, blas_us=500.0, onednn_us=120.0)  # Xeon with AMX: faster, but bfloat16
EXACT_BUT_SLOW = cpu_matmul.Probe(7.4e-7, blas_us=280.0, onednn_us=250.0)  # float32, but not 1.2x faster


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
@pytest.mark.parametrize("switch", [False, True])
def test_auto_follows_the_probe_and_the_probe_leaves_the_switch_as_it_was(switch: bool) -> None:
    cpu_matmul.use_onednn(switch)
    result = cpu_matmul.probe()
    assert cpu_matmul.onednn_enabled() == switch
    # a relative error of a product against float64: float32 gives ~1e-7, bfloat16 ~1e-3, never above 1e-1
    assert 0 <= result.onednn_error < 0.1
    assert cpu_matmul.select("auto") == ("onednn" if result.onednn_wins else "blas")
    assert cpu_matmul.onednn_enabled() == result.onednn_wins


@needs_switch
@pytest.mark.parametrize(
    ("measured", "expected"),
    [(EXACT_AND_FAST, "onednn"), (BF16_INSIDE, "blas"), (EXACT_BUT_SLOW, "blas")],
    ids=["exact_and_fast", "bf16_inside", "exact_but_slow"],
)
def test_auto_uses_onednn_only_where_it_is_float32_exact_and_faster(measured, expected, monkeypatch) -> None:
    """Every machine runs all three verdicts: an EPYC never measures AMX's bfloat16, and an AMX Xeon never a win."""
    monkeypatch.setattr(cpu_matmul, "probe", fabricated(measured))
    cpu_matmul.use_onednn(expected == "blas")  # the opposite of the verdict, so that select must set the switch
    assert cpu_matmul.select("auto") == expected
    assert cpu_matmul.onednn_enabled() == (expected == "onednn")
    cached = json.loads(cpu_matmul.cache_file().read_text())[cpu_matmul.machine_key()]
    assert cached == {"onednn": expected == "onednn", "onednn_error": measured.onednn_error,
                      "blas_us": measured.blas_us, "onednn_us": measured.onednn_us}
    # the explicit settings do not consult the probe
    assert cpu_matmul.select("blas") == "blas" and cpu_matmul.select("onednn") == "onednn"


def test_without_the_onednn_switch_every_setting_is_blas(monkeypatch) -> None:
    """A torch without oneDNN (or without the fp32_precision switch) multiplies with BLAS whatever is asked."""
    monkeypatch.setattr(cpu_matmul, "available", lambda: False)
    monkeypatch.setattr(cpu_matmul, "probe", fabricated(EXACT_AND_FAST))  # a probe that would pick oneDNN
    for setting in cpu_matmul.CPU_MATMULS:
        assert cpu_matmul.select(setting) == "blas", setting
        assert not cpu_matmul.onednn_enabled()
    assert not cpu_matmul.cache_file().exists()  # nothing was probed or cached
    with pytest.raises(ConfigError, match="cpu_matmul='fast'"):
        cpu_matmul.select("fast")  # a bad value is still refused


@needs_switch
def test_auto_keeps_the_machines_cached_verdict_and_reprobes_a_corrupt_cache() -> None:
    path = cpu_matmul.cache_file()
    measured = cpu_matmul.probe()
    probed = measured.onednn_wins
    assert cpu_matmul.select("auto") == ("onednn" if probed else "blas")
    cached = json.loads(path.read_text())[cpu_matmul.machine_key()]
    assert cached == {"onednn": probed, "onednn_error": measured.onednn_error, "blas_us": measured.blas_us,
                      "onednn_us": measured.onednn_us}
    # a verdict on record wins over a new measurement: every run on this machine multiplies alike
    path.write_text(json.dumps({cpu_matmul.machine_key(): {"onednn": not probed}}))
    assert cpu_matmul.select("auto") == ("blas" if probed else "onednn")
    path.write_text("{not json")
    assert cpu_matmul.select("auto") == ("onednn" if probed else "blas")
    assert json.loads(path.read_text())[cpu_matmul.machine_key()]["onednn"] == probed


def test_a_probe_that_is_not_float32_exact_or_not_faster_keeps_blas() -> None:
    assert EXACT_AND_FAST.onednn_wins
    assert not BF16_INSIDE.onednn_wins  # bfloat16 inside: refused however fast
    assert not EXACT_BUT_SLOW.onednn_wins  # a tie: torch's default
    assert not cpu_matmul.Probe(cpu_matmul.FLOAT32_EXACT, blas_us=500.0, onednn_us=250.0).onednn_wins  # the edge


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
def test_training_steps_agree_between_the_two_libraries_where_onednn_is_float32() -> None:
    """Eight Adam steps of a small MLP under blas and under onednn: the same weights (to float32 rounding) where the
    probe finds oneDNN float32-exact (an EPYC); where it multiplies in bfloat16 (a Xeon with AMX), ``auto`` refuses
    it and the weights differ by what bfloat16 rounding gives, not more."""

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
    assert torch.equal(train("onednn"), onednn) and torch.equal(train("blas"), blas)  # each library is deterministic
    measured = cpu_matmul.probe()
    if measured.onednn_error < cpu_matmul.FLOAT32_EXACT:
        torch.testing.assert_close(onednn, blas, rtol=1e-4, atol=1e-5)
    else:
        # bfloat16 products (one rounding: 2^-9 relative, ~2e-3 against float64 in the probe); an AMX Xeon gave a
        # largest weight difference of 0.0046 after these 8 steps of lr 1e-3
        assert measured.onednn_error < 2e-2, measured
        assert cpu_matmul.select("auto") == "blas" and not cpu_matmul.onednn_enabled()
        assert (onednn - blas).abs().max() < 5e-2
