"""Speed benchmarks: genlab (``python -m genlab``) against hand-written PyTorch loops, the k=5000 NLL, PCA.

    make bench                                  # = python experiments/bench.py
    python experiments/bench.py --reps 5 --threads 1 --nll-images 500
    python experiments/bench.py --only toy_gan --reps 7
    python experiments/bench.py --only nll --nll-images 10000      # nll_eval_seconds measured on all 10k
    python experiments/bench.py --only startup,pythae             # start-up; the pythae job (bench extra)

Training cases (MNIST VAE, MNIST GAN, 2-D ring GAN) run three ways with the same nets, losses, Adam, batch
size and step count: (a) ``python -m genlab`` with a :class:`bench_timer.StepTimer` callback, (b) a minimal loop
over the in-memory tensors, (c) a ``DataLoader(TensorDataset)`` loop (:mod:`bench_loops`). Start-up is excluded
from all three: each is timed from the end of its ``warmup``-th step to the end of its last. Repetitions
alternate the order of the ways; a ratio is the median over repetitions of genlab's steps/s over the other
way's in the same repetition. ``startup`` times ``python -m genlab`` from launch to the end of its first
optimizer step (default logger and callbacks) beside a process that only imports torch and lightning;
``pythae`` is :mod:`bench_pythae`. Prints a table and writes ``experiments/bench.json`` (one flat object);
the keys whose genlab runs train with more than one optimizer step per loader item (the fast path,
``data.steps_per_block`` > 1) are listed under ``fast_path_keys``.

genlab multiplies float32 matrices with the library ``cpu_matmul=auto`` picks (:mod:`genlab.cpu_matmul`:
oneDNN where it is exact and faster); a hand-written loop gets torch's default (MKL's sgemm). ``*_vs_minimal``
compares the two as a user gets them; where genlab's pick is not the default, ``*_vs_minimal_same_matmul``
times the hand-written loop on genlab's library too (the per-step overhead alone), and the NLL runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_loops import gan_step, make_gan, make_vae, run_loop, synchronize, vae_step  # noqa: E402

from genlab import cpu_matmul  # noqa: E402
from genlab.data.idx import DataFileError  # noqa: E402
from genlab.data.mnist import MNISTDataModule  # noqa: E402
from genlab.data.toy2d import Toy2DDataModule  # noqa: E402

TRAINING_CASES = ("vae", "gan", "toy_gan")
ALL_CASES = (*TRAINING_CASES, "nll", "pca", "startup", "pythae")
STARTUP_JOB = ["model=vae", "data=mnist", "data.binarize=static", "data.steps_per_block=1", "trainer.max_steps=2", "test=false"]
STARTUP_LEAN = ["logger=csv", "callbacks=lean"]  # the same job with the CSV logger and no picture callbacks
IMPORT_FLOOR = "import torch, lightning"  # what any Lightning program pays before its first line of its own


@dataclass
class Case:
    """One training benchmark: genlab overrides, the baseline's step factory, its data and step counts."""

    name: str
    overrides: list[str]
    make_step: Callable[[], Callable[[torch.Tensor], None]]
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    steps: int
    warmup: int
    optimizer_steps_per_batch: int = 1
    bar_off: bool = False  # also time genlab with the progress bar off
    results: dict[str, list[float]] = field(default_factory=dict)


def data_root() -> Path:
    return Path(os.environ.get("GENLAB_DATA_DIR", "data"))


def load_mnist(binarize: str) -> MNISTDataModule:
    """MNIST from ``$GENLAB_DATA_DIR/mnist``; exits with a message naming the folder when the files are absent."""
    dm = MNISTDataModule(root=str(data_root()), binarize=binarize, batch_size=128)
    try:
        dm.setup()
    except (DataFileError, FileNotFoundError) as err:
        sys.exit(
            f"bench: MNIST is needed and was not found under {data_root() / 'mnist'} ({err}).\n"
            f"Set GENLAB_DATA_DIR to the folder holding mnist/ with the four IDX files, e.g. "
            f"GENLAB_DATA_DIR=/work/shared/data make bench"
        )
    return dm


