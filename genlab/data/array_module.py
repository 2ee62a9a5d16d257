"""The base datamodule for datasets that fit in memory as arrays: splitting, binarization, flattening, loaders."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset, default_collate

from genlab.checks import ConfigError, check_arg
from genlab.data.binarize import BINARIZE_MODES, bernoulli_transform, binarize_once
from genlab.data.seeding import Stream, derive_seed
from genlab.data.tensor_loader import InMemoryLoader

SPLITS = ("train", "val", "test")
# Binarization streams: one per source file, so the bits do not depend on the run seed or the split.
_TRAIN_FILE, _TEST_FILE = 0, 1


def is_int(value: Any) -> bool:
    """Return whether ``value`` is an integer and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _binarizing_collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    # Module-level so DataLoader workers can pickle it; draws from the worker's seeded global RNG.
    x, y = default_collate(batch)
    return torch.bernoulli(x), y


class RankShard(Sampler[int]):
    """Indices rank, rank + W, rank + 2W, ... < n: each of W ranks evaluates its own samples, each sample once."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, n, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ArrayDataModule(L.LightningDataModule, ABC):
    """Serves ``(x float32 (B, *data_shape), y int64 (B,))`` batches from arrays a subclass returns in ``load_arrays``.

    Subclasses set ``name``, ``data_shape`` (via :meth:`output_shape`, before any loading) and ``num_classes``.
    """

    name: str = "array"
    data_shape: tuple[int, ...] = ()
    num_classes: int = 0

    def __init__(
        self,
        batch_size: int = 128,
        val_size: float | int = 0.1,
        seed: int = 0,
        in_memory: bool = True,
        num_workers: int = 0,
        binarize: str = "none",
        flatten: bool = False,
        steps_per_block: int = 1,
    ) -> None:
        super().__init__()
        check_arg("batch_size", batch_size, is_int(batch_size) and batch_size > 0, "a positive int")
        check_arg(
            "val_size",
            val_size,
            (isinstance(val_size, float) and 0.0 < val_size < 1.0) or (is_int(val_size) and val_size >= 1),
            "a fraction in (0, 1) or an int count >= 1 smaller than the training set",
        )
        check_arg("seed", seed, is_int(seed) and seed >= 0, "a non-negative int")
        check_arg("in_memory", in_memory, isinstance(in_memory, bool), "true or false")
        check_arg("num_workers", num_workers, is_int(num_workers) and num_workers >= 0, "a non-negative int")
        check_arg("binarize", binarize, binarize in BINARIZE_MODES, " | ".join(map(repr, BINARIZE_MODES)))
        check_arg("flatten", flatten, isinstance(flatten, bool), "true or false")
        check_arg("steps_per_block", steps_per_block, is_int(steps_per_block) and steps_per_block >= 1,
                  "a positive int (1: one optimizer step per loader item, as a plain loop)")
        check_arg("steps_per_block", steps_per_block, in_memory or steps_per_block == 1,
                  "1 with data.in_memory=false (blocks of batches come from the in-memory loader)")
        self.batch_size = int(batch_size)
        self.val_size = val_size
        self.seed = int(seed)
        self.in_memory = in_memory
        self.num_workers = int(num_workers)
        self.binarize = binarize
        self.flatten = flatten
        self.steps_per_block = int(steps_per_block)
        self._splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def output_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the shape of one x as served: ``sample_shape``, or its product as one dim when flattening."""
        return (math.prod(sample_shape),) if self.flatten else tuple(sample_shape)

    @abstractmethod
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(x_train, y_train, x_test, y_test)``: float32 x of shape (N, *sample shape), integer labels (N,)."""

    def setup(self, stage: str | None = None) -> None:
        """Load, binarize and split the arrays once; later calls, for any stage, do nothing."""
        if self._splits is not None:
            return
        x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in self.load_arrays())
        x_train, x_test = x_train.float(), x_test.float()
        y_train, y_test = y_train.long(), y_test.long()
        self._check_arrays(x_train, y_train, x_test, y_test)
        n = len(x_train)
        n_val = self._val_count(n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(Stream.SPLIT, self.seed)))
        val_idx, train_idx = order[:n_val], order[n_val:]
        x_fixed = x_train
        if self.binarize != "none":
            # One fixed draw per file: static mode trains on it too; dynamic mode keeps it for val (as in IWAE).
            x_fixed, x_test = binarize_once(x_train, _TRAIN_FILE), binarize_once(x_test, _TEST_FILE)
        x_fit = x_fixed if self.binarize == "static" else x_train
        shape = (-1, *self.data_shape)
        self._splits = {
            "train": (x_fit[train_idx].reshape(shape).contiguous(), y_train[train_idx]),
            "val": (x_fixed[val_idx].reshape(shape).contiguous(), y_train[val_idx]),
            "test": (x_test.reshape(shape).contiguous(), y_test),
        }

    def _check_arrays(self, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> None:
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            if math.prod(x.shape[1:]) != math.prod(self.data_shape) or len(x) != len(y) or y.ndim != 1:
                raise ValueError(
                    f"{self.name}: {split} arrays x {tuple(x.shape)}, y {tuple(y.shape)} do not match"
                    f" data_shape {self.data_shape} with one label per sample"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"{self.name}: {split} labels span [{y.min().item()}, {y.max().item()}],"
                    f" outside 0..{self.num_classes - 1}"
                )
            if self.binarize != "none" and len(x) and (x.min() < 0 or x.max() > 1):
                raise ConfigError(
                    f"binarize={self.binarize!r} needs data in [0, 1], but {self.name} {split} spans"
                    f" [{x.min().item():g}, {x.max().item():g}]; use binarize='none'"
                )

    def _val_count(self, n: int) -> int:
        count = round(self.val_size * n) if isinstance(self.val_size, float) else int(self.val_size)
        check_arg(
            "val_size",
            self.val_size,
            1 <= count < n,
            f"a fraction or count leaving at least one validation and one training sample of the {n} in {self.name}",
        )
        return count

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """Return the CPU tensors ``(x, y)`` of ``split`` as served, minus dynamic binarization; loads on first use."""
        check_arg("split", split, split in SPLITS, " | ".join(map(repr, SPLITS)))
        self.setup()
        assert self._splits is not None
        return self._splits[split]

    def train_tensors(self) -> tuple[Tensor, Tensor]:
        """Return the whole training split as CPU tensors (static binarization applied, dynamic not)."""
        return self.split_tensors("train")

    def train_dataloader(self) -> InMemoryLoader | DataLoader:
        """Return the shuffled training loader (redrawing bits every epoch under dynamic binarization)."""
        return self._loader("train")

    def val_dataloader(self) -> InMemoryLoader | DataLoader:
        """Return the validation loader, in fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> InMemoryLoader | DataLoader:
        """Return the test loader, in fixed order."""
        return self._loader("test")

    def _loader(self, split: str) -> InMemoryLoader | DataLoader:
        x, y = self.split_tensors(split)
        train = split == "train"
        dynamic = train and self.binarize == "dynamic"
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if not train and len(x) < world_size:
            raise ConfigError(
                f"the {split} split of {self.name} has {len(x)} samples, fewer than the {world_size} processes "
                f"(trainer.devices x trainer.num_nodes); each process needs one to evaluate: use fewer processes"
                + (" or a larger data.val_size" if split == "val" else "")
            )
        if not self.in_memory:
            return self._dataloader(x, y, train, dynamic, rank, world_size)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        steps_per_block = self.steps_per_block if train else 1
        return InMemoryLoader(
            (x.to(device), y.to(device)),
            batch_size=self.batch_size,
            shuffle=train,
            seed=self.seed,
            transform=bernoulli_transform if dynamic else None,
            rank=rank,
            world_size=world_size,
            # A loader rebuilt mid-fit (reload_dataloaders_every_n_epochs) must not restart the epoch sequence.
            epoch=trainer.current_epoch if trainer is not None and train else 0,
            steps_per_block=steps_per_block,
            max_batches=self._block_batch_limit(trainer) if steps_per_block > 1 else None,
            pad=train,  # evaluation counts every sample once (training keeps the ranks in step)
        )

    def _dataloader(self, x: Tensor, y: Tensor, train: bool, dynamic: bool, rank: int, world_size: int) -> DataLoader:
        """A torch DataLoader (``in_memory=false``), sharded by rank under several processes like the in-memory loader:
        the training split through a seeded ``DistributedSampler`` (padded, so the ranks step together; Lightning
        calls its ``set_epoch``), the evaluation splits through :class:`RankShard` (each sample once)."""
        dataset = TensorDataset(x, y)
        seed = derive_seed(Stream.PERMUTATION, self.seed)
        sampler: Sampler[int] | None = None
        if world_size > 1:
            sampler = (DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed) if train
                       else RankShard(len(dataset), rank, world_size))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_binarizing_collate if dynamic else None,
            generator=torch.Generator().manual_seed(seed) if train and sampler is None else None,
        )

    def _block_batch_limit(self, trainer: L.Trainer | None) -> int | None:
        """``trainer.limit_train_batches`` as a count of batches for the block loader, which applies it itself.

        Lightning counts loader items, so with blocks of S batches it would apply an int limit to blocks; the loader
        caps batches instead (Lightning's min(limit, items) then keeps every item). A fraction would be applied a
        second time to the items, and an int ``val_check_interval`` would count items: both are refused.
        """
        if trainer is None:
            return None
        limit, interval = trainer.limit_train_batches, trainer.val_check_interval
        check_arg("trainer.limit_train_batches", limit, is_int(limit) or limit == 1.0,
                  f"an int count of batches, or 1.0, with data.steps_per_block={self.steps_per_block} > 1 "
                  "(or set data.steps_per_block=1)")
        check_arg("trainer.val_check_interval", interval, not is_int(interval),
                  f"null or a fraction of the epoch with data.steps_per_block={self.steps_per_block} > 1 "
                  "(or set data.steps_per_block=1)")
        return int(limit) if is_int(limit) else None

    def describe(self) -> str:
        """Return a one-line summary for logs: name, split sizes (once loaded), sample shape, classes, binarization."""
        if self._splits is None:
            sizes = "not loaded"
        else:
            sizes = ", ".join(f"{split} {len(self._splits[split][0])}" for split in SPLITS)
        return (
            f"{self.name}: {sizes}; x {self.data_shape} float32; {self.num_classes} classes;"
            f" binarize={self.binarize}; batch {self.batch_size}"
        )
