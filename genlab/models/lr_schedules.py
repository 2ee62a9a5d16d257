"""Learning-rate factors per epoch (for LambdaLR) of the VAE-family papers' training schedules."""

from __future__ import annotations

import math
from collections.abc import Callable


def constant(epoch: int) -> float:
    """1 at every epoch."""
    return 1.0


def iwae_passes(epoch: int) -> float:
    """Burda et al. (2016): pass i lasts 3^i epochs at lr_0 * 10^(-i/7); pass i starts at epoch (3^i - 1) / 2."""
    passes_done = int(math.floor(math.log(2 * epoch + 1, 3) + 1e-9))
    return 10.0 ** (-passes_done / 7)


def step_decay(epoch: int, decay: float = 0.9, every: int = 10) -> float:
    """decay^(epoch // every): VaDE's 0.9 every 10 epochs by default."""
    return decay ** (epoch // every)


def floored(epoch: int, schedule: Callable[[int], float], floor: float) -> float:
    """max(schedule(epoch), floor): a factor that never falls under ``floor`` (= lr_min / lr; VaDE's 2e-4 / 2e-3)."""
    return max(schedule(epoch), floor)


LR_SCHEDULES = {"constant": constant, "iwae_passes": iwae_passes, "step": step_decay}
