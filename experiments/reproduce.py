"""Run the papers' reproductions, one table per subcommand, and write its section of experiments/RESULTS.md.

    python experiments/reproduce.py vae --budget cpu                 # VAE, IWAE-5, IWAE-50: <= 3 h wall each, 2 cores
    python experiments/reproduce.py vae --budget paper --trainer gpu # the IWAE paper's 3,280-epoch schedule
    python experiments/reproduce.py vade --budget cpu                # VaDE on MNIST, seeds 0-4, accuracy on all 70k
    python experiments/reproduce.py vae --budget cpu --only iwae5 --dry-run   # print the commands, run nothing

Every run is ``python -m genlab experiment=<preset> <overrides>`` in ``--out/<table>/<budget>/<run>/seed<N>``.
Each run checkpoints every epoch: the same command again resumes an unfinished run (``ckpt_path=last``) and
reuses a finished one's metrics. The command, budget, seed, wall time, machine and load are kept in the
table's JSON records; the section (rows beside the paper, and learning-curve PNGs) is rebuilt from them all.

Adding a table: write its ``Table`` (runs, budgets, a row formatter) and add it to ``TABLES``; or, for a family
with its own script (gan2d, gan_mnist: experiments/gan_bench.py), one line in ``DELEGATED``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from provenance import git_commit

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"
RESULTS = EXPERIMENTS / "RESULTS.md"
CURVES = EXPERIMENTS / "curves"

# The papers' schedules run for hundreds of epochs: draw the pictures every 20th epoch, not every epoch.
PICTURES = ("reconstructions", "latent_scatter", "samples", "interpolations", "cluster_samples")
SPARSE_PICTURES = tuple(f"callbacks.{name}.every_n_epochs=20" for name in PICTURES)
# --smoke: one short epoch of everything, to check that a table's commands run end to end.
SMOKE = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "model.eval_k=10",
    "model.eval_chunk=10",
)


@dataclass(frozen=True)
class Run:
    """One row of a table: a preset plus overrides, the paper's number, and what each budget adds."""

    name: str
    title: str
    preset: str
    overrides: tuple[str, ...]
    paper: str
    budgets: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Table:
    """A RESULTS.md section: its runs, budgets (with a note each), seeds, and how a recorded run reads as a row."""

    name: str
    heading: str
    intro: str
    runs: tuple[Run, ...]
    budget_notes: dict[str, str]
    default_seeds: tuple[int, ...]
    columns: tuple[str, ...]
    row: Callable[[Run, dict], list[str]]
    summary: Callable[[Run, str, list[dict]], list[str]] | None = None
    curve_metric: str = "curve/test_nll"
    curve_label: str = "test NLL (nats)"
    final_metric: str | None = "test/nll"  # drawn at the last epoch beside the curve (None: a different quantity)
    lower_is_better: bool = True  # of curve_metric: orders the runs in the equal-epochs comparison
    curve_start: Callable[[dict], int] | None = None  # a record's first epoch worth drawing (None: all of them)
    smoke: tuple[str, ...] = SMOKE
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def records_path(self) -> Path:
        return EXPERIMENTS / f"{self.name}_results.json"


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}%" if percent else f"{value:.2f}"


# -- the VAE family (IWAE paper, Table 1) -------------------------------------------------------------------
# cpu: batch 100 (the paper's is 20) and 8 lr stages of equal length (lr 1e-3 * 10^(-i/7), i = 0..7) over 200
# epochs (the paper's 3,280 epochs of 3^i-epoch stages); max_time stops a run at 2 h 50 min wall, then it is
# tested. The curve: k=5000 on the first 500 test images every 10 epochs.
VAE_CPU = (
    "data.batch_size=100",
    "trainer.max_epochs=200",
    "model.lr_schedule=step",
    "model.lr_decay=0.7197",
    "model.lr_decay_every=25",
    "trainer.max_time=00:02:50:00",
    "callbacks.learning_curve.every_n_epochs=10",
    *SPARSE_PICTURES,
)
# long: the cpu budget's schedule stretched 4x (800 epochs, 8 stages of 100), for a run that can use a core for
# about 1.5 h (VAE) to 3 h+ (IWAE-5); the curve every 25 epochs.
VAE_LONG = (
    "data.batch_size=100",
    "trainer.max_epochs=800",
    "model.lr_schedule=step",
    "model.lr_decay=0.7197",
    "model.lr_decay_every=100",
    "trainer.max_time=00:02:50:00",
    "callbacks.learning_curve.every_n_epochs=25",
    *SPARSE_PICTURES,
)
VAE_PAPER = ("callbacks.learning_curve.every_n_epochs=100", *SPARSE_PICTURES)


