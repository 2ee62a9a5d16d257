"""A GPU trainer on a machine whose torch cannot use one: one line saying why and how to get a CUDA build."""

from __future__ import annotations

import torch

from genlab.checks import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")
# `make install` pins a CPU build; a CUDA build comes from PyTorch's CUDA index (pick the cuXYZ your driver supports).
CUDA_INSTALL = "rm -rf .venv && make install TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'"


def check_accelerator(accelerator: str, key: str) -> None:
    """Raise a ConfigError naming ``key`` when ``accelerator`` asks for CUDA and ``torch.cuda.is_available()`` is False."""
    if str(accelerator).lower() not in GPU_ACCELERATORS or torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        why = f"this torch build ({torch.__version__}) has no CUDA support at all"
        fix = f"install a CUDA build of torch: {CUDA_INSTALL} (README, Hardware)"
    else:
        why = (f"this torch build ({torch.__version__}, CUDA {torch.version.cuda}) sees no GPU (no NVIDIA driver, "
               f"or CUDA_VISIBLE_DEVICES hides the GPUs)")
        fix = "check `nvidia-smi`"
    raise ConfigError(f"{key} needs a CUDA GPU, but {why}. Train on the CPU with trainer=cpu, or {fix}.")
