"""A resumable batch loader over tensors held whole on one device, for models where a DataLoader would dominate."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from genlab.data.seeding import Stream, derive_seed

BatchTransform = Callable[[Tensor, torch.Generator], Tensor]


class InMemoryLoader:
    """Serves index batches of ``tensors``; epoch ``e``'s order and transform draws depend only on (seed, e).

    Each ``__iter__`` serves one epoch and the next one serves the following epoch, except right after
    :meth:`load_state_dict`, when it resumes the saved epoch past the batches already served, and after
    :meth:`set_epoch`, which names the epoch to serve next. Lightning sees ``state_dict``/``load_state_dict``
    and stores the position in its checkpoints for mid-epoch resumption. ``epoch`` is the epoch the first
    ``__iter__`` serves.
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
        # Like DistributedSampler: every rank gets ceil(N / world_size) indices, padding by wrapping around.
        self.samples_per_rank = math.ceil(self.num_samples / self.world_size)
        self._epoch = int(epoch)
        self._served = 0
        self._next_epoch = int(epoch)
        self._resume_pending = False

    def __len__(self) -> int:
        """Return the number of batches one epoch yields on this rank."""
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def epoch_indices(self, epoch: int) -> Tensor:
        """Return this rank's sample indices for ``epoch`` (on CPU), a pure function of (seed, epoch, rank)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(Stream.PERMUTATION, self.seed, epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        total = self.samples_per_rank * self.world_size
        if total > self.num_samples:
            order = order.repeat(math.ceil(total / self.num_samples))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        """Yield the batches of the next epoch, or of the loaded one past its served batches, as tuples of tensors."""
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
        for batch in range(skip, len(self)):
            idx = indices[batch * self.batch_size : (batch + 1) * self.batch_size]
            out = [t.index_select(0, idx) for t in self.tensors]
            if self.transform is not None and generator is not None:
                # Seeded per batch, so a resumed epoch draws the same values for the batches it still serves.
                generator.manual_seed(derive_seed(Stream.TRANSFORM, self.seed, epoch, batch))
                out[0] = self.transform(out[0], generator)
            # Counted before the yield: while the consumer holds this batch, it has been served.
            self._served = batch + 1
            yield tuple(out)

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
        """Return the position in the batch stream: the epoch in progress and how many of its batches were served."""
        if self._served >= len(self):
            return {"epoch": self._epoch + 1, "batches_served": 0}
        return {"epoch": self._epoch, "batches_served": self._served}

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
        if served >= len(self):
            epoch, served = epoch + 1, 0
        self._epoch, self._served, self._next_epoch = epoch, served, epoch
        self._resume_pending = True