def vae_row(run: Run, rec: dict) -> list[str]:
    m = rec["metrics"]
    active = m.get("test/active_units_train", m.get("test/active_units"))
    active_z2 = m.get("test/active_units_train_z2", m.get("test/active_units_z2"))  # two-layer runs only
    units = f"{fmt(active)}/50" if active_z2 is None else f"{fmt(active)}+{fmt(active_z2)}/100+50 (z1+z2)"
    return [
        f"**NLL {fmt(m.get('test/nll'))}**",
        f"NLL {run.paper}",
        f"-ELBO {fmt(-m['test/elbo'] if 'test/elbo' in m else None)}, KL {fmt(m.get('test/kl'))}, "
        f"active units {units}",
    ]


VAE_TABLE = Table(
    name="vae",
    heading="## VAE family",
    intro="NLL in nats (lower is better), log p(x) estimated with k=5000 importance samples; MNIST from "
    "`../shared/data/mnist`, dynamically binarized, 59,600 train / 400 validation (`data.val_size=400`, as the "
    "paper) / 10,000 test; decoder output bias from the training data's log-odds; active units over 500 "
    "training images (paper: VAE 19, IWAE-5 22, IWAE-50 25; two layers, z1+z2: VAE 16+5, IWAE-50 26+7).",
    runs=(
        Run(
            "vae",
            "VAE (k=1), 784-200-200-50 tanh",
            "iwae_mnist",
            ("model.objective=elbo", "model.k=1"),
            "86.76",
            {"cpu": VAE_CPU, "long": VAE_LONG, "paper": VAE_PAPER},
        ),
        Run(
            "iwae5",
            "IWAE k=5, 784-200-200-50 tanh",
            "iwae_mnist",
            ("model.k=5",),
            "85.54",
            {"cpu": VAE_CPU, "long": VAE_LONG, "paper": VAE_PAPER},
        ),
        Run(
            "iwae50",
            "IWAE k=50, 784-200-200-50 tanh",
            "iwae_mnist",
            ("model.k=50",),
            "84.78",
            {"cpu": VAE_CPU, "long": VAE_LONG, "paper": VAE_PAPER},
        ),
        Run(
            "vae2",
            "VAE (k=1), 2 layers 784-(200-200)-100-(100-100)-50 tanh",
            "iwae2_mnist",
            ("model.objective=elbo", "model.k=1"),
            "85.33",
            {"cpu": VAE_CPU, "long": VAE_LONG, "paper": VAE_PAPER},
        ),
        Run(
            "iwae50_2layer",
            "IWAE k=50, 2 layers 784-(200-200)-100-(100-100)-50 tanh",
            "iwae2_mnist",
            ("model.k=50",),
            "82.90",
            {"cpu": VAE_CPU, "long": VAE_LONG, "paper": VAE_PAPER},
        ),
    ),
    budget_notes={
        "small": "3 of the paper's 3,280 epochs, batch 20, 54,000/6,000 split, no output-bias init (earlier runs)",
        "cpu": "batch 100 (paper: 20), 200 epochs in 8 equal lr stages (x10^(-1/7) every 25), wall limit 2 h 50 min (trainer.max_time)",
        "long": "batch 100 (paper: 20), 800 epochs in 8 equal lr stages (x10^(-1/7) every 100), wall limit 2 h 50 min "
        "unless --max-time says otherwise (then the epochs column shows where it stopped)",
        "paper": "the paper's 3,280 epochs of batch 20 (3^i-epoch stages at lr 1e-3 * 10^(-i/7))",
    },
    default_seeds=(0,),
    columns=("measured", "paper", "other metrics"),
    row=vae_row,
    curve_label="test NLL (nats): k=5000, first 500 test images",
    smoke=(
        *SMOKE,
        "callbacks.learning_curve.every_n_epochs=1",
        "callbacks.learning_curve.n_images=20",
        "callbacks.learning_curve.k=10",
        "callbacks.learning_curve.chunk=10",
    ),
    notes=(
        "The curves score the first 500 test images (k=5000, every 10 or 25 epochs); the star at a curve's end is "
        "the table's number on all 10,000. At the end of the cpu VAE run the 500 read 87.50 nats and the 10,000 "
        "89.00 with the same weights: read a curve for its shape and the table for the number.",
        "Early in training a VAE on binarized MNIST sits on a plateau near 200 nats before the code is used; "
        "the curves show where each run is on its way to the plateau the paper reports.",
    ),
)