def training_cases(only: set[str], steps_scale: float, device: str = "cpu") -> list[Case]:
    """The MNIST VAE (784-400-20, binarized), the MNIST MLP GAN and the ring8 GAN (2-128-128-2, batch 256)."""
    cases = []

    def n(steps: int) -> int:
        return max(5, round(steps * steps_scale))

    if "vae" in only:
        dm = load_mnist("static")
        x, y = dm.train_tensors()
        cases.append(Case(
            "vae", ["model=vae", "data=mnist", "data.binarize=static"],
            lambda: vae_step(make_vae(dm.data_shape).to(device)), x, y, 128, n(150), 20,
        ))
    if "gan" in only:
        dm = load_mnist("none")
        x, y = dm.train_tensors()
        cases.append(Case(
            "gan", ["model=gan", "data=mnist", "model.generator_output=sigmoid", "model.sample_metrics=false"],
            lambda: gan_step(make_gan(dm.data_shape, 16, [128, 128, 128], sigmoid_output=True).to(device)),
            x, y, 128, n(150), 20, optimizer_steps_per_batch=2,
        ))
    if "toy_gan" in only:
        toy = Toy2DDataModule(kind="ring8", n_train=20000, n_val=2000, n_test=2000, batch_size=256)
        x, y = toy.train_tensors()
        cases.append(Case(
            "toy_gan",
            ["model=gan", "data=ring8", "model.latent_dim=2",
             "model.generator.hidden=[128,128]", "model.discriminator.hidden=[128,128]"],
            lambda: gan_step(make_gan(toy.data_shape, 2, [128, 128], sigmoid_output=False).to(device)),
            x, y, 256, n(300), 30, optimizer_steps_per_batch=2, bar_off=True,
        ))
    if device != "cpu":
        for case in cases:
            case.overrides.append("trainer=gpu")
    return cases


def genlab_command(case: Case, out: Path, run_dir: Path, progress_bar: bool) -> list[str]:
    """``python -m genlab`` with the case's overrides, a step budget, no test pass, and the step timer."""
    batches = case.steps + case.warmup
    return [
        sys.executable, "-m", "genlab", *case.overrides,
        # global_step counts optimizer steps: a GAN batch takes two.
        f"trainer.max_steps={batches * case.optimizer_steps_per_batch}",
        "test=false", "logger=csv", f"trainer.enable_progress_bar={str(progress_bar).lower()}",
        f"hydra.run.dir={run_dir}",
        *timer_overrides(out, case.warmup, case.optimizer_steps_per_batch),
    ]


def timer_overrides(out: Path, warmup: int, optimizer_steps_per_batch: int = 1) -> list[str]:
    """The overrides that add :class:`bench_timer.StepTimer` to a ``python -m genlab`` run."""
    return [
        "+callbacks.bench_timer._target_=experiments.bench_timer.StepTimer", f"+callbacks.bench_timer.out={out}",
        f"+callbacks.bench_timer.warmup={warmup}",
        f"+callbacks.bench_timer.optimizer_steps_per_batch={optimizer_steps_per_batch}",
    ]


def uses_fast_path(overrides: list[str]) -> bool:
    """Whether genlab with ``overrides`` trains several optimizer steps per loader item (``data.steps_per_block`` > 1)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return int(cfg.data.get("steps_per_block", 1)) > 1


def run_genlab(case: Case, threads: int, progress_bar: bool, workdir: Path) -> float:
    """Steps/s of one ``python -m genlab`` run, read from the StepTimer's file."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    out = run_dir / "steps.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GENLAB_DATA_DIR": str(data_root()),
           "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(genlab_command(case, out, run_dir, progress_bar), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not out.is_file():
        sys.exit(f"bench: genlab run failed ({' '.join(genlab_command(case, out, run_dir, progress_bar))}):\n"
                 f"{proc.stdout[-3000:]}")
    return float(json.loads(out.read_text())["steps_per_s"])


def bench_training(case: Case, reps: int, threads: int, workdir: Path, device: str = "cpu") -> None:
    """Alternate the ways over ``reps`` repetitions (rotating their order) and keep every steps/s."""
    ways: dict[str, Callable[[], float]] = {
        "genlab": lambda: run_genlab(case, threads, True, workdir),
        "genlab_no_bar": lambda: run_genlab(case, threads, False, workdir),
        "minimal": lambda: run_loop("minimal", case.make_step(), case.x, case.y, case.batch_size, case.steps,
                                    case.warmup, device),
        # The hand-written loop on the matmul library genlab chose (cpu_matmul=auto): the per-step overhead alone.
        "minimal_same_matmul": lambda: on_genlab_matmul(
            lambda: run_loop("minimal", case.make_step(), case.x, case.y, case.batch_size, case.steps, case.warmup,
                             device)),
        "dataloader": lambda: run_loop("dataloader", case.make_step(), case.x, case.y, case.batch_size,
                                       case.steps, case.warmup, device),
    }
    if not case.bar_off:
        del ways["genlab_no_bar"]
    if device != "cpu" or genlab_cpu_matmul() == "blas":  # the same loop as "minimal"
        del ways["minimal_same_matmul"]
    names = list(ways)
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            torch.manual_seed(rep)
            case.results.setdefault(name, []).append(ways[name]())
        print(f"  {case.name} rep {rep + 1}/{reps}: "
              + ", ".join(f"{k} {case.results[k][-1]:.1f}" for k in names), flush=True)


