"""A resumable batch loader over tensors held whole on one device, for models where a DataLoader would dominate.

With ``steps_per_block=S > 1`` each item is a :class:`Block` of up to S minibatches stacked on a new first axis, so
that a module taking one optimizer step per minibatch (:meth:`genlab.models.base.GenerativeModule.training_step`)
pays Lightning's fixed per-batch cost once per S steps. The minibatches, their order and their transform draws are
those of ``steps_per_block=1``; only their grouping into loader items differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from genlab.checks import ConfigError
from genlab.data.seeding import Stream, derive_seed

BatchTransform = Callable[[Tensor, torch.Generator], Tensor]


def transform_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The seed of the transform draws (e.g. dynamic binarization) of one batch: a pure function of its keys.

    Rank 0 keeps the one-process key (seed, epoch, batch); rank r > 0 adds r, so that the ranks of a DDP run draw
    independent bits for their different samples instead of reusing rank 0's uniforms.
    """
    keys = (seed, epoch, batch) if rank == 0 else (seed, epoch, batch, rank)
    return derive_seed(Stream.TRANSFORM, *keys)


class Block(tuple):
    """A loader item holding several minibatches: a tuple of tensors, each (s, B, ...) for s minibatches of size B.

    A tuple subclass, so Lightning moves it to the device like any batch and hands it back as a Block.
    """

    @property
    def num_minibatches(self) -> int:
        return int(self[0].shape[0])

    def minibatches(self) -> Iterator[tuple[Tensor, ...]]:
        """Yield the s minibatches as tuples of (B, ...) views, in order."""
        for i in range(self.num_minibatches):
            yield tuple(t[i] for t in self)


