"""DDP equals one process: two gloo ranks on the CPU compute what one process computes, for every model family.

One launch (``sweep``) starts ``python -m genlab -m`` as the two tasks of a simulated ``srun`` step and runs a job
per family (tests/ddp_jobs/job/*.yaml) on the 8x8 digits, whose validation (143) and test (359) splits two ranks
do not divide. Every rank records what it trained on, drew and scored (tests/rank_weights.py); the tests below
read those records, the run folders and the two tasks' outputs. The checks that need no second process (loader
shards, seeds per rank, the refusals) run in this process or as single ``python -m genlab`` calls.
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, read_metrics, run_cli
from ddp_launch import SLURM_JOB_ID, SLURM_STEP_ID, srun
from hydra import compose, initialize_config_dir
from in_process import tiny_run

from genlab.checkpoints import ResumableRNG, load_genlab_checkpoint, seed_rank_streams
from genlab.data.array_module import ArrayDataModule
from genlab.data.download import download_file
from genlab.data.tensor_loader import InMemoryLoader
from genlab.losses.elbo import kl_standard_normal
from genlab.metrics.clustering import ClusteringScores, clustering_scores
from genlab.sample import load_model
from genlab.train import train

JOBS = ["ae", "vae", "vae_cut", "vae_resumed", "iwae", "iwae2", "vade", "gan"]
FINISHED = [j for j in JOBS if j != "vae_cut"]
STOCHASTIC = ["vae", "iwae", "iwae2", "vade", "gan"]  # draw reparameterization or latent noise in training
BATCH = 16  # per rank; the one-process reference of the autoencoder trains on 2 x BATCH
COMMON = [
    "data=digits", "data.val_size=143", f"data.batch_size={BATCH}",
    "trainer.limit_train_batches=6", "trainer.enable_progress_bar=false", "logger=csv", "callbacks=lean",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


class Sweep:
    """The launch's folders and outputs, and each rank's records (tests/rank_weights.py) per job."""

    def __init__(self, log_dir: Path, tasks: list) -> None:
        self.log_dir, self.tasks = log_dir, tasks
        self.root = log_dir / "train" / "multiruns" / f"slurm-{SLURM_JOB_ID}.{SLURM_STEP_ID}"

    def ranks(self, job: str) -> list[dict]:
        return [torch.load(self.root / job / "ranks" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    def checkpoint(self, job: str, name: str = "last") -> dict:
        return load_genlab_checkpoint(self.root / job / "checkpoints" / f"{name}.ckpt")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    log_dir = tmp_path_factory.mktemp("ddp") / "outputs"
    tasks = srun(["-m", f"+job={','.join(JOBS)}", f"hydra.searchpath=[file://{REPO}/tests/ddp_jobs]",
                  "hydra.sweep.subdir=${hydra:runtime.choices.job}", *COMMON, *DDP, f"paths.log_dir={log_dir}",
                  "+callbacks.ranks._target_=rank_weights.RankWeights",
                  "+callbacks.ranks.dirpath=${paths.output_dir}/ranks"], timeout=300)  # ~25 s of CPU; a hang times out
    return Sweep(log_dir, tasks)


def rows(tensor: torch.Tensor) -> Counter:
    """The rows of a 2-D tensor as a multiset (each row's bytes)."""
    return Counter(bytes(row.numpy().tobytes()) for row in tensor.float().contiguous())


# -- one launch, many checks ----------------------------------------------------------------------------------


def test_only_the_interrupted_job_failed(sweep: Sweep) -> None:
    # vae_cut ends with Interrupted by design; Hydra reports a sweep's first failed job once the others have run.
    assert all((sweep.root / job / "metrics.json").is_file() for job in FINISHED), sweep.tasks[0].output[-5000:]
    for task in sweep.tasks:
        failures = [line for line in task.output.splitlines() if line.startswith("Error executing job")]
        assert task.returncode == 1 and len(failures) == 1 and "+job=vae_cut" in failures[0], task.output[-3000:]
        assert "Interrupted: stopped by SIGINT" in task.output
    assert sorted(p.name for p in sweep.root.iterdir() if p.is_dir()) == sorted(JOBS)


def test_every_task_agrees_on_the_run_folder_and_rank_zero_alone_writes(sweep: Sweep) -> None:
    # srun starts every task as its own Hydra app: all must name the sweep folder after the SLURM job and step,
    # not after their own clock and random id (one folder, not one per task).
    assert [p.name for p in (sweep.log_dir / "train" / "multiruns").iterdir()] == [sweep.root.name]
    rank0, rank1 = sweep.tasks
    for job in FINISHED:
        folder = sweep.root / job
        records = sweep.ranks(job)
        assert [r["rank"] for r in records] == [0, 1] and {r["world_size"] for r in records} == {2}
        assert {r["output_dir"] for r in records} == {str(folder)}
        assert (folder / ".hydra" / "config.yaml").is_file() and (folder / "metrics.json").is_file()
        assert (folder / "train_rank1.log").is_file()  # rank 1 logs beside rank 0, into a file of its own
        assert rank0.output.count(f"genlab: run folder {folder}\n") == 1
    assert "genlab: run folder" not in rank1.output and "genlab: final metrics" not in rank1.output
    assert sorted(p.parent for p in sweep.log_dir.rglob("metrics.json")) == sorted(sweep.root / j for j in FINISHED)


def test_ranks_train_different_data_and_keep_identical_replicas(sweep: Sweep) -> None:
    for job in FINISHED:
        first, second = sweep.ranks(job)
        assert first["first_batch_sum"] != second["first_batch_sum"], job
        for name, value in first["state_dict"].items():
            assert torch.equal(second["state_dict"][name], value), f"{job}: {name} differs between the ranks"
    # VaDE's mixture prior is fitted once, on rank 0, and broadcast: the ranks' priors are equal, not merely close.
    vade = sweep.ranks("vade")[0]["state_dict"]
    assert bool(vade["prior_fitted"]) and vade["cluster_means"].abs().sum() > 0
    # GAN: both optimizers were saved, and the bf16-mixed run really computed in bfloat16.
    assert len(sweep.checkpoint("gan")["optimizer_states"]) == 2
    assert {r["activation_dtype"] for r in sweep.ranks("gan")} == {"torch.bfloat16"}


def test_each_rank_draws_its_own_noise(sweep: Sweep) -> None:
    # Lightning seeds every rank alike; identical streams would give every rank the same reparameterization noise
    # and the same GAN latents (so the generator's effective batch would be one rank's).
    for job in STOCHASTIC:
        first, second = (r["next_noise"] for r in sweep.ranks(job))
        assert not torch.equal(first, second), f"{job}: both ranks would draw the same noise"


def test_the_autoencoder_on_two_ranks_ends_where_one_process_with_the_doubled_batch_ends(sweep: Sweep,
                                                                                          tmp_path: Path) -> None:
    from genlab.train import train

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, "model=ae", "trainer.max_epochs=1", f"data.batch_size={2 * BATCH}",
                                           "test=false", f"paths.output_dir={tmp_path}"])
    train(cfg)
    one = load_genlab_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    two = sweep.ranks("ae")[0]["state_dict"]
    assert one["global_step"] == sweep.checkpoint("ae")["global_step"] == 6
    for name, value in two.items():
        # Step j: the ranks' batches j together are the one-process batch j, and the mean of the ranks' mean
        # gradients is the mean gradient of that 2b batch; only the order of float sums differs.
        assert torch.allclose(value, one["state_dict"][name], rtol=1e-4, atol=1e-6), name