def genlab_cpu_matmul() -> str:
    """The library ``python -m genlab`` multiplies with here: conf/config.yaml's cpu_matmul, resolved (its probe)."""
    setting = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["cpu_matmul"]
    before = cpu_matmul.onednn_enabled()
    try:
        return cpu_matmul.select(setting)
    finally:
        cpu_matmul.use_onednn(before)


T = TypeVar("T")


def on_genlab_matmul(run: Callable[[], T]) -> T:
    """``run()`` with float32 matmuls on genlab's library; this process keeps torch's default otherwise."""
    before = cpu_matmul.onednn_enabled()
    cpu_matmul.use_onednn(genlab_cpu_matmul() == "onednn")
    try:
        return run()
    finally:
        cpu_matmul.use_onednn(before)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]`` (both measured in repetition i), not a ratio of medians."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def bench_nll(
    images: int, threads: int, device: str = "cpu", compare_images: int = 256, train_epochs: int = 2
) -> dict[str, object]:
    """Seconds of the VAE's k=5000 importance-sampled log p(x) on the first ``images`` binarized test images, at
    conf/model/vae.yaml's ``eval_precision``; then both precisions on the first ``compare_images`` test images.

    ``threads`` is torch's thread count; the evaluation spends them as that many chunk workers with one
    intra-op thread each (:mod:`genlab.metrics.likelihood`). Under 10,000 images the full time is extrapolated.
    The VAE is first trained ``train_epochs`` epochs, untimed: the cost does not depend on the weights, but the
    bf16 error does (an untrained decoder's logits are all near 0, where bf16 rounding costs nothing).
    """
    torch.set_num_threads(threads)
    dm = load_mnist("static")
    x_all = dm.split_tensors("test")[0]
    x = x_all[:images]
    model = vae_from_conf(dm.data_shape).to(device)
    train_vae(model, dm.split_tensors("train")[0].to(device), train_epochs, dm.batch_size)
    torch.manual_seed(0)
    start = time.perf_counter()
    for batch in x.to(device).split(dm.batch_size):
        model.log_marginal_likelihood(batch, k=model.eval_k)
    synchronize(torch.device(device))
    seconds = time.perf_counter() - start
    report: dict[str, object] = {
        "nll_eval_k": model.eval_k, "nll_eval_chunk": model.eval_chunk, "nll_images_measured": len(x),
        "nll_measured_seconds": seconds, "nll_eval_seconds": extrapolate(seconds, len(x), len(x_all)),
        "nll_eval_extrapolated": len(x) < len(x_all), "nll_eval_precision": model.eval_precision,
        "nll_train_epochs": train_epochs,
    }
    if compare_images:
        report.update(compare_eval_precisions(model, x_all[:compare_images].to(device), dm.batch_size, device))
    return report


