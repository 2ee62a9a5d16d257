"""Tests of the data layer: IDX files, the in-memory loader, and every datamodule on small generated data."""

from __future__ import annotations

import gzip
import io
import urllib.error
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from batch_recorder import BatchRecorder
from lightning.fabric.utilities.types import _Stateful

from genlab.data import (
    DataFileError,
    DigitsDataModule,
    DownloadError,
    InMemoryLoader,
    MNISTDataModule,
    Toy2DDataModule,
    grid25_centers,
    make_moons,
    make_swissroll,
    read_idx,
    ring8_centers,
    sample_mixture,
    write_idx,
)

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


# -- IDX ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, dtype: type, compress: bool) -> None:
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) + 200
    path = tmp_path / "plain-name"  # gzip must be recognised by content, not by a .gz suffix
    write_idx(path, array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "a.idx"
    write_idx(path, np.array([1, 256], dtype=np.int16), gzip=False)
    assert path.read_bytes() == b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x02" + b"\x00\x01\x01\x00"


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda raw: b"\x01\x00" + raw[2:], "magic"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "dtype code 0x07"),
        (lambda raw: raw[:-1], "truncated data"),
        (lambda raw: raw[:6], "truncated header"),
        (lambda raw: raw[:2], "truncated header"),
        (lambda raw: raw + b"\x00\x00", "trailing garbage"),
        (lambda raw: gzip.compress(raw)[:-10], "gzip"),
        (lambda raw: b"\x1f\x8b" + b"not really gzip", "gzip"),
        (lambda raw: gzip.compress(raw[:-3]), "truncated data"),
    ],
    ids=["magic", "dtype", "data", "dims", "header", "trailing", "cut-gzip", "bad-gzip", "gz-data"],
)
def test_corrupt_idx_raises_naming_file(tmp_path: Path, corrupt: Callable[[bytes], bytes], message: str) -> None:
    path = tmp_path / "broken-file-name"
    write_idx(path, np.arange(12, dtype=np.uint8).reshape(3, 4), gzip=False)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataFileError, match=message) as info:
        read_idx(path)
    assert "broken-file-name" in str(info.value)
    assert isinstance(info.value, ValueError)


# -- InMemoryLoader -------------------------------------------------------------------------------


def _loader(n: int = 23, **kwargs: object) -> InMemoryLoader:
    options: dict = {"batch_size": 5, "shuffle": True, "seed": 3} | kwargs
    return InMemoryLoader((torch.arange(n), torch.arange(n) * 10), **options)


def _epoch(loader: InMemoryLoader) -> list[int]:
    return [int(i) for x, _ in loader for i in x]


def test_loader_covers_each_index_once_per_epoch() -> None:
    loader = _loader()
    assert len(loader) == 5
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == 5 and [len(b[0]) for b in batches] == [5, 5, 5, 5, 3]
        assert all(torch.equal(y, x * 10) for x, y in batches)
        assert sorted(int(i) for x, _ in batches for i in x) == list(range(23))


def test_loader_drop_last() -> None:
    loader = _loader(drop_last=True)
    assert len(loader) == 4
    assert len(_epoch(loader)) == 20


def test_loader_permutation_depends_on_seed_and_epoch_only() -> None:
    first, second = _loader(), _loader()
    epochs_a = [_epoch(first) for _ in range(3)]
    epochs_b = [_epoch(second) for _ in range(3)]
    assert epochs_a == epochs_b
    assert len({tuple(e) for e in epochs_a}) == 3
    assert _epoch(_loader(seed=4)) != epochs_a[0]
    assert _epoch(_loader(epoch=2)) == epochs_a[2]
    assert _epoch(_loader(shuffle=False)) == list(range(23))


def test_loader_ddp_shards_are_disjoint_equal_and_cover_all() -> None:
    n, world = 22, 4
    shards = [_epoch(_loader(n, rank=r, world_size=world)) for r in range(world)]
    lengths = {len(_loader(n, rank=r, world_size=world)) for r in range(world)}
    assert len(lengths) == 1
    assert all(len(s) == 6 for s in shards)
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))
    # 24 slots for 22 samples: exactly two are repeated padding, as with DistributedSampler.
    assert len(flat) - len(set(flat)) == 2
    single = _loader(n).epoch_indices(0)
    interleaved = torch.stack([_loader(n, rank=r, world_size=world).epoch_indices(0) for r in range(world)], 1)
    assert torch.equal(interleaved.flatten()[:n], single)