class InMemoryLoader:
    """Serves index batches of ``tensors``; epoch ``e``'s order and transform draws depend only on (seed, e).

    Each ``__iter__`` serves one epoch and the next one serves the following epoch, except right after
    :meth:`load_state_dict`, when it resumes the saved epoch past the batches already served, and after
    :meth:`set_epoch`, which names the epoch to serve next. Lightning sees ``state_dict``/``load_state_dict``
    and stores the position in its checkpoints for mid-epoch resumption. ``epoch`` is the epoch the first
    ``__iter__`` serves.

    "Batch" below means one minibatch of ``batch_size`` samples (the last one of an epoch may be short).
    ``steps_per_block=S`` groups them into loader items: with S = 1 each item is a plain tuple of (B, ...)
    tensors; with S > 1 a :class:`Block` of S full batches, the epoch's remaining full batches, and the short last
    batch in a block of its own. ``max_batches`` caps the batches of an epoch (``trainer.limit_train_batches``
    counted in batches rather than items). The position saved in checkpoints counts batches, so it does not
    depend on the grouping, but a resume inside an epoch needs the same S (items are counted by Lightning).

    Several processes (``world_size`` > 1): rank r serves positions r, r + W, r + 2W, ... of the epoch's order, so
    the ranks' batch j together are the one-process batch j of W x ``batch_size`` samples. ``pad=True`` (training)
    gives every rank ceil(N / W) samples by wrapping around, as ``DistributedSampler`` does, so that all ranks take
    the same number of optimizer steps; ``pad=False`` (evaluation) gives each sample to exactly one rank, so an
    average over the ranks' batches counts every sample once (ranks then differ by at most one sample).
    """

    def __init__(
        self,
        tensors: tuple[Tensor, ...],
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        transform: BatchTransform | None = None,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        steps_per_block: int = 1,
        max_batches: int | None = None,
        pad: bool = True,
    ) -> None:
        if not tensors:
            raise ValueError("InMemoryLoader needs at least one tensor")
        sizes = {len(t) for t in tensors}
        devices = {t.device for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"InMemoryLoader tensors differ in length: {[len(t) for t in tensors]}")
        if len(devices) != 1:
            raise ValueError(f"InMemoryLoader tensors live on different devices: {sorted(map(str, devices))}")
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        if seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative int")
        if epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative int")
        if isinstance(steps_per_block, bool) or not isinstance(steps_per_block, int) or steps_per_block < 1:
            raise ValueError(f"steps_per_block={steps_per_block!r} must be a positive int")
        if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                        or max_batches < 0):
            raise ValueError(f"max_batches={max_batches!r} must be None or a non-negative int")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank={rank!r}, world_size={world_size!r}: need world_size >= 1 and 0 <= rank < world_size"
            )
        self.tensors = tuple(tensors)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.transform = transform
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = devices.pop()
        self.num_samples = sizes.pop()
        self.pad = bool(pad)
        if self.pad:  # like DistributedSampler: every rank gets ceil(N / world_size) indices, wrapping around
            self.samples_per_rank = math.ceil(self.num_samples / self.world_size)
        else:  # positions rank, rank + W, ... < N: every sample once over all ranks
            self.samples_per_rank = len(range(self.rank, self.num_samples, self.world_size))
        self.steps_per_block = steps_per_block
        self.max_batches = max_batches
        self._epoch = int(epoch)
        self._served = 0
        self._next_epoch = int(epoch)
        self._resume_pending = False

    @property
    def batches_per_epoch(self) -> int:
        """The number of batches (minibatches) one epoch serves on this rank, ``max_batches`` applied."""
        full, short = divmod(self.samples_per_rank, self.batch_size)
        count = full if self.drop_last or not short else full + 1
        return count if self.max_batches is None else min(count, self.max_batches)

    def _block_starts(self) -> list[int]:
        """The first batch of each item of an epoch, and the epoch's batch count at the end."""
        count, full = self.batches_per_epoch, self.samples_per_rank // self.batch_size
        starts = list(range(0, min(count, full), self.steps_per_block))
        if count > full:  # the short last batch: an item of its own, since it cannot be stacked with full ones
            starts.append(full)
        return [*starts, count]

    def __len__(self) -> int:
        """Return the number of items (batches, or blocks of batches) one epoch yields on this rank."""
        return len(self._block_starts()) - 1

    @property
    def position(self) -> int:
        """How many batches of the epoch in progress have been served (the current item's included)."""
        return self._served

    def epoch_indices(self, epoch: int) -> Tensor:
        """Return this rank's sample indices for ``epoch`` (on CPU), a pure function of (seed, epoch, rank)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(Stream.PERMUTATION, self.seed, epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        if not self.pad:
            return order[self.rank :: self.world_size]
        total = self.samples_per_rank * self.world_size
        if total > self.num_samples:
            order = order.repeat(math.ceil(total / self.num_samples))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        """Yield the items of the next epoch, or of the loaded one past its served batches, as tuples of tensors."""
        # A generator, so the epoch begins at the first batch requested: Lightning calls iter() once merely to
        # check iterability, and that probe must neither use up an epoch nor a pending resume.
        if self._resume_pending:
            epoch, skip = self._epoch, self._served
            self._resume_pending = False
        else:
            epoch, skip = self._next_epoch, 0
        self._epoch, self._served, self._next_epoch = epoch, skip, epoch + 1
        indices = self.epoch_indices(epoch).to(self.device)
        generator = torch.Generator(device=self.device) if self.transform is not None else None
        starts = self._block_starts()
        for first, end in zip(starts[:-1], starts[1:]):
            if end <= skip:
                continue
            first = max(first, skip)
            # One gather for the whole item: the rows of batches first..end-1, in order.
            idx = indices[first * self.batch_size : end * self.batch_size]
            out = [t.index_select(0, idx) for t in self.tensors]
            if self.transform is not None and generator is not None:
                parts = out[0].split(self.batch_size)
                for batch, part in enumerate(parts, start=first):
                    # Seeded per batch, so a resumed epoch (or another grouping) draws the same values.
                    generator.manual_seed(transform_seed(self.seed, epoch, batch, self.rank))
                    part.copy_(self.transform(part, generator))
            # Counted before the yield: while the consumer holds this item, its batches have been served.
            self._served = end
            if self.steps_per_block == 1:
                yield tuple(out)
            else:
                n = end - first
                yield Block(t.reshape(n, -1, *t.shape[1:]) for t in out)

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` from its first batch next, unless a position inside that same epoch was just loaded.

        Lightning restores a loader's state only when it resumes inside an epoch, and stops an epoch early under
        ``limit_train_batches``; the trainer's epoch counter is the one that is right in both cases, so a
        callback passes it here at every training epoch start (:class:`genlab.checkpoints.LoaderEpoch`).
        """
        if epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative int")
        if self._resume_pending and self._epoch == epoch:
            return  # a mid-epoch resume of this epoch continues past the batches already served
        self._resume_pending = False
        self._next_epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """Return the position in the batch stream: the epoch in progress, its batches served (and S when > 1)."""
        if self._served >= self.batches_per_epoch:
            state = {"epoch": self._epoch + 1, "batches_served": 0}
        else:
            state = {"epoch": self._epoch, "batches_served": self._served}
        if self.steps_per_block > 1:
            state["steps_per_block"] = self.steps_per_block
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next ``__iter__`` resume epoch ``state_dict['epoch']`` after its ``batches_served`` batches."""
        try:
            epoch, served = int(state_dict["epoch"]), int(state_dict["batches_served"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"InMemoryLoader state needs int 'epoch' and 'batches_served', got {state_dict!r}"
            ) from err
        if epoch < 0 or served < 0:
            raise ValueError(f"InMemoryLoader state must be non-negative, got {state_dict!r}")
        saved_steps = int(state_dict.get("steps_per_block", 1))
        if served >= self.batches_per_epoch:
            epoch, served = epoch + 1, 0
        elif served and saved_steps != self.steps_per_block:
            # Lightning counts the items of the epoch in progress; another grouping would end it early or late.
            raise ConfigError(
                f"data.steps_per_block={self.steps_per_block} differs from the {saved_steps} of the checkpoint, "
                f"which stopped inside an epoch; resume with data.steps_per_block={saved_steps}"
            )
        self._epoch, self._served, self._next_epoch = epoch, served, epoch
        self._resume_pending = True
