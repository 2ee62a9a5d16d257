"""Per-batch callback hooks a callback does not implement are taken off it, so Lightning does not dispatch them.

Lightning calls every hook on every callback (``trainer/call.py``: ``fn = getattr(callback, hook);
if callable(fn): with profiler.profile(...): fn(...)``), and most of genlab's callbacks act only at epoch ends.
With a dozen callbacks and two optimizers that is ~100 no-op dispatches per batch, each building a profiler
context and a state key: about a tenth of a small GAN's step on CPU. An instance attribute ``None`` for an
inherited no-op hook makes ``callable(fn)`` false, so Lightning skips it; implemented hooks are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L

# Hooks Lightning calls once or more per batch; epoch-level hooks are too rare to matter.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_inherited_batch_hooks(callbacks: Iterable[L.Callback]) -> None:
    """Set to None, on each callback, the per-batch hooks its class inherits unchanged from ``lightning.Callback``."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook, None) is getattr(L.Callback, hook):
                setattr(callback, hook, None)
