"""Checks of a checkpoint before a run resumes from it: readable, written for this model class, same shapes."""

from __future__ import annotations

import os
from typing import Any

import torch

from genlab.checkpoints import CheckpointError, load_genlab_checkpoint

FIX = "pass a .ckpt written by a genlab run of this model (<run folder>/checkpoints/last.ckpt or best.ckpt)"


def class_path(obj: Any) -> str:
    """The dotted import path of ``obj``'s class, as the base module stores it in checkpoints."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_resumable(path: str | os.PathLike[str], model: torch.nn.Module) -> None:
    """A CheckpointError unless ``path`` is a readable genlab checkpoint of ``model``'s class and tensor shapes."""
    try:
        checkpoint = load_genlab_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"ckpt_path: {err} To resume, {FIX}.") from None
    except Exception as err:  # noqa: BLE001 - the unpickler fails on garbage with many error types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"ckpt_path={str(path)!r} cannot be read as a PyTorch checkpoint ({reason[:200]}). To resume, {FIX}."
        ) from None
    stored_class = checkpoint["genlab"].get("model_class")
    built_class = class_path(model)
    if stored_class != built_class:
        raise CheckpointError(
            f"ckpt_path={str(path)!r} holds a {stored_class} checkpoint, but the model config builds a "
            f"{built_class}: choose the model= the checkpoint was trained with, or {FIX}."
        )
    own = model.state_dict()
    for key, value in checkpoint["state_dict"].items():
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape:
            raise CheckpointError(
                f"ckpt_path={str(path)!r}: {key} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the configured model: use the settings it was trained with "
                f"(its run folder's .hydra/config.yaml), or {FIX}."
            )