def test_evaluation_scores_each_image_exactly_once(sweep: Sweep) -> None:
    # 143 validation and 359 test images on 2 ranks: a padded shard would score one image twice.
    for job in FINISHED:
        _, datamodule = load_model(sweep.checkpoint(job))
        records = sweep.ranks(job)
        for split, key in (("val", "val_rows"), ("test", "test_rows")):
            want = rows(datamodule.split_tensors(split)[0].flatten(1))
            got = rows(torch.cat([r[key] for r in records]))
            assert got == want, f"{job} {split}: {sum(got.values())} images scored, {sum(want.values())} in the split"
            sizes = [len(r[key]) for r in records]
            assert abs(sizes[0] - sizes[1]) <= 1  # the two shards differ by at most the one odd image


def test_synced_metrics_and_test_nll_agree_with_one_process(sweep: Sweep) -> None:
    metrics = read_metrics(sweep.root / "vae")
    model, datamodule = load_model(sweep.checkpoint("vae", "best"))
    x, _ = datamodule.split_tensors("val")
    with torch.no_grad():
        mean, log_var = model.posterior(x)
    # val/kl is closed-form: the synced value is the mean over every validation image, each once. (It is from the
    # last validation epoch, whose weights last.ckpt holds.)
    last, _ = load_model(sweep.checkpoint("vae"))
    with torch.no_grad():
        kl_all = kl_standard_normal(*last.posterior(x)).mean().item()
        kl_rank0 = kl_standard_normal(*last.posterior(x[0::2])).mean().item()
    assert metrics["val/kl"] == pytest.approx(kl_all, rel=1e-5)
    assert abs(kl_rank0 - kl_all) > 1e-4 * abs(kl_all)  # an unsynced rank-zero value would be told apart
    # test/nll: each rank estimates log p(x) on its shard with its own noise; one process estimates it on the whole
    # split. Two one-process estimates give the Monte-Carlo spread of the mean.
    x, _ = datamodule.split_tensors("test")
    estimates = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        estimates.append(-model.log_marginal_likelihood(x, k=model.eval_k))
    spread = (estimates[0] - estimates[1]).std().item() / math.sqrt(2 * len(x))  # std error of one mean
    assert 0 < spread < 0.5
    assert metrics["test/nll"] == pytest.approx(estimates[0].mean().item(), abs=5 * math.sqrt(2) * spread)


