"""The bench's measures beside training speed: start-up, the k=5000 NLL, PCA against scikit-learn."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

from experiments.bench import run
from experiments.bench.cases import load_mnist, synchronize

STARTUP_JOB = ["model=vae", "data=mnist", "data.binarize=static", "data.steps_per_block=1", "trainer.max_steps=2",
               "test=false"]
STARTUP_LEAN = ["logger=csv", "callbacks=lean"]  # the same job with the CSV logger and no picture callbacks
BATCH = 128


def genlab_vae() -> nn.Module:
    """The VAE of ``model=vae data=mnist`` (784-400-20, conf/model/vae.yaml's eval settings), in eval mode."""
    return instantiate(run.genlab_config(["model=vae", "data=mnist"]).model, data_shape=(1, 28, 28)).eval()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_startup(reps: int, threads: int, workdir: Path) -> dict[str, object]:
    """Seconds from launching ``python -m genlab`` (default logger and callbacks; and lean) to the end of its first
    optimizer step, beside a process that only runs ``import torch, lightning`` (what any Lightning program pays)."""

    def genlab(job: list[str]) -> Callable[[int], tuple[float, float]]:
        def once(rep: int) -> tuple[float, float]:
            launched = time.time()
            record = run.run_genlab(job, workdir, threads, warmup=1, clock="unix")
            return record["first_step"] - launched, record["process_cpu_seconds"]  # CPU: the whole 2-step process
        return once

    floor = [sys.executable, "-c", "import torch, lightning"]
    ways = {"genlab": genlab(STARTUP_JOB), "genlab_lean": genlab([*STARTUP_JOB, *STARTUP_LEAN]),
            "floor": lambda rep: run.run_process(floor, threads, workdir / "floor.log")}
    runs = run.alternate(ways, reps, "startup", show=lambda r: f"{r[0]:.2f} s")
    wall = {name: [r[0] for r in values] for name, values in runs.items()}
    cpu = {name: statistics.median(r[1] for r in values) for name, values in runs.items()}
    above = {name: statistics.median(g - f for g, f in zip(wall[name], wall["floor"], strict=True))
             for name in ("genlab", "genlab_lean")}
    return {"startup_seconds": statistics.median(wall["genlab"]),
            "startup_lean_seconds": statistics.median(wall["genlab_lean"]),
            "startup_import_floor_seconds": statistics.median(wall["floor"]),
            "startup_over_floor": run.paired_ratio(wall["genlab"], wall["floor"]),
            "startup_above_floor_seconds": above["genlab"], "startup_lean_above_floor_seconds": above["genlab_lean"],
            "startup_process_cpu_seconds": cpu["genlab"], "startup_lean_process_cpu_seconds": cpu["genlab_lean"],
            "startup_import_floor_cpu_seconds": cpu["floor"],
            "startup_job": " ".join(STARTUP_JOB), "startup_lean_job": " ".join([*STARTUP_JOB, *STARTUP_LEAN])}


def nll(model: nn.Module, x: torch.Tensor, device: torch.device, k: int | None = None) -> tuple[float, torch.Tensor]:
    """Seconds, and -log p(x) per image by the model's k-sample estimate (default its eval_k; noise seeded 0)."""
    torch.manual_seed(0)

    def estimate() -> torch.Tensor:
        out = -torch.cat([model.log_marginal_likelihood(b, k=k or model.eval_k) for b in x.to(device).split(BATCH)])
        synchronize(device)
        return out

    return timed(estimate)  # type: ignore[return-value]


def bench_nll(images: int, threads: int, device: torch.device, compare_images: int, train_epochs: int) -> dict[str, object]:
    """Seconds of the VAE's k=5000 NLL on the first ``images`` test images (all 10,000 extrapolated: the cost is linear),
    after ``train_epochs`` untimed epochs (an untrained decoder's logits sit near 0, where bf16 rounding costs
    nothing); then eval_precision=bf16 against 32 on the first ``compare_images``, in nats and time."""
    torch.set_num_threads(threads)  # the evaluation spends them as chunk workers (genlab.metrics.likelihood)
    x_test, x_train = load_mnist("static", "test")[0], load_mnist("static", "train")[0].to(device)
    model = genlab_vae().to(device).train()
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(train_epochs):
        for i in torch.randperm(len(x_train)).split(BATCH):
            optimizer.zero_grad(set_to_none=True)
            model.objective_terms(x_train[i], 1)[0]["loss"].backward()
            optimizer.step()
    model.eval()
    seconds, _ = nll(model, x_test[:images], device)
    report: dict[str, object] = {
        "nll_eval_k": model.eval_k, "nll_eval_chunk": model.eval_chunk, "nll_images_measured": images,
        "nll_measured_seconds": seconds, "nll_eval_seconds": seconds * len(x_test) / images,
        "nll_eval_extrapolated": images < len(x_test), "nll_eval_precision": model.eval_precision,
        "nll_train_epochs": train_epochs}
    if compare_images:
        own, runs = model.eval_precision, {}
        for precision in ("32", "bf16"):
            model.eval_precision = precision
            runs[precision] = nll(model, x_test[:compare_images], device)
        model.eval_precision = own
        diff = (runs["bf16"][1] - runs["32"][1]).double()
        report.update({"nll_precision_compare_images": compare_images,
                       "nll_fp32_test_nll": runs["32"][1].double().mean().item(),
                       "nll_bf16_minus_fp32_nats": diff.mean().item(),
                       "nll_bf16_minus_fp32_max_abs_nats": diff.abs().max().item(),
                       "nll_bf16_vs_fp32_seconds": runs["bf16"][0] / runs["32"][0]})
    return report


def bench_pca(reps: int) -> dict[str, float | str]:
    """genlab's ``fit_pca`` against scikit-learn's PCA on the 60,000 x 784 MNIST training images, 50 components."""
    from sklearn.decomposition import PCA

    from genlab.models.pca import fit_pca

    # genlab's train and val splits (all 60,000 training images), float64 for both: scikit-learn's precision
    x = torch.cat([load_mnist("none", split)[0] for split in ("train", "val")]).flatten(1).double()
    solver = "covariance_eigh"  # scikit-learn's fastest with many more rows than columns (what its "auto" picks)
    fits = {"genlab": lambda: fit_pca(x, 50)[2],
            "sklearn": lambda: torch.from_numpy(PCA(50, svd_solver=solver).fit(x.numpy()).explained_variance_)}
    runs = run.alternate({name: lambda rep, fit=fit: timed(fit) for name, fit in fits.items()}, reps, "pca",
                         show=lambda r: f"{r[0]:.2f} s")
    diff = float((runs["genlab"][-1][1] - runs["sklearn"][-1][1]).abs().max())  # type: ignore[operator]
    if diff > 1e-5:
        sys.exit(f"bench: PCA explained variances differ by {diff:.2e} > 1e-5 between genlab and scikit-learn")
    seconds = {name: [r[0] for r in values] for name, values in runs.items()}
    return {"pca_genlab_seconds": statistics.median(seconds["genlab"]),
            "pca_sklearn_seconds": statistics.median(seconds["sklearn"]),
            "pca_vs_sklearn": run.paired_ratio(seconds["genlab"], seconds["sklearn"]),
            "pca_explained_variance_max_abs_diff": diff, "pca_sklearn_svd_solver": solver}