# -- VaDE (Jiang et al., MNIST) -----------------------------------------------------------------------------
# cpu: 40 autoencoder + 100 VaDE epochs of batch 100 (paper: 500 VaDE epochs after an unreleased pretraining);
# ~8 s an autoencoder epoch and ~10 s a VaDE epoch on one thread, so ~25 min a seed. Accuracy on all 70,000 images
# (eval_on=all), as the paper. Why 40: in a scratch loop of the same net (PyTorch's default init) a GMM on the codes
# (seed 0, all 70k) scored 0.61 / 0.65 / 0.67 / 0.72 / 0.73 after 5 / 10 / 20 / 30 / 40 epochs, MSE instead of BCE or
# input dropout 0.2 no better; experiments/vade_pretraining.py on genlab's VaDE (seed 0) then gave 0.63 / 0.65 /
# 0.60 / 0.56 after 20 / 40 / 60 / 80 epochs: 40 is the best of those, longer pretraining hurts.
VADE_CPU = (
    "model.pretrain_epochs=40",
    "trainer.max_epochs=140",
    "model.eval_k=100",
    "trainer.max_time=00:02:50:00",
    *SPARSE_PICTURES,
)
VADE_PAPER = ("model.pretrain_epochs=10", "trainer.max_epochs=510", *SPARSE_PICTURES)


def vade_start(rec: dict) -> int:
    """The first VaDE epoch of a run (``model.pretrain_epochs`` in its command): before it the prior is untrained."""
    start = re.search(r"model\.pretrain_epochs=(\d+)", rec["command"])
    return int(start.group(1)) if start else 0


def initial_accuracy(rec: dict) -> float | None:
    """Validation accuracy at the first VaDE epoch (right after the GMM initialisation on the pretrained codes)."""
    at = {int(epoch): value for epoch, value in rec.get("curve") or []}
    return at.get(vade_start(rec))


def vade_row(run: Run, rec: dict) -> list[str]:
    m = rec["metrics"]
    acc = m.get("test/all_acc", m.get("test/acc"))
    where = "all 70k" if "test/all_acc" in m else "test 10k"
    return [
        f"**acc {fmt(acc, True)}** ({where})",
        f"acc {run.paper}",
        f"NMI {fmt(m.get('test/all_nmi', m.get('test/nmi')))}, ARI {fmt(m.get('test/all_ari', m.get('test/ari')))}, "
        f"test acc {fmt(m.get('test/acc'), True)}, NLL {fmt(m.get('test/nll'))}; val acc after the GMM "
        f"initialisation {fmt(initial_accuracy(rec), True)}",
    ]


def vade_summary(run: Run, budget: str, recs: list[dict]) -> list[str]:
    """mean ± std and best over seeds of the accuracy on all images, with NMI and ARI."""

    def values(key: str) -> list[float]:
        return [r["metrics"][key] for r in recs if key in r["metrics"]]

    accs = values("test/all_acc")
    if len(accs) < 2:
        return []

    def mean_std(key: str, percent: bool = False) -> str:
        v, scale = values(key), 100 if percent else 1
        return f"{scale * statistics.mean(v):.2f} ± {scale * statistics.stdev(v):.2f}"

    seeds = ",".join(str(r["seed"]) for r in recs)
    return [
        f"**acc {mean_std('test/all_acc', True)}%, best {100 * max(accs):.2f}%** ({len(accs)} seeds: {seeds})",
        f"acc {run.paper} (one checkpoint); 20-seed reproduction 71.6 ± 4.4%",
        f"NMI {mean_std('test/all_nmi')}, ARI {mean_std('test/all_ari')}",
    ]