def test_loader_resumes_mid_epoch_with_exactly_the_remaining_batches() -> None:
    reference = _loader(transform=_jitter)
    uninterrupted = [list(reference), list(reference)]
    interrupted = _loader(transform=_jitter)
    list(interrupted)
    iterator = iter(interrupted)
    served = [next(iterator), next(iterator)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches_served": 2}
    resumed = _loader(transform=_jitter)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 3
    for got, want in zip(served + rest, uninterrupted[1], strict=True):
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert resumed.state_dict() == {"epoch": 2, "batches_served": 0}
    assert _epoch(resumed) == _epoch(_loader_at_epoch(2))


def _jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A batch transform whose output depends on its generator, to check resumed draws."""
    return x + torch.rand(x.shape, generator=generator)


def _loader_at_epoch(epoch: int) -> InMemoryLoader:
    loader = _loader()
    loader.load_state_dict({"epoch": epoch, "batches_served": 0})
    return loader


def test_loader_state_at_epoch_end_points_to_next_epoch() -> None:
    loader = _loader()
    assert isinstance(loader, _Stateful)
    assert loader.state_dict() == {"epoch": 0, "batches_served": 0}
    list(loader)
    assert loader.state_dict() == {"epoch": 1, "batches_served": 0}
    loader.load_state_dict({"epoch": 4, "batches_served": 5})
    assert loader.state_dict() == {"epoch": 5, "batches_served": 0}
    with pytest.raises(ValueError, match="batches_served"):
        loader.load_state_dict({"epoch": 1})


def test_loader_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="length"):
        InMemoryLoader((torch.zeros(3), torch.zeros(4)), 2, True, 0)
    with pytest.raises(ValueError, match="batch_size"):
        _loader(batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        _loader(rank=2, world_size=2)


_Recorder = BatchRecorder


class _ValRecorder(_Recorder):
    """Also records the size of every validation batch."""

    def __init__(self) -> None:
        super().__init__()
        self.val_sizes: list[int] = []

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.val_sizes.append(len(batch[0]))


class _Crash(RuntimeError):
    """Stands for a job killed mid-epoch, right after a checkpoint was written."""


class _CheckpointThenCrash(L.Callback):
    """Saves a checkpoint after global step ``step``, as ModelCheckpoint(every_n_train_steps) would, then dies."""

    def __init__(self, step: int, path: Path) -> None:
        self.step = step
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise _Crash


def _trainer(**kwargs: object) -> L.Trainer:
    """A quiet two-epoch CPU trainer that writes nothing."""
    options: dict = {
        "accelerator": "cpu",
        "max_epochs": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**(options | kwargs))


def _fit(
    loader: InMemoryLoader, model: _Recorder, ckpt_path: Path | None = None, callbacks: list | None = None
) -> None:
    trainer = _trainer(callbacks=callbacks)
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path)


def test_lightning_resumes_loader_mid_epoch(tmp_path: Path) -> None:
    reference = _Recorder()
    _fit(_loader(), reference)
    assert len(reference.seen) == 10
    crashed, resumed = _Recorder(), _Recorder()
    ckpt = tmp_path / "mid.ckpt"
    with pytest.raises(_Crash):
        _fit(_loader(), crashed, callbacks=[_CheckpointThenCrash(7, ckpt)])
    assert torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_served": 2}
    ]
    _fit(_loader(), resumed, ckpt_path=ckpt)
    assert crashed.seen + resumed.seen == reference.seen


# -- MNIST ----------------------------------------------------------------------------------------


def _write_mnist(folder: Path, n_train: int = 50, n_test: int = 20, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gzip=compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8), gzip=compress)


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    _write_mnist(tmp_path / "mnist")
    return tmp_path


def test_mnist_shapes_scaling_and_splits(mnist_root: Path) -> None:
    dm = MNISTDataModule(root=mnist_root, batch_size=16, val_size=10)
    assert dm.data_shape == (1, 28, 28) and dm.num_classes == 10
    assert "not loaded" in dm.describe()
    dm.setup("fit")
    x, y = dm.train_tensors()
    assert x.shape == (40, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    xv, yv = dm.split_tensors("val")
    xt, yt = dm.split_tensors("test")
    assert len(xv) == 10 and len(xt) == 20
    assert torch.equal(torch.sort(torch.cat([y, yv])).values, torch.sort(torch.arange(50) % 10).values)
    assert torch.bincount(yt, minlength=10).tolist() == [2] * 10
    all_pixels = torch.cat([x, xv]).flatten()
    assert float(all_pixels.min()) == 0.0 and float(all_pixels.max()) == 1.0
    batches = list(dm.train_dataloader())
    assert [len(b[0]) for b in batches] == [16, 16, 8]
    assert batches[0][0].shape == (16, 1, 28, 28)
    assert [len(b[0]) for b in dm.test_dataloader()] == [16, 4]
    assert "train 40, val 10, test 20" in dm.describe()


def test_mnist_fraction_split_is_seeded_and_raw_files_load(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "fashion_mnist", compress=False)
    a = MNISTDataModule(root=tmp_path, dataset="fashion_mnist", val_size=0.2, seed=1)
    b = MNISTDataModule(root=tmp_path, dataset="fashion_mnist", val_size=0.2, seed=1)
    c = MNISTDataModule(root=tmp_path, dataset="fashion_mnist", val_size=0.2, seed=2)
    assert len(a.split_tensors("val")[0]) == 10
    assert torch.equal(a.split_tensors("val")[0], b.split_tensors("val")[0])
    assert not torch.equal(a.split_tensors("val")[0], c.split_tensors("val")[0])


def test_mnist_datamodule_under_a_trainer(mnist_root: Path) -> None:
    dm = MNISTDataModule(root=mnist_root, batch_size=16, val_size=12, binarize="dynamic", flatten=True)
    model = _ValRecorder()
    trainer = _trainer()
    trainer.fit(model, datamodule=dm)
    assert isinstance(trainer.train_dataloader, InMemoryLoader)
    assert [len(batch) for batch in model.seen] == [16, 16, 6] * 2
    assert all(set(pixel for pixel in batch[0]) <= {0.0, 1.0} and len(batch[0]) == 784 for batch in model.seen)
    # The sanity check, then one full validation pass per epoch.
    assert model.val_sizes == [12, 12, 12]


def test_mnist_flatten_and_dataloader_path(mnist_root: Path) -> None:
    dm = MNISTDataModule(root=mnist_root, flatten=True, in_memory=False, batch_size=8)
    assert dm.data_shape == (784,)
    loader = dm.train_dataloader()
    assert isinstance(loader, torch.utils.data.DataLoader)
    x, y = next(iter(loader))
    assert x.shape == (8, 784) and y.shape == (8,)


def _bits(loader: InMemoryLoader) -> list[torch.Tensor]:
    return [x for x, _ in loader]


def test_mnist_dynamic_binarization(mnist_root: Path) -> None:
    dm = MNISTDataModule(root=mnist_root, binarize="dynamic", batch_size=64, val_size=10)
    loader = dm.train_dataloader()
    epoch0, epoch1 = _bits(loader), _bits(loader)
    assert set(torch.cat(epoch0).unique().tolist()) == {0.0, 1.0}
    again = MNISTDataModule(root=mnist_root, binarize="dynamic", batch_size=64, val_size=10).train_dataloader()
    assert all(torch.equal(a, b) for a, b in zip(_bits(again), epoch0, strict=True))
    # Same images (same seed, one batch holding the whole split), different bits in the next epoch.
    assert not torch.equal(epoch0[0], epoch1[0])
    grey, _ = dm.train_tensors()
    assert len(grey.unique()) > 2
    val0, val1 = _bits(dm.val_dataloader()), _bits(dm.val_dataloader())
    assert set(torch.cat(val0).unique().tolist()) == {0.0, 1.0}
    assert torch.equal(val0[0], val1[0])


def test_mnist_static_binarization_is_fixed(mnist_root: Path) -> None:
    dm = MNISTDataModule(root=mnist_root, binarize="static", batch_size=64, val_size=10)
    loader = dm.train_dataloader()
    epoch0, epoch1 = _bits(loader), _bits(loader)
    assert set(epoch0[0].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(epoch0[0].sum(0), epoch1[0].sum(0))
    x, _ = dm.train_tensors()
    assert set(x.unique().tolist()) == {0.0, 1.0}
    other_seed = MNISTDataModule(root=mnist_root, binarize="static", seed=5)
    assert torch.equal(dm.split_tensors("test")[0], other_seed.split_tensors("test")[0])


def test_mnist_missing_root_names_folder_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        MNISTDataModule(root=missing).setup()
    assert str(missing) in str(info.value)
    assert "GENLAB_DATA_DIR" in str(info.value) and "data.root=" in str(info.value)
    monkeypatch.delenv("GENLAB_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="GENLAB_DATA_DIR"):
        MNISTDataModule().setup()


def test_mnist_root_from_environment(mnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_DATA_DIR", str(mnist_root))
    assert len(MNISTDataModule(val_size=5).train_tensors()[0]) == 45


def test_mnist_missing_file_names_file_folder_and_fix(mnist_root: Path) -> None:
    (mnist_root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        MNISTDataModule(root=mnist_root).setup()
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert str(mnist_root / "mnist") in message
    assert "data.download=true" in message and "copy" in message


def test_mnist_count_mismatch_names_both_files_and_counts(mnist_root: Path) -> None:
    labels = mnist_root / "mnist" / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(49, dtype=np.uint8))
    with pytest.raises(DataFileError) as info:
        MNISTDataModule(root=mnist_root).setup()
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "50" in message and "49" in message


def test_mnist_wrong_dims_rejected(mnist_root: Path) -> None:
    write_idx(mnist_root / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 27), dtype=np.uint8))
    with pytest.raises(DataFileError, match="t10k-images-idx3-ubyte"):
        MNISTDataModule(root=mnist_root).setup()


def test_mnist_download_failure_says_no_network_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    with pytest.raises(DownloadError) as info:
        MNISTDataModule(root=tmp_path, download=True).setup()
    message = str(info.value)
    assert "no network" in message and str(tmp_path / "mnist") in message
    assert "ossci-datasets.s3.amazonaws.com" in message
    assert not list((tmp_path / "mnist").iterdir())


def test_mnist_download_falls_back_to_next_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "served"
    _write_mnist(source / "mnist")
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        if "ossci" in url:
            raise urllib.error.URLError("mirror down")
        return io.BytesIO((source / "mnist" / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    dm = MNISTDataModule(root=tmp_path / "data", download=True, val_size=10)
    assert len(dm.train_tensors()[0]) == 40
    assert len(requested) == 8 and sum("storage.googleapis.com" in url for url in requested) == 4
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        p.name for p in (source / "mnist").iterdir()
    )
    requested.clear()
    MNISTDataModule(root=tmp_path / "data", download=True).prepare_data()
    assert requested == []


def test_mnist_does_not_download_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("urlopen called without download=True")

    monkeypatch.setattr("urllib.request.urlopen", forbidden)
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError):
        MNISTDataModule(root=tmp_path).setup()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_size": 1.5}, "val_size"),
        ({"val_size": 0}, "val_size"),
        ({"seed": -1}, "seed"),
        ({"binarize": "sometimes"}, "binarize"),
        ({"dataset": "cifar"}, "dataset"),
        ({"num_workers": -2}, "num_workers"),
    ],
)
def test_datamodule_arguments_validated(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError) as info:
        MNISTDataModule(root="unused", **kwargs)
    assert key in str(info.value) and repr(next(iter(kwargs.values()))) in str(info.value)


def test_val_size_too_large_for_data(mnist_root: Path) -> None:
    with pytest.raises(ValueError, match="val_size=50"):
        MNISTDataModule(root=mnist_root, val_size=50).setup()


# -- digits ---------------------------------------------------------------------------------------


def test_digits_shapes_ranges_and_splits() -> None:
    dm = DigitsDataModule(seed=0)
    assert dm.data_shape == (1, 8, 8)
    x, y = dm.train_tensors()
    xv, _ = dm.split_tensors("val")
    xt, yt = dm.split_tensors("test")
    assert len(xt) == round(0.2 * 1797) and len(x) + len(xv) + len(xt) == 1797
    assert len(xv) == round(0.1 * (1797 - len(xt)))
    assert x.shape[1:] == (1, 8, 8) and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(torch.cat([y, yt]).unique().tolist()) == set(range(10))
    flat = DigitsDataModule(flatten=True, test_size=0.5)
    assert flat.data_shape == (64,) and flat.split_tensors("test")[0].shape[1:] == (64,)


# -- toy 2-D --------------------------------------------------------------------------------------


def test_ring_and_grid_centres() -> None:
    ring = ring8_centers()
    assert ring.shape == (8, 2)
    assert torch.allclose(ring.norm(dim=1), torch.full((8,), 2.0))
    assert torch.allclose(ring[2], torch.tensor([0.0, 2.0]), atol=1e-6)
    grid = grid25_centers()
    assert grid.shape == (25, 2)
    expected = {(float(a), float(b)) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}
    assert {tuple(p) for p in grid.tolist()} == expected


@pytest.mark.parametrize(("kind", "std"), [("ring8", 0.02), ("grid25", 0.05)])
def test_toy_mixture_points_near_their_centres(kind: str, std: float) -> None:
    dm = Toy2DDataModule(kind, n_train=3000, n_val=100, n_test=100)
    assert dm.std == std and dm.centers is not None and dm.num_classes == len(dm.centers)
    x, y = dm.train_tensors()
    assert x.shape == (3000, 2) and y.dtype == torch.int64
    distance = (x - dm.centers[y]).norm(dim=1)
    assert float(distance.max()) < 6 * std
    assert torch.bincount(y, minlength=dm.num_classes).min() > 3000 / dm.num_classes / 2


def test_sample_mixture_is_seeded() -> None:
    centers = ring8_centers()
    a = sample_mixture(centers, 0.1, 50, torch.Generator().manual_seed(1))
    b = sample_mixture(centers, 0.1, 50, torch.Generator().manual_seed(1))
    c = sample_mixture(centers, 0.1, 50, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_toy_datamodule_reproducible_and_sized() -> None:
    a = Toy2DDataModule("grid25", n_train=300, n_val=40, n_test=60, seed=7)
    b = Toy2DDataModule("grid25", n_train=300, n_val=40, n_test=60, seed=7)
    c = Toy2DDataModule("grid25", n_train=300, n_val=40, n_test=60, seed=8)
    for split, size in (("train", 300), ("val", 40), ("test", 60)):
        assert len(a.split_tensors(split)[0]) == size
        assert torch.equal(a.split_tensors(split)[0], b.split_tensors(split)[0])
    assert not torch.equal(a.train_tensors()[0], c.train_tensors()[0])
    assert a.data_shape == (2,)


def test_moons_and_swissroll() -> None:
    x, y = make_moons(400, 0.05, torch.Generator().manual_seed(0))
    assert x.shape == (400, 2) and set(y.tolist()) == {0, 1}
    # sklearn's upper moon is the unit half circle centred at the origin.
    assert float((x[y == 0].norm(dim=1) - 1).abs().max()) < 0.3
    roll, zeros = make_swissroll(400, 0.0, torch.Generator().manual_seed(0))
    assert roll.shape == (400, 2) and not zeros.any()
    assert 0.5 < float(roll.std()) < 2.0 and float(roll.abs().max()) < 2.5
    dm = Toy2DDataModule("moons", n_train=100, n_val=10, n_test=10)
    assert dm.centers is None and dm.std is None and dm.num_classes == 2
    assert Toy2DDataModule("swissroll").num_classes == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"kind": "spiral"}, "kind"),
        ({"n_train": 0}, "n_train"),
        ({"binarize": "static"}, "binarize"),
        ({"val_size": 0.1}, "val_size"),
    ],
)
def test_toy_arguments_validated(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Toy2DDataModule(**kwargs)
