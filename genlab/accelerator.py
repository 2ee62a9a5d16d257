"""Which device a run trains on, and what genlab checks or sets per device before training.

- A GPU trainer on a machine whose torch cannot use one: one line saying why and how to get a CUDA build.
- ``bf16-mixed`` on a GPU without bfloat16 units (before Ampere): one line naming ``16-mixed`` instead.
- :func:`runs_on_cpu`: whether CPU-only settings (``cpu_matmul``) apply to the run at all.
- :func:`seeded_rng` and :func:`autocast_off`: fixed-seed draws and float32 regions that follow the model's device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from genlab.checks import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")
# `make install` pins a CPU build; a CUDA build comes from PyTorch's CUDA index (pick the cuXYZ your driver supports).
CUDA_INSTALL = "rm -rf .venv && make install TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'"


def check_accelerator(accelerator: str, key: str, precision: Any = None) -> None:
    """Raise a ConfigError naming ``key`` when ``accelerator`` asks for CUDA and ``torch.cuda.is_available()`` is False,
    or when ``precision`` is bf16 on a CUDA GPU without bfloat16 units (compute capability < 8)."""
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return
    if torch.cuda.is_available():
        check_bf16_units(precision)
        return
    if torch.version.cuda is None:
        why = f"this torch build ({torch.__version__}) has no CUDA support at all"
        fix = f"install a CUDA build of torch: {CUDA_INSTALL} (README, Hardware)"
    else:
        why = (f"this torch build ({torch.__version__}, CUDA {torch.version.cuda}) sees no GPU (no NVIDIA driver, "
               f"or CUDA_VISIBLE_DEVICES hides the GPUs)")
        fix = "check `nvidia-smi`"
    raise ConfigError(f"{key} needs a CUDA GPU, but {why}. Train on the CPU with trainer=cpu, or {fix}.")


def check_bf16_units(precision: Any) -> None:
    """Refuse ``trainer.precision=bf16-*`` on a CUDA GPU of compute capability < 8 (T4, V100): torch would emulate
    bfloat16 there, slower than float32 and with none of its gain."""
    if not str(precision).startswith("bf16") or torch.version.hip is not None:
        return
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU with bfloat16 units (Ampere, compute capability 8.0, or "
            f"newer), but {torch.cuda.get_device_name()} has compute capability {major}.{minor}: use "
            f"trainer.precision=16-mixed (float16 with loss scaling) or 32"
        )


def runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``trainer.accelerator=accelerator`` trains on the CPU here (``auto`` picks a GPU when torch
    sees one)."""
    name = str(accelerator).lower()
    if name == "auto":
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return name == "cpu"


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Draws inside come from ``seed`` on the CPU and on ``device``; afterwards both streams are where they were.

    ``torch.manual_seed`` would reseed every CUDA generator and ``fork_rng(devices=[])`` restores none of them, so a
    fixed-seed picture or classifier would restart the training noise drawn on the GPU. Other devices are left alone.
    """
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def autocast_off(device: torch.device) -> Any:
    """A context in which ``device``'s autocast is off (float32 stays float32); a no-op where autocast is not on."""
    on = torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)
    return torch.autocast(device.type, enabled=False) if on else nullcontext()