VADE_TABLE = Table(
    name="vade",
    heading="## VaDE",
    intro="Clustering accuracy (Hungarian matching) on all 70,000 MNIST images, train and test, as the paper's "
    "94.46% (one released checkpoint); 784-500-500-2000-10, batch 100, Adam 2e-3 x0.9 every 10 VaDE epochs; "
    "pretraining: the autoencoder on the encoder mean with the Bernoulli reconstruction loss, at lr 2e-3, for "
    "`model.pretrain_epochs` epochs (the paper never released its pretraining).",
    runs=(
        Run(
            "vade",
            "VaDE, 784-500-500-2000-10, K=10",
            "vade_mnist",
            (),
            "94.46%",
            {"cpu": VADE_CPU, "paper": VADE_PAPER},
        ),
    ),
    budget_notes={
        "small": "4 autoencoder + 8 VaDE epochs, accuracy on the 10k test images (earlier run)",
        "cpu": "40 autoencoder + 100 VaDE epochs (paper: 500), wall limit 2 h 50 min unless --max-time says otherwise "
        "(the epochs column shows where a run stopped); test NLL at k=100",
        "paper": "10 autoencoder + 500 VaDE epochs (lr 2e-3 x0.9 every 10 epochs, floor 2e-4); test NLL at k=5000",
    },
    default_seeds=(0, 1, 2, 3, 4),
    columns=("measured", "paper", "other metrics"),
    row=vade_row,
    summary=vade_summary,
    smoke=(*SMOKE, "model.pretrain_epochs=1"),
    curve_metric="val/acc",
    curve_label="validation accuracy",
    lower_is_better=False,
    final_metric="test/all_acc",
    curve_start=vade_start,
    notes=(
        "Pretraining at the cpu budget: 40 epochs of the autoencoder (784-500-500-2000-10, ReLU) on the encoder mean, "
        "Bernoulli reconstruction loss (71.8-72.2 nats an image at epoch 40, seeds 0-4), Adam lr 2e-3, batch 100, "
        "then a diagonal GMM (3 EM restarts, best likelihood) on the 54,000 training codes.",
        "Where the accuracy comes from: each row's 'val acc after the GMM initialisation' is the clustering the VaDE "
        "phase starts from (63-71 %); 100 VaDE epochs add 2-9 points (the curve: over the last 40 epochs validation accuracy moved +0.5, +0.1, +0.3, +1.3, +1.0 points in seeds 0-4: near a plateau, not quite at it). The paper's 94.46 % "
        "starts from the pretrained weights shipped in the authors' repository, made by code they never released (the "
        "weight files are not reachable from this machine), so the gap is the pretraining, as the independent "
        "reproductions found (20 seeds: 71.6 ± 4.4 %).",
        "Longer pretraining does not help: `python experiments/vade_pretraining.py --epochs 100 --every 20 --seed 0` "
        "(genlab's VaDE, its own pretraining loss and fit_prior, accuracy on all 70k) gives 62.9 / 64.5 / 60.4 / 56.4 % "
        "after 20 / 40 / 60 / 80 epochs (reconstruction 74.6 / 71.8 / 70.4 / 69.8 nats): the autoencoder keeps "
        "improving while its codes cluster worse. In a scratch loop of the same net, squared error instead of the "
        "Bernoulli loss and input dropout 0.2 (denoising) were no better at 20-30 epochs.",
    ),
)

TABLES = {table.name: table for table in (VAE_TABLE, VADE_TABLE)}
# Subcommands run by another script in experiments/: it defines add_arguments(parser, name) and dispatch(args)
# (args.what is the subcommand's name). A new family either adds a Table above or a line here.
DELEGATED = {"gan2d": "gan_bench.py", "gan_mnist": "gan_bench.py"}


