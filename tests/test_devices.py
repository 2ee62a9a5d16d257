"""What a GPU run relies on, shown on the CPU: the `meta` device or a stand-in CUDA device where tensors would
change device, and recording stand-ins for the calls that only do something on a GPU.

- cpu_matmul leaves torch.get_float32_matmul_precision() readable (Lightning calls it on Ampere+ GPUs), and a GPU
  run neither probes nor routes CPU matmuls;
- epoch sums restored from a checkpoint (on the CPU) follow the device of the resumed run's values;
- fixed-seed pictures and the feature classifier restore the module device's RNG stream and reseed no other;
- the k-NN radii avoid CUDA's non-deterministic kthvalue and give its values;
- the guarded optimizer step reads nothing on the host per step on an accelerator, and still stops at the first
  non-finite step, before any checkpoint holds it;
- bf16 on a GPU without bfloat16 units is refused up front; training epoch means are synced under DDP; pictures
  read the split's CPU tensors rather than a new (GPU) loader; the k-sample estimate turns TF32 convolutions off.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, TensorDataset

from genlab import accelerator, cpu_matmul
from genlab.callbacks.images import PICTURE_SEED, PictureCallback
from genlab.checkpoints import LastCheckpoint, load_genlab_checkpoint
from genlab.checks import ConfigError
from genlab.metrics.classifier import train_classifier
from genlab.metrics.features import knn_radii
from genlab.metrics.likelihood import importance_weighted_log_likelihood
from genlab.models.base import GenerativeModule, NonFiniteError
from genlab.models.train_log import TrainLog

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}
needs_switch = pytest.mark.skipif(not cpu_matmul.available(), reason="this torch has no oneDNN fp32 matmul switch")


# -- finding 1: cpu_matmul and the matmul-precision getter --------------------------------------------------
@needs_switch
def test_routing_cpu_matmuls_keeps_the_matmul_precision_getter_readable():
    # Lightning's CUDA set-up calls torch.get_float32_matmul_precision() on Ampere+ GPUs; after the per-backend
    # flag alone it raised "mix of the legacy and new APIs", so every such GPU run crashed before its first step.
    for enabled in (True, False, True):
        cpu_matmul.use_onednn(enabled)
        assert cpu_matmul.onednn_enabled() == enabled
        assert torch.get_float32_matmul_precision() == ("medium" if enabled else "highest")
    assert cpu_matmul.select("onednn") == "onednn" and torch.get_float32_matmul_precision() == "medium"
    assert cpu_matmul.select("blas") == "blas" and torch.get_float32_matmul_precision() == "highest"


def test_a_gpu_run_neither_probes_nor_routes_cpu_matmuls(monkeypatch):
    def no_probe() -> None:
        raise AssertionError("a GPU run timed the CPU matmul libraries")

    monkeypatch.setattr(cpu_matmul, "probe", no_probe)
    monkeypatch.setattr(cpu_matmul, "auto_verdict", no_probe)
    cpu_matmul.use_onednn(False)
    for setting in cpu_matmul.CPU_MATMULS:
        assert cpu_matmul.select_for("gpu", setting) == "unused (trainer.accelerator=gpu)"  # what metrics.json says
        assert not cpu_matmul.onednn_enabled()
    with pytest.raises(ConfigError, match="cpu_matmul='fast'"):
        cpu_matmul.select_for("gpu", "fast")
    assert accelerator.runs_on_cpu("cpu") and not accelerator.runs_on_cpu("gpu") and not accelerator.runs_on_cpu("cuda")
    assert accelerator.runs_on_cpu("auto") == (not torch.cuda.is_available() and not torch.backends.mps.is_available())
    if cpu_matmul.available():
        assert cpu_matmul.select_for("cpu", "onednn") == "onednn" and cpu_matmul.onednn_enabled()


# -- finding 2: epoch sums after a resume on another device ------------------------------------------------
def test_epoch_sums_restored_from_a_checkpoint_follow_the_values_device():
    saved = TrainLog()
    saved.start_item(0)
    saved.record({"train/loss": torch.tensor(2.0)}, batch_size=4, on_step=True, on_epoch=True)
    state = saved.state_dict()  # as in a mid-epoch checkpoint: Lightning loads its tensors to the CPU
    resumed = TrainLog()
    resumed.load_state_dict(state)
    # The resumed run computes on another device (meta stands in for CUDA): the next minibatch's values are there.
    resumed.record({"train/loss": torch.tensor(4.0, device="meta")}, batch_size=4, on_step=True, on_epoch=True)
    ((means, total, _),) = resumed.take_epoch_means()
    assert total == 8 and means["train/loss_epoch"].device.type == "meta"
    # and on one device the sums are exact: (2 * 4 + 4 * 4) / 8
    again = TrainLog()
    again.load_state_dict(state)
    again.record({"train/loss": torch.tensor(4.0)}, batch_size=4, on_step=True, on_epoch=True)
    assert again.take_epoch_means()[0][0]["train/loss_epoch"].item() == 3.0


# -- finding 6: fixed-seed draws restore the device's stream and reseed no other ----------------------------
@pytest.fixture
def no_cuda_reseeding(monkeypatch):
    """torch.manual_seed reseeds every CUDA generator (the call is queued even on a CPU-only build): forbidden."""
    def reseed_all(seed: int) -> None:
        raise AssertionError(f"every CUDA generator was reseeded with {seed}")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseed_all)


class Drawer(PictureCallback):
    """Records a CPU draw made while drawing its picture."""

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.drawn = torch.rand(3)


def picture_epoch_end(module: Any) -> Drawer:
    callback = Drawer("unused", every_n_epochs=1)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=0, max_epochs=1)
    callback.on_validation_epoch_end(trainer, module)
    return callback


def test_pictures_draw_from_their_seed_and_restore_the_cpu_stream(no_cuda_reseeding):
    module = torch.nn.Linear(2, 2)
    module.device = torch.device("cpu")
    before = torch.random.get_rng_state()
    callback = picture_epoch_end(module)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(callback.drawn, torch.rand(3, generator=torch.Generator().manual_seed(PICTURE_SEED)))


def test_pictures_of_a_gpu_module_fork_and_seed_its_cuda_stream(monkeypatch):
    # What a CUDA build would do, recorded: fork_rng must save and restore the module's CUDA generator (the VAE
    # family draws its training noise there), and only that generator is seeded.
    forked, seeded = [], []

    @contextmanager
    def fork_rng(devices: list[Any], **kwargs: Any):
        forked.append(list(devices))
        state = torch.random.get_rng_state()
        yield
        torch.random.set_rng_state(state)

    @contextmanager
    def on_device(device: Any):
        seeded.append(("device", torch.device(device)))
        yield

    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    monkeypatch.setattr(torch.cuda, "device", on_device)
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append(("seed", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(("all", seed)))
    module = torch.nn.Linear(2, 2)
    module.device = torch.device("cuda", 1)
    picture_epoch_end(module)
    assert forked == [[torch.device("cuda", 1)]]
    assert seeded == [("device", torch.device("cuda", 1)), ("seed", PICTURE_SEED)]


def test_the_feature_classifier_reseeds_no_cuda_stream(no_cuda_reseeding):
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 4
    before = torch.random.get_rng_state()
    net, _ = train_classifier(x, y, num_classes=4, steps=2, batch_size=16, max_samples=None)
    assert torch.equal(torch.random.get_rng_state(), before)
    again, _ = train_classifier(x, y, num_classes=4, steps=2, batch_size=16, max_samples=None)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


# -- finding 10: k-NN radii without kthvalue --------------------------------------------------------------
class CallRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_knn_radii_are_the_kth_nearest_distances_without_kthvalue():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    features[100:110] = features[0]  # ties: ten copies of one point
    for k in (1, 3, 12):
        expected = torch.cdist(features, features).kthvalue(k + 1, dim=1).values
        with CallRecorder() as calls:
            radii = knn_radii(features, k, chunk=128)
        assert torch.equal(radii, expected), k
        # CUDA's kthvalue raises under torch.use_deterministic_algorithms (trainer.deterministic=true)
        assert "kthvalue" not in calls.names


# -- finding 20: no host read per optimizer step on an accelerator --------------------------------------
class OneWeight(GenerativeModule):
    """One weight vector; ``nan_at`` makes the loss of that optimizer step NaN; ``steps`` optimizer steps per
    minibatch (the GAN takes two)."""

    def __init__(self, nan_at: int = -1, steps: int = 1, defer: bool = False) -> None:
        super().__init__((2,), functools.partial(torch.optim.SGD, lr=0.1))
        self.w = torch.nn.Parameter(torch.ones(2))
        self.nan_at, self.steps, self.defer = nan_at, steps, defer
        self.run_config = {}

    def defers_finite_checks(self) -> bool:
        return self.defer or super().defers_finite_checks()

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        x, _ = batch
        for _ in range(self.steps):
            loss = ((x * self.w).sum(dim=1) ** 2).mean()
            if self.global_step == self.nan_at:
                loss = loss * float("nan")
            self.optimize(self.optimizers(), loss)

    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"loss": ((x * self.w).sum(dim=1) ** 2).mean()}


def test_an_optimizer_step_on_an_accelerator_reads_nothing_on_the_host():
    # On the meta device (a stand-in for CUDA) any read of a value on the host raises, as .item() did every step.
    module = OneWeight().to("meta")
    module.trainer = L.Trainer(**QUIET)
    module.trainer.strategy.connect(module)
    optimizer = module.configure_optimizers()
    for _ in range(3):
        module.optimize(optimizer, (module.w * 2).sum())
    assert module.w.device.type == "meta"


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(32, 2), torch.zeros(32, dtype=torch.long)), batch_size=4)


def test_a_deferred_check_stops_at_the_first_bad_step_before_any_checkpoint_holds_it(tmp_path: Path):
    # Three optimizer steps per minibatch, checked together at the item's end as on a GPU: the NaN of step 4 stops
    # the run naming step 4 (not 5, the item's last), and last.ckpt (written every step) stays at step 3.
    trainer = L.Trainer(max_steps=30, callbacks=[LastCheckpoint(tmp_path, every_n_train_steps=1)], **QUIET)
    with pytest.raises(NonFiniteError, match=r"^train/loss is not finite \(\[nan\]\) at global step 4, epoch 0"):
        trainer.fit(OneWeight(nan_at=4, steps=3, defer=True), train_dataloaders=loader())
    state = load_genlab_checkpoint(tmp_path / "last.ckpt")
    assert state["global_step"] == 3 and torch.isfinite(state["state_dict"]["w"]).all()


# -- finding 21: the small items --------------------------------------------------------------------------
def test_bf16_on_a_gpu_without_bfloat16_units_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    with pytest.raises(ConfigError, match=r"trainer.precision=bf16-mixed needs a GPU with bfloat16 units .* "
                                          r"Tesla T4 has compute capability 7.5: use trainer.precision=16-mixed"):
        accelerator.check_accelerator("gpu", "trainer=gpu", "bf16-mixed")
    for precision in ("32", "16-mixed", 32):
        accelerator.check_accelerator("gpu", "trainer=gpu", precision)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    accelerator.check_accelerator("gpu", "trainer=gpu", "bf16-mixed")


def test_training_epoch_means_are_synced_across_processes(monkeypatch):
    module = OneWeight()
    module.log_stage("train", {"loss": torch.tensor(1.0)}, batch_size=4, on_step=True, on_epoch=True)
    logged = []
    monkeypatch.setattr(module, "log_dict", lambda values, **kwargs: logged.append((set(values), kwargs)))
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # the x-axis values
    module.on_train_epoch_end()
    # Under DDP each rank holds its shard's sums; metrics.json's train/* must be over every rank's minibatches.
    assert [names for names, _ in logged] == [{"train/loss_epoch"}, {"train/loss"}]
    assert all(kwargs["sync_dist"] and kwargs["batch_size"] == 4 for _, kwargs in logged)


def test_pictures_take_the_split_tensors_rather_than_a_new_loader():
    x, y = torch.rand(50, 1, 8, 8), torch.arange(50)

    def no_loader() -> None:
        raise AssertionError("a new val loader copies the whole split to the GPU again")

    datamodule = SimpleNamespace(split_tensors=lambda split: (x, y) if split == "val" else None,
                                 val_dataloader=no_loader)
    batch = PictureCallback("unused").fixed_batch(SimpleNamespace(datamodule=datamodule), 20)
    assert torch.equal(batch[0], x[:20]) and torch.equal(batch[1], y[:20])


def test_the_k_sample_estimate_turns_tf32_convolutions_off():
    seen = []

    def log_weights(eps: Tensor) -> Tensor:
        seen.append(torch.backends.cudnn.allow_tf32)
        return -eps.square().sum(-1)

    before = torch.backends.cudnn.allow_tf32
    for workers in (1, 2):
        importance_weighted_log_likelihood(log_weights, lambda n: torch.randn(n, 3, 2), k=4, chunk=2, workers=workers)
    assert seen and not any(seen)  # float32 convolutions on a GPU: eval_precision=32 means float32
    assert torch.backends.cudnn.allow_tf32 == before
