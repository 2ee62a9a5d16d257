"""genlab against pythae 0.1.2 on one VAE job (784-400-20 ReLU, Bernoulli decoder, Adam 1e-3, batch 128, 5 epochs on
genlab's binarized MNIST): whole processes timed launch to exit, both trained nets scored by genlab's NLL estimator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from experiments.bench import run
from experiments.bench.cases import load_mnist
from experiments.bench.measures import BATCH, genlab_vae, nll

# The CSV logger and the lean callbacks (no pictures): as a user runs this job beside pythae, which draws none.
GENLAB_JOB = ["model=vae", "data=mnist", "data.binarize=static", "trainer.max_epochs=5", "test=false", "logger=csv",
              "callbacks=lean"]
GENLAB_DEFAULT_JOB = GENLAB_JOB[:5]  # W&B offline and every picture callback: the cost of the defaults
EPOCHS, LATENT, HIDDEN = 5, 20, 400


def pythae_vae() -> nn.Module:
    """pythae's VAE with the job's 784-400-20 ReLU encoder and decoder (sigmoid output, BCE reconstruction), its
    layers named as genlab's MLP names them."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))

        def forward(self, x: torch.Tensor) -> ModelOutput:
            mean, log_var = self.layers(x.flatten(1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 784))

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=torch.sigmoid(self.layers(z)).view(-1, 1, 28, 28))

    return VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"), Encoder(), Decoder())


def save_pythae(model: nn.Module, path: Path) -> None:
    torch.save({"encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict()}, path)


def train_pythae(out: Path) -> None:
    """Train pythae's VAE on the job; its encoder and decoder state go to ``out/pythae_vae.pt``."""
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    model = pythae_vae()
    config = BaseTrainerConfig(output_dir=str(out), num_epochs=EPOCHS, learning_rate=1e-3, no_cuda=True,
                               per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH)
    TrainingPipeline(model=model, training_config=config)(train_data=load_mnist("static", "train")[0],
                                                          eval_data=load_mnist("static", "val")[0])
    save_pythae(model, out / "pythae_vae.pt")


def load_pythae_into_genlab(weights: Path) -> nn.Module:
    """pythae's trained encoder and decoder in genlab's VAE (the same layer names and shapes, loaded strictly)."""
    saved, model = torch.load(weights, weights_only=True), genlab_vae()
    for name in ("encoder", "decoder"):
        getattr(model, name).load_state_dict(saved[name])
    return model


def bench_vs_pythae(workdir: Path, reps: int, threads: int, nll_k: int, nll_threads: int) -> dict[str, object]:
    """Rotate whole processes: pythae (its trainer's defaults: an evaluation per epoch, the best model kept), genlab
    as a user runs this job beside it, with its defaults, and on torch's BLAS as pythae multiplies; a ratio is the
    median of pythae's seconds over genlab's."""
    try:
        import pythae  # noqa: F401
    except ImportError:
        sys.exit('bench: pythae is not installed; `pip install -e ".[bench]"` (pythae==0.1.2)')
    commands = {"pythae": [sys.executable, "-m", "experiments.bench.pythae"],
                "genlab": [sys.executable, "-m", "genlab", *GENLAB_JOB],
                "genlab_default": [sys.executable, "-m", "genlab", *GENLAB_DEFAULT_JOB],
                "genlab_blas": [sys.executable, "-m", "genlab", *GENLAB_JOB, "cpu_matmul=blas"]}

    def way(name: str) -> Callable[[int], tuple[float, float]]:
        def once(rep: int) -> tuple[float, float]:
            run_dir = workdir / f"{name}_{rep}"
            run_dir.mkdir(parents=True)
            folder = str(run_dir) if name == "pythae" else f"hydra.run.dir={run_dir}"
            return run.run_process([*commands[name], folder], threads, run_dir / "output.log")
        return once

    runs = run.alternate({name: way(name) for name in commands}, reps, "pythae", show=lambda r: f"{r[0]:.1f} s")
    wall = {name: [r[0] for r in values] for name, values in runs.items()}
    cpu = {name: [r[1] for r in values] for name, values in runs.items()}
    torch.set_num_threads(nll_threads)
    x, last = load_mnist("static", "test")[0], reps - 1
    genlab = genlab_vae()
    genlab.load_state_dict(torch.load(workdir / f"genlab_{last}" / "checkpoints" / "last.ckpt", map_location="cpu",
                                      weights_only=False)["state_dict"])
    theirs = load_pythae_into_genlab(workdir / f"pythae_{last}" / "pythae_vae.pt")
    test_nll = {name: nll(model, x, torch.device("cpu"), nll_k)[1].mean().item()
                for name, model in (("pythae", theirs), ("genlab", genlab))}
    return {"vae_vs_pythae": run.paired_ratio(wall["pythae"], wall["genlab"]),  # pythae's seconds over genlab's
            "vae_vs_pythae_cpu": run.paired_ratio(cpu["pythae"], cpu["genlab"]),
            "vae_vs_pythae_default": run.paired_ratio(wall["pythae"], wall["genlab_default"]),
            "vae_vs_pythae_blas": run.paired_ratio(wall["pythae"], wall["genlab_blas"]),
            "pythae_genlab_command": "python -m genlab " + " ".join(GENLAB_JOB),
            "pythae_wall_seconds": wall["pythae"], "genlab_wall_seconds": wall["genlab"],
            "genlab_default_wall_seconds": wall["genlab_default"], "genlab_blas_wall_seconds": wall["genlab_blas"],
            "pythae_cpu_seconds": cpu["pythae"], "genlab_cpu_seconds": cpu["genlab"], "pythae_threads": threads,
            "pythae_test_nll": test_nll["pythae"], "genlab_test_nll": test_nll["genlab"], "pythae_nll_k": nll_k,
            "pythae_nll_images": len(x)}


if __name__ == "__main__":  # the pythae process the bench times: python -m experiments.bench.pythae OUT
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    train_pythae(out)
