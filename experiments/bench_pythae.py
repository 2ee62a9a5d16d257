"""genlab against pythae 0.1.2 on the same VAE job, whole process timed, both models scored by one NLL estimator.

    pip install -e ".[bench]"                                # pythae==0.1.2, beside torch 2.13
    python experiments/bench.py --only pythae               # writes vae_vs_pythae into bench.json
    python experiments/bench_pythae.py train --out DIR      # the pythae process alone (what is timed)

The job: the 784-400-20 ReLU VAE (Bernoulli decoder: pythae ``reconstruction_loss="bce"`` on a sigmoid output,
genlab ``likelihood=bernoulli`` on logits; the same -ELBO at one sample), Adam lr 1e-3, batch 128, 5 epochs,
on genlab's statically binarized MNIST split (the same training and validation images for both: pythae gets
them as ``train_data`` / ``eval_data``). Each side is one fresh ``python`` process timed from launch to exit,
as a user runs it: ``python -m genlab`` with :data:`GENLAB_JOB` (CSV logger and the lean callbacks, as a user
running this job beside pythae would; ``test=false``: pythae has no test pass; the NLL is scored apart), and this
file's ``train`` command for pythae with its trainer's defaults (an evaluation pass per epoch, the best model
kept, the final model saved). genlab with its default logger and callbacks (:data:`GENLAB_DEFAULT_JOB`) is timed
in the same alternation (``vae_vs_pythae_default``), and so is genlab on torch's BLAS (``cpu_matmul=blas``, as
pythae multiplies: ``vae_vs_pythae_blas``), which separates genlab's matmul choice from the rest of its speed.

Scoring: both trained nets are loaded into genlab's :class:`~genlab.models.vae.VAE` (pythae's layers map one
to one; its sigmoid is the Bernoulli mean of the same logits) and scored by
``VAE.log_marginal_likelihood`` with the same k, seed and test images.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# genlab as a user runs this job next to pythae: its CSV logger (pythae writes a local log, no tracker) and the
# lean callbacks (the default set without pictures; pythae draws none): same model, data, epochs, validation.
GENLAB_JOB = ["model=vae", "data=mnist", "data.binarize=static", "trainer.max_epochs=5", "test=false", "logger=csv",
              "callbacks=lean"]
# The same job with genlab's defaults (W&B offline unless logged in, every picture callback): timed too, so the
# cost of the defaults is on record (vae_vs_pythae_default).
GENLAB_DEFAULT_JOB = GENLAB_JOB[:5]
EPOCHS, BATCH, LR, LATENT, HIDDEN = 5, 128, 1e-3, 20, 400


def mnist_splits() -> dict[str, torch.Tensor]:
    """genlab's statically binarized MNIST (train, val, test images), as ``data=mnist data.binarize=static`` serves it."""
    from genlab.data.mnist import MNISTDataModule

    dm = MNISTDataModule(binarize="static", batch_size=BATCH)
    return {split: dm.split_tensors(split)[0] for split in ("train", "val", "test")}


def linear_layers(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def pythae_vae() -> nn.Module:
    """pythae's VAE with the job's 784-400-20 ReLU encoder and decoder (sigmoid output, BCE reconstruction)."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))

        def forward(self, x: torch.Tensor) -> ModelOutput:
            mean, log_var = self.net(x.flatten(1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 784))

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, 1, 28, 28))

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    return VAE(config, encoder=Encoder(), decoder=Decoder())


def save_pythae(model: nn.Module, path: Path) -> None:
    torch.save({"encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict()}, path)


def train_pythae(out: Path, epochs: int = EPOCHS) -> None:
    """Train pythae's VAE on the job above and save its encoder and decoder state to ``out/pythae_vae.pt``."""
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    data = mnist_splits()
    model = pythae_vae()
    training = BaseTrainerConfig(output_dir=str(out), num_epochs=epochs, learning_rate=LR,
                                 per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH, no_cuda=True)
    TrainingPipeline(model=model, training_config=training)(train_data=data["train"], eval_data=data["val"])
    save_pythae(model, out / "pythae_vae.pt")


def genlab_vae() -> nn.Module:
    """genlab's VAE as ``model=vae data=mnist`` builds it."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=vae", "data=mnist"])
    return instantiate(cfg.model, data_shape=(1, 28, 28)).eval()


def load_pythae_into_genlab(weights: Path) -> nn.Module:
    """pythae's trained encoder and decoder in genlab's VAE: the Linear layers in order, weights and biases copied."""
    saved = torch.load(weights, weights_only=True)
    model = genlab_vae()
    for name in ("encoder", "decoder"):
        ours = linear_layers(getattr(model, name))
        theirs = [(saved[name][f"net.{i}.weight"], saved[name][f"net.{i}.bias"]) for i in (0, 2)]
        if [tuple(m.weight.shape) for m in ours] != [tuple(w.shape) for w, _ in theirs]:
            raise RuntimeError(f"bench_pythae: {name} layers {[m.weight.shape for m in ours]} do not match pythae's")
        with torch.no_grad():
            for layer, (w, b) in zip(ours, theirs):
                layer.weight.copy_(w)
                layer.bias.copy_(b)
    return model


def load_genlab_checkpoint(ckpt: Path) -> nn.Module:
    model = genlab_vae()
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    return model


def test_nll(model: nn.Module, x: torch.Tensor, k: int, seed: int = 0) -> float:
    """Mean -log p(x) in nats over ``x`` by genlab's importance-weighted estimator (k samples, fixed seed)."""
    torch.manual_seed(seed)
    return -torch.cat([model.log_marginal_likelihood(b, k=k) for b in x.split(BATCH)]).mean().item()


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, its reaped children included) of one process from launch to exit;
    its output goes to ``log``; a failure stops the bench. CPU time is what a loaded shared machine distorts least."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), usage.ru_utime + usage.ru_stime
    with log.open("w") as fh:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"bench_pythae: {' '.join(cmd)} exited with {code}:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime - cpu