def test_vade_all_split_scores_equal_one_process(sweep: Sweep) -> None:
    metrics = read_metrics(sweep.root / "vade")
    model, datamodule = load_model(sweep.checkpoint("vade", "best"))
    xs, ys = zip(*(datamodule.split_tensors(s) for s in ("train", "val", "test")), strict=True)
    with torch.no_grad():
        clusters = model.cluster(torch.cat(xs))
    want = clustering_scores(clusters.numpy(), torch.cat(ys).numpy())
    for key, value in want.items():
        # every image once, as in one process (the ranks each scoring all of them would change the ARI)
        assert metrics[f"test/all_{key}"] == pytest.approx(value, abs=1e-6), key


def test_a_signal_on_one_rank_stops_both_at_one_batch_and_the_run_resumes_exactly(sweep: Sweep) -> None:
    # vae_cut: SIGINT reached rank 1 alone after its 2nd step. Both ranks must stop at the same batch end (a rank
    # stopping alone would wait in the checkpoint's barrier while the other waits in a gradient all-reduce).
    stops = [[line for line in t.output.splitlines() if "Interrupted: stopped by SIGINT at global step" in line]
             for t in sweep.tasks]
    steps = {line.split("global step ")[1].split(" ")[0] for lines in stops for line in lines}
    assert all(len(lines) == 1 for lines in stops) and len(steps) == 1, stops
    cut = sweep.checkpoint("vae_cut")
    assert cut["global_step"] == int(steps.pop()) < sweep.checkpoint("vae")["global_step"]
    # The checkpoint holds both ranks' RNG states, each restored on its own rank: vae_resumed continues vae_cut to
    # exactly the weights of the uninterrupted vae, on both ranks.
    rng = cut["callbacks"]["ResumableRNG"]["ranks"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])
    for whole, resumed in zip(sweep.ranks("vae"), sweep.ranks("vae_resumed"), strict=True):
        for name, value in whole["state_dict"].items():
            assert torch.equal(resumed["state_dict"][name], value), name


def test_checkpoints_hold_every_ranks_rng_state(sweep: Sweep) -> None:
    saved = sweep.checkpoint("vae")["callbacks"]["ResumableRNG"]
    records = sweep.ranks("vae")
    for rank, record in enumerate(records):
        assert torch.equal(saved["ranks"][rank]["torch"], record["rng_at_train_end"])
    assert torch.equal(saved["rng"]["torch"], records[0]["rng_at_train_end"])


def test_the_gan_feature_classifier_is_trained_once_and_loaded_by_every_rank(sweep: Sweep) -> None:
    outputs = [t.output for t in sweep.tasks]
    assert sum(o.count("feature classifier: trained") for o in outputs) == 1
    assert "feature classifier: trained" in outputs[0] and "feature classifier: loaded" in outputs[1]
    assert (sweep.root / "gan" / "feature_classifier.pt").is_file()
    assert not list((sweep.root / "gan").glob(".feature_classifier.pt.*"))  # the temporary was renamed


# -- refusals and one-process fallbacks, through the CLI ------------------------------------------------------