def delegate(script: str) -> Any:
    """The module of ``experiments/<script>``, loaded by path (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, EXPERIMENTS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- running ------------------------------------------------------------------------------------------------
def machine() -> str:
    """CPU model and core count (and the GPU when one is used), for the cost column."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch  # noqa: PLC0415 (only to name a GPU)

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def command(
    table: Table, run: Run, budget: str, seed: int, trainer: str | None, smoke: bool = False,
    max_time: str | None = None,
) -> list[str]:
    """The genlab overrides of one run (without the run folder); ``max_time`` replaces the budget's wall limit."""
    budget_overrides = [o for o in run.budgets[budget] if not (max_time and o.startswith("trainer.max_time="))]
    return [
        f"experiment={run.preset}",
        *([f"trainer={trainer}"] if trainer else []),
        *run.overrides,
        *budget_overrides,
        *([f"trainer.max_time={max_time}"] if max_time else []),
        *(table.smoke if smoke else ()),
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
    ]


def run_dir(out: Path, table: Table, run: Run, budget: str, seed: int) -> Path:
    return out / table.name / budget / run.name / f"seed{seed}"


def execute(table: Table, run: Run, budget: str, seed: int, args: argparse.Namespace) -> dict:
    """Run (or resume, or reuse) one run and return its record."""
    folder = run_dir(args.out, table, run, budget, seed)
    overrides = command(table, run, budget, seed, args.trainer, args.smoke, args.max_time)
    resume = (folder / "checkpoints" / "last.ckpt").is_file() and not finished(folder, overrides)
    env = dict(os.environ)
    env.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.setdefault("WANDB_MODE", "offline")
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    commit = git_commit()
    load_start = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if not finished(folder, overrides):
        extra = ["ckpt_path=last"] if resume else []
        proc = subprocess.run(
            [sys.executable, "-m", "genlab", *overrides, *extra, f"hydra.run.dir={folder}"],
            cwd=REPO,
            env=env,
            text=True,
            capture_output=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{run.name} seed {seed} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    wall = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "name": run.name,
        "budget": budget + ("+smoke" if args.smoke else ""),
        "seed": seed,
        "command": "python -m genlab " + " ".join(shlex.quote(o) for o in overrides if "enable_progress_bar" not in o),
        "reproduce": f"python experiments/reproduce.py {table.name} --budget {budget} --only {run.name} --seeds {seed}",
        "wall_s": round(wall, 1),
        "cpu_s": round((cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime), 1),
        "load": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "resumed": resume,
        "epochs": epochs_done(folder),
        "machine": machine() + (f", {args.threads} thread{'s' * (args.threads > 1)} per run" if args.threads else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpu_matmul": metrics.get("cpu_matmul"),
        "run_dir": str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder),
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))},
        "curve": read_curve(folder, table.curve_metric),
    }


def finished(folder: Path, overrides: Sequence[str]) -> bool:
    """The run was tested after its last epoch; one stopped early by max_time is not finished (a rerun continues it)."""
    if not (folder / "metrics.json").is_file():
        return False
    wanted = [int(o.split("=", 1)[1]) for o in overrides if o.startswith("trainer.max_epochs=")]
    done = epochs_done(folder)
    return not wanted or done is None or done >= wanted[-1]


def epochs_done(folder: Path) -> int | None:
    """Validated epochs in the run's csv/metrics.csv (max_time may stop before max_epochs)."""
    path = folder / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    epochs = [int(r["epoch"]) for r in csv.DictReader(path.open()) if r.get("val/loss")]
    return max(epochs) + 1 if epochs else None


