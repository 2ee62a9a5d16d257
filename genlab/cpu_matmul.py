"""Which library multiplies float32 matrices on the CPU: torch's BLAS (MKL in the pinned build) or oneDNN.

On the AMD EPYC bench machine MKL's sgemm runs at half of oneDNN's speed for every product genlab trains
(100x400 @ 400x400 on one thread: 293 vs 146 us, forward and backward alike). torch routes float32 matmuls to
oneDNN only when ``torch.backends.mkldnn.matmul.fp32_precision`` permits reduced precision (``"bf16"``). oneDNN
then multiplies in bfloat16 only where the CPU has bfloat16 matrix units (AMX); elsewhere it stays in float32.
``auto`` measures exactly that: it turns oneDNN on when its product matches float64 to float32 accuracy and is
faster, so the numbers never drop to bfloat16 behind the user's back. The verdict is kept per CPU model and torch
version in ``$GENLAB_CACHE_DIR`` (default ``~/.cache/genlab``), so every run on a machine multiplies with the
same library (the same config and seed give the same numbers) even when a loaded machine would time it otherwise.
A run on a GPU neither probes nor routes anything (:func:`select_for`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from genlab.accelerator import runs_on_cpu
from genlab.checks import one_of
from genlab.provenance import cpu_model

CPU_MATMULS = ("auto", "blas", "onednn")
# float32 products have relative errors ~1e-7..1e-6 against float64; bfloat16 inputs give ~1e-3.
FLOAT32_EXACT = 1e-5
# oneDNN must win by this much in the probe; a tie keeps torch's default.
MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class Probe:
    """What ``auto`` measured: oneDNN's relative error against float64 and both libraries' time for one product."""

    onednn_error: float
    blas_us: float
    onednn_us: float

    @property
    def onednn_wins(self) -> bool:
        """oneDNN is float32-exact here and at least MIN_SPEEDUP times faster."""
        return self.onednn_error < FLOAT32_EXACT and self.blas_us >= MIN_SPEEDUP * self.onednn_us


def available() -> bool:
    """This torch has oneDNN and the public switch that routes float32 matmuls to it (torch >= 2.9)."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    return torch.backends.mkldnn.is_available() and hasattr(matmul, "fp32_precision")


def use_onednn(enabled: bool) -> None:
    """Route float32 CPU matmuls (forward and backward) through oneDNN, or back to torch's default."""
    if available():
        # Through the legacy setter, whose "medium" sets mkldnn.matmul.fp32_precision = "bf16" (and "highest" sets
        # "ieee", torch's BLAS): setting the per-backend flag alone leaves the two APIs inconsistent, and then
        # torch.get_float32_matmul_precision() raises, which Lightning calls when it sets up an Ampere+ GPU.
        torch.set_float32_matmul_precision("medium" if enabled else "highest")


def onednn_enabled() -> bool:
    """Whether float32 CPU matmuls currently go through oneDNN."""
    return available() and torch.backends.mkldnn.matmul.fp32_precision == "bf16"


def _best_us(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    """The fastest of ``reps`` timings of a @ b, in microseconds."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best * 1e6


@functools.cache
def probe() -> Probe:
    """Measure oneDNN against torch's BLAS on a 100x784 @ 784x400 product (a VAE encoder layer), once a process."""
    before = onednn_enabled()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 784, generator=gen), torch.randn(784, 400, generator=gen)
    exact = a.double() @ b.double()
    try:
        use_onednn(True)
        error = ((a @ b).double() - exact).abs().max().item() / exact.abs().max().item()
        use_onednn(False)
        blas = _best_us(a, b, 3)  # warm-up of both paths before the timed rounds
        use_onednn(True)
        onednn = _best_us(a, b, 3)
        for _ in range(3):  # alternated, so a burst of load hits both
            use_onednn(False)
            blas = min(blas, _best_us(a, b, 5))
            use_onednn(True)
            onednn = min(onednn, _best_us(a, b, 5))
    finally:
        use_onednn(before)
    return Probe(error, blas, onednn)


def cache_file() -> Path:
    """Where ``auto`` keeps its verdicts: ``$GENLAB_CACHE_DIR/cpu_matmul.json``, else under ``~/.cache/genlab``."""
    root = os.environ.get("GENLAB_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genlab"
    return Path(root) / "cpu_matmul.json"


def machine_key() -> str:
    """The CPU model and torch version: what the verdict depends on."""
    return f"{cpu_model()} | torch {torch.__version__}"


def auto_verdict() -> bool:
    """Whether ``auto`` uses oneDNN here: the cached verdict for this machine, else :func:`probe`'s (then cached).

    An unreadable or corrupt cache is probed again and rewritten; a cache that cannot be written is skipped.
    """
    path, key = cache_file(), machine_key()
    try:
        cached = json.loads(path.read_text())
        return bool(cached[key]["onednn"])
    except (OSError, ValueError, KeyError, TypeError):
        cached = None
    result = probe()
    entries = cached if isinstance(cached, dict) else {}
    entries[key] = {"onednn": result.onednn_wins, **asdict(result)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        tmp.replace(path)
    except OSError:
        pass
    return result.onednn_wins


def select_for(accelerator: str, setting: str, key: str = "cpu_matmul") -> str:
    """:func:`select` when the run trains on the CPU; on another accelerator ``setting`` is only checked: nothing is
    probed or routed, and the return value says so (it goes into ``metrics.json``)."""
    setting = one_of(key, setting, CPU_MATMULS)
    if runs_on_cpu(accelerator):
        return select(setting, key)
    return f"unused (trainer.accelerator={accelerator})"


def select(setting: str, key: str = "cpu_matmul") -> str:
    """Apply ``setting`` (one of CPU_MATMULS) and return the library now in use, ``"blas"`` or ``"onednn"``.

    ``onednn`` forces oneDNN even where it would multiply in bfloat16 (CPUs with AMX); ``auto`` uses
    :func:`auto_verdict`.
    """
    setting = one_of(key, setting, CPU_MATMULS)
    if not available():
        return "blas"
    enabled = setting == "onednn" or (setting == "auto" and auto_verdict())
    use_onednn(enabled)
    return "onednn" if enabled else "blas"