def bench_vs_pythae(workdir: Path, reps: int, threads: int, nll_k: int, nll_threads: int) -> dict[str, object]:
    """Alternate whole-process runs of pythae and genlab; ratio = median of pythae's wall time over genlab's."""
    try:
        import pythae  # noqa: F401
    except ImportError:
        sys.exit('bench_pythae: pythae is not installed; `pip install -e ".[bench]"` (pythae==0.1.2)')
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    commands = {
        "pythae": [sys.executable, str(HERE / "bench_pythae.py"), "train", "--out"],
        "genlab": [sys.executable, "-m", "genlab", *GENLAB_JOB],
        "genlab_default": [sys.executable, "-m", "genlab", *GENLAB_DEFAULT_JOB],
        # pythae multiplies with torch's BLAS; this run shows what genlab's own choice (cpu_matmul=auto) adds
        "genlab_blas": [sys.executable, "-m", "genlab", *GENLAB_JOB, "cpu_matmul=blas"],
    }
    names = list(commands)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for way in names[rep % len(names):] + names[: rep % len(names)]:  # the order rotates
            run_dir = workdir / f"{way}_{rep}"
            run_dir.mkdir(parents=True)
            cmd = [*commands[way], str(run_dir)] if way == "pythae" else [*commands[way], f"hydra.run.dir={run_dir}"]
            wall, cpu = timed(cmd, env, run_dir / "output.log")
            walls[way].append(wall)
            cpus[way].append(cpu)
        print(f"  pythae rep {rep + 1}/{reps}: " + ", ".join(f"{n} {walls[n][-1]:.1f} s" for n in names), flush=True)
    torch.set_num_threads(nll_threads)
    x = mnist_splits()["test"]
    last = reps - 1
    nll = {"pythae": test_nll(load_pythae_into_genlab(workdir / f"pythae_{last}" / "pythae_vae.pt"), x, nll_k),
           "genlab": test_nll(load_genlab_checkpoint(workdir / f"genlab_{last}" / "checkpoints" / "last.ckpt"), x, nll_k)}
    def ratio(clock: dict[str, list[float]], way: str) -> float:
        return statistics.median(p / g for p, g in zip(clock["pythae"], clock[way], strict=True))

    return {
        "vae_vs_pythae": ratio(walls, "genlab"), "vae_vs_pythae_cpu": ratio(cpus, "genlab"),
        "vae_vs_pythae_default": ratio(walls, "genlab_default"),
        "vae_vs_pythae_blas": ratio(walls, "genlab_blas"),
        "pythae_genlab_command": "python -m genlab " + " ".join(GENLAB_JOB),
        "pythae_wall_seconds": walls["pythae"], "genlab_wall_seconds": walls["genlab"],
        "genlab_default_wall_seconds": walls["genlab_default"], "genlab_blas_wall_seconds": walls["genlab_blas"],
        "pythae_cpu_seconds": cpus["pythae"], "genlab_cpu_seconds": cpus["genlab"],
        "pythae_threads": threads, "pythae_test_nll": nll["pythae"], "genlab_test_nll": nll["genlab"],
        "pythae_nll_k": nll_k, "pythae_nll_images": len(x),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train pythae's VAE on the job (the process the bench times)")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train_pythae(args.out, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