def read_curve(folder: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of ``metric`` from the run's csv/metrics.csv, in order."""
    path = folder / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    return [(int(r["epoch"]), float(r[metric])) for r in csv.DictReader(path.open()) if r.get(metric)]


# -- writing ------------------------------------------------------------------------------------------------
def plot_curves(table: Table, budget: str, recs: list[dict], folder: Path = CURVES) -> Path | None:
    """One PNG per table and budget: each run's curve against epochs."""
    curves = [(r, r["curve"]) for r in recs if r.get("curve")]
    if not curves:
        return None
    import matplotlib  # noqa: PLC0415 (only when there is something to draw)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for rec, curve in curves:
        start = table.curve_start(rec) if table.curve_start else 0
        kept = [(e, v) for e, v in curve if e >= start]
        if not kept:
            continue
        epochs, values = zip(*kept, strict=True)
        (line,) = ax.plot([e + 1 for e in epochs], values, marker="o", ms=3, label=f"{rec['name']} seed {rec['seed']}")
        final = rec["metrics"].get(table.final_metric) if table.final_metric else None
        if final is not None:  # the curve scores a subset (or the val split); the table's number is on more
            ax.plot([rec.get("epochs") or epochs[-1] + 1], [final], marker="*", ms=10, ls="", color=line.get_color(),
                    label=f"{rec['name']} seed {rec['seed']}: {table.final_metric} (the table's number)")
    ax.set(xlabel="epoch", ylabel=table.curve_label, title=f"{table.name}, budget {budget}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{table.name}_{budget.replace('+', '_')}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def equal_epochs(table: Table, budget: str, recs: list[dict], points: int = 6) -> list[str]:
    """Runs of one budget side by side at the epochs every curve has (mean over seeds), best run first per epoch."""
    by_run: dict[str, dict[int, list[float]]] = {}
    for rec in recs:
        for epoch, value in rec.get("curve") or []:
            by_run.setdefault(rec["name"], {}).setdefault(epoch, []).append(value)
    names = [run.name for run in table.runs if run.name in by_run]
    common = sorted(set.intersection(*(set(by_run[n]) for n in names))) if len(names) > 1 else []
    if not common:
        return []
    step = max(1, math.ceil(len(common) / points))
    shown = sorted({*common[::-1][::step], common[0]})
    lines = [
        f"{table.name}, budget {budget}: {table.curve_label} at equal epochs (the curves; mean over seeds)",
        "",
        "| epoch | " + " | ".join(names) + " | order, best first |",
        "|" + "---|" * (len(names) + 2),
    ]
    for epoch in shown:
        means = {n: statistics.mean(by_run[n][epoch]) for n in names}
        order = sorted(names, key=lambda n: means[n], reverse=not table.lower_is_better)
        sign = " < " if table.lower_is_better else " > "
        lines.append(f"| {epoch + 1} | " + " | ".join(f"{means[n]:.2f}" for n in names) + f" | {sign.join(order)} |")
    return [*lines, ""]


def cost(rec: dict) -> str:
    load = rec["load"] if isinstance(rec["load"], list) else [rec["load"]]
    return (
        f"{rec.get('epochs')} epochs, {rec['wall_s'] / 60:.1f} min wall ({rec['cpu_s'] / 60:.1f} CPU-min; load "
        f"average {' -> '.join(map(str, load))}){', resumed' if rec.get('resumed') else ''}, {rec['machine']} "
        f"({rec['date']})"
    )


def section(table: Table, records: dict[str, dict], curves_dir: Path = CURVES, results: Path = RESULTS) -> str:
    """The table's RESULTS.md section from every recorded run, in the order of its runs and budgets."""
    header = ["run", "budget", "seed", *table.columns, "command", "epochs, wall time, machine"]
    lines = [
        table.heading,
        "",
        f"Written by `python experiments/reproduce.py {table.name} --budget "
        f"{'|'.join(dict.fromkeys(b for r in table.runs for b in r.budgets))}` (rows from "
        f"`experiments/{table.records_path.name}`). {table.intro}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    pictures, comparisons = [], []
    for budget in dict.fromkeys(r["budget"] for r in records.values()):
        recs_budget = [r for r in records.values() if r["budget"] == budget]
        for run in table.runs:
            recs = sorted((r for r in recs_budget if r["name"] == run.name), key=lambda r: r.get("seed", 0))
            note = table.budget_notes.get(budget.split("+")[0], "")
            for rec in recs:
                cells = [
                    run.title,
                    f"{budget}: {note}",
                    str(rec.get("seed", "–")),
                    *table.row(run, rec),
                    f"`{rec['command']}`",
                    cost(rec),
                ]
                lines.append("| " + " | ".join(cells) + " |")
            if table.summary and (summary := table.summary(run, budget, recs)):
                lines.append("| " + " | ".join([run.title, f"{budget}: over seeds", "all", *summary, "", ""]) + " |")
        comparisons += equal_epochs(table, budget, recs_budget)
        png = plot_curves(table, budget, recs_budget, curves_dir)
        if png is not None:
            rel = os.path.relpath(png, results.parent)
            pictures.append(f"![{table.name} {budget}: {table.curve_label} against epochs]({rel})")
    notes = [f"- {n}" for n in table.notes]
    notes.append(
        "- Wall times are on a machine shared with other jobs: the load average at the start and end of "
        "each run is recorded; CPU time is the run's own."
    )
    return "\n".join(lines + ["", *comparisons, *pictures, "", "Notes:", *notes]) + "\n"


def write_section(heading: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section under ``heading`` in ``path``, leaving every other section as it is."""
    old = path.read_text() if path.is_file() else "# Results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    path.write_text(new)


# -- command line -------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="table", required=True)
    for table in TABLES.values():
        p = sub.add_parser(table.name, help=f"the {table.heading.lstrip('# ')} table")
        budgets = list(dict.fromkeys(b for r in table.runs for b in r.budgets))
        p.add_argument("--budget", choices=budgets, default="cpu")
        p.add_argument(
            "--only",
            default=",".join(r.name for r in table.runs),
            help="comma-separated runs: " + ", ".join(r.name for r in table.runs),
        )
        p.add_argument("--seeds", default=",".join(map(str, table.default_seeds)), help="comma-separated seeds")
        p.add_argument("--trainer", default=None, help="a conf/trainer option, e.g. gpu")
        p.add_argument("--out", type=Path, default=REPO / "outputs" / "reproduce", help="run folders go here")
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="CPU threads per run (OMP_NUM_THREADS); on a shared machine, 1 or 2",
        )
        p.add_argument(
            "--max-time",
            default=None,
            metavar="DD:HH:MM:SS",
            help="the wall limit of each run (trainer.max_time), replacing the budget's; a run stopped by it is "
            "tested, and rerunning with a larger limit continues it",
        )
        p.add_argument("--results", type=Path, default=RESULTS, help="the markdown file whose section is rewritten")
        p.add_argument("--records", type=Path, default=None, help="the JSON records (default: next to this script)")
        p.add_argument("--curves", type=Path, default=CURVES, help="where the curve PNGs go")
        p.add_argument("--smoke", action="store_true", help="2 tiny epochs a run: checks the commands end to end")
        p.add_argument("--write-only", action="store_true", help="rebuild the section from the records, run nothing")
        p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    for name, script in DELEGATED.items():
        # the script is loaded only when its subcommand is chosen, so one table's breakage cannot stop another
        sub.add_parser(name, help=f"experiments/{script} {name} (its own options)", add_help=False)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module = delegate(DELEGATED[argv[0]])
        own = argparse.ArgumentParser(prog=f"reproduce.py {argv[0]}")
        module.add_arguments(own, argv[0])
        args = own.parse_args(argv[1:])
        args.what = argv[0]
        module.dispatch(args)
        return
    args = parser().parse_args(argv)
    table = TABLES[args.table]
    chosen = args.only.split(",")
    unknown = set(chosen) - {r.name for r in table.runs}
    if unknown:
        raise SystemExit(f"--only: unknown runs {sorted(unknown)}; accepted: {[r.name for r in table.runs]}")
    seeds = [int(s) for s in args.seeds.split(",")]
    records_path = args.records or table.records_path
    records = json.loads(records_path.read_text()) if records_path.is_file() else {}
    for run in (r for r in table.runs if r.name in chosen and not args.write_only):
        for seed in seeds:
            if args.dry_run:
                print(
                    "python -m genlab "
                    + " ".join(command(table, run, args.budget, seed, args.trainer, args.smoke, args.max_time))
                    + f" hydra.run.dir={run_dir(args.out, table, run, args.budget, seed)}"
                )
                continue
            print(f"running {table.name}/{run.name} ({args.budget}, seed {seed}) ...", flush=True)
            rec = execute(table, run, args.budget, seed, args)
            # re-read first: another reproduce.py (a table's other run, on the other core) may have written since
            records = json.loads(records_path.read_text()) if records_path.is_file() else {}
            records[f"{run.name}:{rec['budget']}:{seed}"] = rec
            records_path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
            print(f"  done in {rec['wall_s']:.0f} s: {table.row(run, rec)[0]}", flush=True)
    if not args.dry_run:
        write_section(table.heading, section(table, records, args.curves, args.results), args.results)
        print(f"wrote the {table.heading!r} section of {args.results}")


if __name__ == "__main__":
    main()