CLI_CASES = {
    "pca": ["model=pca", *TINY, *DDP],
    "sweep": ["-m", "model=ae,vae", *TINY, *DDP],
    "vade plain ddp": ["model=vade", *TINY, *DDP, "trainer.strategy=ddp"],
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("ddp_cli")
    with ThreadPoolExecutor(len(CLI_CASES)) as pool:
        futures = {name: pool.submit(run_cli, *args, f"paths.log_dir={root / name.replace(' ', '_')}")
                   for name, args in CLI_CASES.items()}
        return {name: (future.result(), root / name.replace(" ", "_")) for name, future in futures.items()}


def test_pca_under_ddp_is_fitted_in_one_process(cli: dict, tmp_path: Path) -> None:
    proc, log_dir = cli["pca"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no trained parameters" in proc.stdout and "GLOBAL_RANK: 1" not in proc.stdout + proc.stderr
    (run,) = (log_dir / "train" / "runs").iterdir()
    single = train(tiny_run(["model=pca"], tmp_path / "single"))  # the same run in one process (this one)
    # Fitted on all the training data once, it reconstructs the test batch as the one-process fit does; a fit on one
    # rank's shard, or a model left unfitted, would not.
    assert read_metrics(run)["test/loss"] == pytest.approx(single["test/loss"], rel=1e-6)


def test_a_local_sweep_of_ddp_jobs_is_refused_before_it_starts(cli: dict) -> None:
    proc, log_dir = cli["sweep"]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "genlab: error: a sweep (-m or hparams_search) with 2 DDP processes per job" in proc.stderr
    assert "Traceback" not in proc.stderr and "Launching" not in proc.stdout + proc.stderr
    assert not log_dir.exists()


def test_plain_ddp_is_refused_for_vade_pretraining(cli: dict) -> None:
    proc, _ = cli["vade plain ddp"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "trainer.strategy='ddp'" in proc.stderr and "ddp_find_unused_parameters_true" in proc.stderr
    assert "model.pretrain_epochs" in proc.stderr and "GLOBAL_RANK: 1" not in proc.stdout + proc.stderr


# -- one process: loaders, seeds, metrics, files --------------------------------------------------------------


class TenTest(ArrayDataModule):
    """20 training and 10 test samples whose first pixel is their index: x[i, 0] = i."""

    name, data_shape, num_classes = "ten", (3,), 2

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        train = np.arange(20, dtype=np.float32)[:, None].repeat(3, 1)
        test = 100 + np.arange(10, dtype=np.float32)[:, None].repeat(3, 1)
        return train, np.arange(20) % 2, test, np.arange(10) % 2


def fake_trainer(rank: int, world_size: int) -> SimpleNamespace:
    """What the datamodule reads from a Trainer."""
    return SimpleNamespace(global_rank=rank, world_size=world_size, current_epoch=0, limit_train_batches=1.0,
                           val_check_interval=1.0, strategy=SimpleNamespace(root_device=torch.device("cpu")))


def served(datamodule: ArrayDataModule, split: str, rank: int, world_size: int) -> list[int]:
    datamodule.trainer = fake_trainer(rank, world_size)
    loader = getattr(datamodule, f"{split}_dataloader")()
    return [int(x[0]) for batch in loader for x in batch[0]]


@pytest.mark.parametrize("in_memory", [True, False])
def test_evaluation_loaders_give_each_sample_to_exactly_one_rank(in_memory: bool) -> None:
    datamodule = TenTest(batch_size=2, val_size=5, in_memory=in_memory, steps_per_block=1)
    for split, n in (("test", 10), ("val", 5)):
        shards = [served(datamodule, split, r, 3) for r in range(3)]
        assert sorted(i for s in shards for i in s) == sorted(served(datamodule, split, 0, 1))
        assert sum(map(len, shards)) == n and max(map(len, shards)) - min(map(len, shards)) <= 1
    # Training keeps the ranks in step: equal shares (padded), different samples.
    train = [served(datamodule, "train", r, 3) for r in range(3)]
    assert len({len(s) for s in train}) == 1 and set(train[0]).isdisjoint(train[1])
    assert set().union(*train) == set(served(datamodule, "train", 0, 1))


def test_evaluation_needs_a_sample_per_rank() -> None:
    datamodule = TenTest(batch_size=2, val_size=2)
    datamodule.trainer = fake_trainer(0, 3)
    with pytest.raises(ValueError, match="the val split of ten has 2 samples, fewer than the 3 processes"):
        datamodule.val_dataloader()


def test_dynamic_binarization_draws_other_bits_on_other_ranks() -> None:
    def uniforms(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(x.shape, generator=generator)

    def first_batch(rank: int, world_size: int) -> torch.Tensor:
        loader = InMemoryLoader((torch.zeros(8, 4),), 2, shuffle=True, seed=0, transform=uniforms, rank=rank,
                                world_size=world_size)
        return next(iter(loader))[0]

    assert not torch.equal(first_batch(0, 2), first_batch(1, 2))
    assert torch.equal(first_batch(0, 2), first_batch(0, 1))  # rank 0 keeps the one-process draws


def test_rank_streams_are_their_own_and_rank_zero_keeps_the_seeded_one() -> None:
    def next_draws(rank: int) -> torch.Tensor:
        torch.manual_seed(0)  # what Lightning does on every rank
        ResumableRNG().setup(SimpleNamespace(global_rank=rank), None, "fit")
        return torch.randn(8)

    draws = [next_draws(r) for r in range(3)]
    torch.manual_seed(0)
    assert torch.equal(draws[0], torch.randn(8))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(next_draws(1), draws[1])  # a pure function of (seed, rank)
    torch.manual_seed(0)
    seed_rank_streams(1, step=7)
    assert not torch.equal(torch.randn(8), draws[1])  # a resume from another process count moves on


def test_vade_all_split_scores_shard_the_images_and_keep_labels_on_the_model_device(monkeypatch) -> None:
    import functools

    from genlab.models.vade import VaDE
    from genlab.nets.mlp import MLP

    net = functools.partial(MLP, hidden=(8,))
    model = VaDE((3,), net, net, functools.partial(torch.optim.Adam, lr=1e-3), latent_dim=2, n_clusters=2,
                 pretrain_epochs=0)
    datamodule = TenTest(batch_size=2, val_size=5)
    seen: list[tuple] = []

    def update(self: ClusteringScores, pred: torch.Tensor, target: torch.Tensor) -> None:
        seen.append((pred.device, target.device, len(target)))

    monkeypatch.setattr(ClusteringScores, "update", update)
    monkeypatch.setattr(ClusteringScores, "compute", lambda self: {})
    inputs: list[float] = []
    cluster = model.cluster
    monkeypatch.setattr(model, "cluster", lambda x: (inputs.extend(x[:, 0].tolist()), cluster(x))[1])
    for rank in range(3):
        model.trainer = SimpleNamespace(datamodule=datamodule, global_rank=rank, world_size=3)
        model.all_split_scores(batch_size=4)
    assert sorted(inputs) == sorted(float(x[0]) for s in ("train", "val", "test") for x in datamodule.split_tensors(s)[0])
    # On another device than the CPU (meta stands in for a GPU) the labels must move with the predictions.
    seen.clear()
    model.to("meta")
    monkeypatch.setattr(model, "cluster", cluster)
    model.trainer = SimpleNamespace(datamodule=datamodule, global_rank=0, world_size=1)
    model.all_split_scores(batch_size=64)
    assert seen and all(pred == target == torch.device("meta") for pred, target, _ in seen)


def test_only_rank_zero_probes_the_wandb_server(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    from genlab.loggers import wandb_run

    def probe(url: str, timeout: float) -> bool:
        raise AssertionError("rank 1 probed the W&B server")

    monkeypatch.setattr(wandb_run, "server_reachable", probe)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert isinstance(wandb_run.make_wandb_logger(mode="online", save_dir=tmp_path), WandbLogger)


def test_a_download_leaves_another_processes_partial_file_alone(tmp_path: Path) -> None:
    source = tmp_path / "source.gz"
    source.write_bytes(b"whole file")
    dest = tmp_path / "data" / "file.gz"
    dest.parent.mkdir()
    other = dest.with_name(dest.name + ".part")
    other.write_bytes(b"another rank's download in progress")
    assert download_file([source.as_uri()], dest) == source.as_uri()
    assert dest.read_bytes() == b"whole file"
    assert other.read_bytes() == b"another rank's download in progress"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.gz", "file.gz.part"]


def test_build_trainer_under_an_external_launcher(tmp_path: Path, monkeypatch) -> None:
    from genlab.checks import ConfigError
    from genlab.ddp import build_trainer
    from genlab.models.pca import PCA

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        trainer_cfg = compose("config", overrides=[*DDP, "logger=none", "callbacks=none",
                                             f"paths.output_dir={tmp_path}"]).trainer
    pca = PCA((4,), latent_dim=2)
    assert build_trainer(trainer_cfg, pca, "pca", [], [], sweep=False).world_size == 1  # Lightning would spawn: no
    # srun has started two tasks: this one cannot become a single process, and a sweep is fine (each task walks it).
    for key, value in {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "genlab-test"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="model=pca has no trained parameters .* not 2"):
        build_trainer(trainer_cfg, pca, "pca", [], [], sweep=False)
    ae = torch.nn.Linear(2, 2)
    assert build_trainer(trainer_cfg, ae, "ae", [], [], sweep=True).world_size == 2