def train_vae(model: torch.nn.Module, x: torch.Tensor, epochs: int, batch_size: int) -> None:
    """``epochs`` epochs of Adam(1e-3) on the negative ELBO over ``x`` (seeded), then eval mode."""
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(batch_size):
            loss = model.objective_terms(x[i], 1)[0]["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def compare_eval_precisions(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: str) -> dict[str, object]:
    """The k-sample estimate at eval_precision=32 and =bf16 on the same images with the same noise (seed 0 each):
    the bf16 NLL minus the float32 NLL (mean over images, and the largest per image, nats) and the time ratio."""
    own = model.eval_precision
    nll, seconds = {}, {}
    for precision in ("32", "bf16"):
        model.eval_precision = precision
        torch.manual_seed(0)
        start = time.perf_counter()
        nll[precision] = -torch.cat([model.log_marginal_likelihood(b, k=model.eval_k) for b in x.split(batch_size)])
        synchronize(torch.device(device))
        seconds[precision] = time.perf_counter() - start
    model.eval_precision = own
    diff = (nll["bf16"] - nll["32"]).double()
    return {"nll_precision_compare_images": len(x), "nll_fp32_test_nll": nll["32"].double().mean().item(),
            "nll_bf16_minus_fp32_nats": diff.mean().item(), "nll_bf16_minus_fp32_max_abs_nats": diff.abs().max().item(),
            "nll_bf16_vs_fp32_seconds": seconds["bf16"] / seconds["32"]}


def extrapolate(seconds: float, measured: int, total: int) -> float:
    """The time for ``total`` items from ``seconds`` for ``measured`` of them (the cost is linear in items)."""
    return seconds * total / measured


def vae_from_conf(data_shape: tuple[int, ...]) -> torch.nn.Module:
    """The VAE of ``model=vae data=mnist`` (784-400-20, eval_k, eval_chunk from conf/model/vae.yaml), in eval mode."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=vae", "data=mnist"])
    return instantiate(cfg.model, data_shape=data_shape).eval()


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_startup(reps: int, threads: int, workdir: Path) -> dict[str, object]:
    """Seconds from launching ``python -m genlab`` (the VAE job; default logger and callbacks, and lean: CSV logger,
    no picture callbacks) to the end of its first optimizer step, beside a process that only runs
    ``import torch, lightning``, the order rotating; medians, and each way's margin over the floor."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GENLAB_DATA_DIR": str(data_root()),
           "PYTHONWARNINGS": "ignore"}
    jobs = {"genlab": STARTUP_JOB, "genlab_lean": [*STARTUP_JOB, *STARTUP_LEAN]}
    names = [*jobs, "floor"]
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for way in names[rep % len(names):] + names[: rep % len(names)]:
            run_dir = Path(tempfile.mkdtemp(dir=workdir))
            out = run_dir / "steps.json"
            cmd = ([sys.executable, "-m", "genlab", *jobs[way], f"hydra.run.dir={run_dir}",
                    *timer_overrides(out, warmup=1)] if way in jobs else [sys.executable, "-c", IMPORT_FLOOR])
            cpu0, launched = children_cpu_seconds(), time.time()
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                sys.exit(f"bench: {' '.join(cmd)} failed:\n{proc.stdout[-3000:]}")
            ended = json.loads(out.read_text())["first_step_unix"] if way in jobs else time.time()
            walls[way].append(ended - launched)
            cpus[way].append(children_cpu_seconds() - cpu0)  # genlab: the whole 2-step process
        print(f"  startup rep {rep + 1}/{reps}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in names), flush=True)
    median = statistics.median
    return {"startup_seconds": median(walls["genlab"]),
            "startup_lean_seconds": median(walls["genlab_lean"]),
            "startup_import_floor_seconds": median(walls["floor"]),
            "startup_over_floor": paired_ratio(walls["genlab"], walls["floor"]),
            "startup_above_floor_seconds": median(g - f for g, f in zip(walls["genlab"], walls["floor"], strict=True)),
            "startup_lean_above_floor_seconds": median(
                g - f for g, f in zip(walls["genlab_lean"], walls["floor"], strict=True)),
            "startup_process_cpu_seconds": median(cpus["genlab"]),
            "startup_lean_process_cpu_seconds": median(cpus["genlab_lean"]),
            "startup_import_floor_cpu_seconds": median(cpus["floor"]),
            "startup_job": " ".join(STARTUP_JOB), "startup_lean_job": " ".join([*STARTUP_JOB, *STARTUP_LEAN])}


def bench_pca(reps: int) -> dict[str, float | str]:
    """genlab's ``fit_pca`` against ``sklearn.decomposition.PCA`` on the 60000x784 MNIST training images, 50 components."""
    import numpy as np
    from sklearn.decomposition import PCA as SkPCA

    from genlab.models.pca import fit_pca

    dm = load_mnist("none")
    x_train, _ = dm.split_tensors("train")
    x_val, _ = dm.split_tensors("val")
    # All 60,000 training images, in float64 for both: the same input, and scikit-learn's precision for 1e-5.
    x = torch.cat([x_train, x_val]).flatten(1).double()
    x_np = x.numpy()
    genlab_s, sklearn_s = [], []
    for rep in range(reps):
        for way in (("genlab", "sklearn") if rep % 2 == 0 else ("sklearn", "genlab")):
            start = time.perf_counter()
            if way == "genlab":
                _, _, explained = fit_pca(x, 50)
                genlab_s.append(time.perf_counter() - start)
            else:
                sk = SkPCA(50, random_state=0).fit(x_np)
                sklearn_s.append(time.perf_counter() - start)
    diff = float(np.abs(explained.numpy() - sk.explained_variance_).max())
    if diff > 1e-5:
        sys.exit(f"bench: PCA explained variances differ by {diff:.2e} > 1e-5 between genlab and scikit-learn")
    return {"pca_genlab_seconds": statistics.median(genlab_s), "pca_sklearn_seconds": statistics.median(sklearn_s),
            "pca_vs_sklearn": statistics.median(g / s for g, s in zip(genlab_s, sklearn_s, strict=True)),
            "pca_explained_variance_max_abs_diff": diff, "pca_sklearn_svd_solver": sk._fit_svd_solver}


# The keys each case must leave in bench.json (the targets among them).
CASE_KEYS: dict[str, tuple[str, ...]] = {
    **{c: (f"{c}_vs_minimal", f"{c}_vs_dataloader", f"{c}_genlab_steps_per_s", f"{c}_minimal_steps_per_s",
           f"{c}_dataloader_steps_per_s") for c in TRAINING_CASES},
    "nll": ("nll_eval_seconds", "nll_eval_extrapolated", "nll_images_measured", "nll_eval_k", "nll_threads"),
    "pca": ("pca_vs_sklearn", "pca_genlab_seconds", "pca_sklearn_seconds"),
    "startup": ("startup_seconds", "startup_lean_seconds", "startup_import_floor_seconds", "startup_over_floor"),
    "pythae": ("vae_vs_pythae", "vae_vs_pythae_default", "pythae_wall_seconds", "genlab_wall_seconds",
               "pythae_test_nll", "genlab_test_nll"),
}


def missing_keys(report: dict[str, object], only: set[str]) -> list[str]:
    """The keys the cases in ``only`` must have written and did not (plus the run's own: machine, loads)."""
    need = ["machine", "load_average_start", "load_average_end", "fast_path_keys"]
    need += [k for case in ALL_CASES if case in only for k in CASE_KEYS[case]]
    return [k for k in need if k not in report]


def merge_reports(old: dict[str, object], new: dict[str, object]) -> dict[str, object]:
    """A partial run's keys over the last full report; the run's own fields (load, cases, fast-path keys) are
    kept per run under ``partial_runs`` so every number stays next to the load it was measured under."""
    own = ("machine", "load_average_start", "load_average_end", "threads", "reps", "device", "harness_seconds", "cases",
           "fast_path_keys")
    merged = {**old, **{k: v for k, v in new.items() if k not in own}}
    runs = [r for r in old.get("partial_runs", []) if not set(r["cases"]) <= set(new["cases"])]  # type: ignore[union-attr]
    merged["partial_runs"] = [*runs, {k: new[k] for k in own if k in new}]
    stale = [k for k in old.get("fast_path_keys", []) if k not in new]  # type: ignore[union-attr]
    merged["fast_path_keys"] = sorted({*stale, *new["fast_path_keys"]})  # type: ignore[misc]
    return merged


def machine() -> dict[str, str | float]:
    load1, load5, load15 = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}",
            "load_average_start": f"{load1:.2f} {load5:.2f} {load15:.2f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions per training case (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every way alike (OMP_NUM_THREADS for genlab runs)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every case's timed step count")
    parser.add_argument("--nll-images", type=int, default=256, help="test images timed for the NLL (10000 = all)")
    parser.add_argument("--nll-threads", type=int, default=2, help="torch threads for the NLL (the target: 2 cores)")
    parser.add_argument("--nll-compare-images", type=int, default=256,
                        help="test images on which eval_precision=bf16 is compared with 32 (nats, time); 0: skip")
    parser.add_argument("--nll-train-epochs", type=int, default=2,
                        help="untimed epochs of training before the NLL (the bf16 error depends on the weights)")
    parser.add_argument("--pythae-reps", type=int, default=2, help="alternations of the pythae and genlab processes")
    parser.add_argument("--pythae-nll-k", type=int, default=1000,
                        help="importance samples of the one estimator that scores both (all 10,000 test images)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: the loops and the NLL on the GPU, genlab with trainer=gpu (make gpu-check)")
    parser.add_argument("--only", default=",".join(ALL_CASES), help=f"comma-separated subset of {ALL_CASES}")
    parser.add_argument("--out", type=Path, default=HERE / "bench.json")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if (not only <= set(ALL_CASES) or min(args.reps, args.threads, args.nll_threads, args.pythae_reps,
                                            args.pythae_nll_k) < 1 or not 1 <= args.nll_images <= 10000
            or not 0 <= args.nll_compare_images <= 10000 or args.nll_train_epochs < 0):
        parser.error(f"--only takes {ALL_CASES}; --reps, --threads, --nll-threads, --pythae-reps, --pythae-nll-k >= 1;"
                     " --nll-images in 1..10000; --nll-compare-images in 0..10000; --nll-train-epochs >= 0")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict[str, object] = {**machine(), "threads": args.threads, "reps": args.reps, "device": args.device}
    probe = cpu_matmul.probe()
    report.update({"cpu_matmul": genlab_cpu_matmul(), "cpu_matmul_probe_blas_us": probe.blas_us,
                   "cpu_matmul_probe_onednn_us": probe.onednn_us, "cpu_matmul_probe_onednn_error": probe.onednn_error})
    if args.device == "cuda" and ({"pca", "pythae"} & only):
        parser.error("--device cuda times the training cases, nll and startup; pca and pythae run on the CPU only")
    print(f"bench: {report['machine']}; load average {report['load_average_start']}; {args.threads} thread(s)")

    fast_path_keys: list[str] = []
    with tempfile.TemporaryDirectory(prefix="genlab_bench_") as tmp:
        for case in training_cases(only, args.steps_scale, args.device):
            print(f"{case.name}: {case.steps} timed steps after {case.warmup}, batch {case.batch_size}", flush=True)
            bench_training(case, args.reps, args.threads, Path(tmp), args.device)
            for way, values in case.results.items():
                report[f"{case.name}_{way}_steps_per_s"] = statistics.median(values)
            r = case.results
            report[f"{case.name}_vs_minimal"] = paired_ratio(r["genlab"], r["minimal"])
            report[f"{case.name}_vs_dataloader"] = paired_ratio(r["genlab"], r["dataloader"])
            if case.bar_off:
                report[f"{case.name}_no_bar_vs_minimal"] = paired_ratio(r["genlab_no_bar"], r["minimal"])
            if "minimal_same_matmul" in r:
                report[f"{case.name}_vs_minimal_same_matmul"] = paired_ratio(r["genlab"], r["minimal_same_matmul"])
            if uses_fast_path(case.overrides):
                fast_path_keys += [k for k in report if k.startswith(f"{case.name}_")]
        if "startup" in only:
            print(f"startup: python -m genlab {' '.join(STARTUP_JOB)} to its first optimizer step", flush=True)
            report.update(bench_startup(args.reps, args.threads, Path(tmp)))
            if uses_fast_path(STARTUP_JOB):
                fast_path_keys.append("startup_seconds")
        if "pythae" in only:
            from bench_pythae import GENLAB_JOB, bench_vs_pythae

            print(f"pythae: the 5-epoch VAE job, whole processes, {args.pythae_reps} alternations", flush=True)
            report.update(bench_vs_pythae(Path(tmp) / "pythae", args.pythae_reps, args.threads, args.pythae_nll_k,
                                          args.nll_threads))
            if uses_fast_path(GENLAB_JOB):
                fast_path_keys.append("vae_vs_pythae")
    if "nll" in only:
        print(f"nll: k=5000 on {args.nll_images} test images, {args.nll_threads} thread(s)", flush=True)
        report.update(on_genlab_matmul(lambda: bench_nll(args.nll_images, args.nll_threads, args.device,
                                                          args.nll_compare_images, args.nll_train_epochs)))
        report["nll_threads"] = args.nll_threads
        torch.set_num_threads(args.threads)
    if "pca" in only:
        print("pca: 60000x784, 50 components", flush=True)
        report.update(bench_pca(args.reps))
    report["load_average_end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    report["harness_seconds"] = time.perf_counter() - started
    report["fast_path_keys"] = fast_path_keys
    report["cases"] = sorted(only)
    missing = missing_keys(report, only)
    if missing:
        sys.exit(f"bench: the report lacks {missing} for --only {','.join(sorted(only))}")
    if only != set(ALL_CASES) and args.out.is_file():
        report = merge_reports(json.loads(args.out.read_text()), report)

    print("\nresult                         value")
    for key, value in report.items():
        print(f"{key:<36} {value:.4g}" if isinstance(value, float) else f"{key:<36} {value}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
