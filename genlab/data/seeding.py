"""Seeds derived from integer tuples, so every random stream in the data layer is a pure function of its keys."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Tags that keep the data layer's random streams apart even when the other keys coincide."""

    PERMUTATION = 1
    TRANSFORM = 2
    BINARIZE = 3
    SPLIT = 4
    SYNTHESIZE = 5
    RANK = 6  # the training streams of a DDP rank other than zero (genlab.checkpoints.seed_rank_streams)


def derive_seed(*keys: int) -> int:
    """Return a 63-bit seed that depends only on ``keys`` (non-negative ints); distinct tuples give unrelated seeds."""
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    # The length goes first because SeedSequence pads short entropy with zeros: (a, b) would equal (a, b, 0).
    words = np.random.SeedSequence([len(keys), *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)
