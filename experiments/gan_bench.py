"""GAN tables: PacGAN's 2-D table, the five losses on the same protocol, the MNIST GAN; writes ``## GANs``.

    python experiments/reproduce.py gan2d --budget cpu|full          # both 2-D tables (or gan_bench.py gan2d)
    python experiments/reproduce.py gan2d --budget cpu --only pacgan --data ring --seeds 0,1 --dry-run
    python experiments/reproduce.py gan2d --budget cpu --only losses --data ring8,grid25   # VEEGAN-style toys
    python experiments/reproduce.py gan_mnist --budget cpu|full      # the MNIST GAN against steps, 3 seeds
    python experiments/gan_bench.py speed                            # steps/s of experiment=pacgan_ring, 1 thread
    python experiments/gan_bench.py table                            # rebuild the section from the records

gan2d: the PacGAN table (GAN and PacGAN2/3/4 on ring and grid, 10 seeds at ``full`` as the paper, 5 at ``cpu``)
and the losses table (minimax, nonsaturating, wgan_gp, hinge, lsgan on ring and grid, 3 seeds), all with
``experiment=pacgan_ring|pacgan_grid``. PacGAN-m keeps the reference's 100 packed discriminator inputs per step
and its number of generator steps: batch 100m, m times the epochs. ``full`` is the protocol's 400 epochs
(400,000 generator steps a run); ``cpu`` is 20 (5 %), ``--epochs`` sets another budget.

``--data ring8,grid25`` runs the losses table on the VEEGAN-style toys instead (``experiment=gan_ring8|gan_grid25``:
small MLPs, 20,000 samples, batch 256, 79 generator steps an epoch), far cheaper per step: ``cpu`` is 300 epochs
(23,700 steps, where a measured nonsaturating ring8 curve reaches its plateau), ``full`` 2,000 epochs (PacGAN's
40M samples), ``--toy-epochs`` another budget.

Every run is one ``python -m genlab ...`` process (one thread unless ``--threads``; ``--jobs`` runs several at
once). Each finished run is recorded in experiments/gan_results.json under its exact command, so an
interrupted table resumes where it stopped and runs shared by two tables (the nonsaturating loss is the GAN
row) run once. A longer budget of a row (``--epochs``) continues each seed's recorded shorter run from its
``last.ckpt``, which ends where a run from scratch ends (``--fresh`` starts over). Rows carry the command, seeds, generator steps, wall time, machine load (sampled during the
run), mean ± standard error over seeds and learning curves (PNG) of every validation epoch.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml
from provenance import git_commit

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"
HEADING = "## GANs"
LOSSES = ("minimax", "nonsaturating", "wgan_gp", "hinge", "lsgan")
# Rows of the losses table and their overrides: the five losses at the table's one critic step per generator
# step, and WGAN-GP as its paper trains it, five critic steps per generator step (Gulrajani et al. 2017, Alg. 1).
LOSS_ROWS = {
    "minimax": ("loss=minimax",),
    "nonsaturating": (),
    "wgan_gp": ("loss=wgan_gp",),
    "wgan_gp, 5 critic steps": ("loss=wgan_gp", "model.n_critic=5"),
    "hinge": ("loss=hinge",),
    "lsgan": ("loss=lsgan",),
}
LOSS_ROW_NAMES = {"wgan_gp5": "wgan_gp, 5 critic steps"}  # --losses spelling of the row names with spaces
PACKS = (1, 2, 3, 4)
TOY_DATA = ("ring", "grid")  # PacGAN's protocol (experiment=pacgan_ring|pacgan_grid)
# VEEGAN-style toys (experiment=gan_ring8|gan_grid25: 20,000 samples, batch 256, MLP 3x128): the losses table only.
VEEGAN_TOYS = {"ring8": "gan_ring8", "grid25": "gan_grid25"}
ALL_TOYS = (*TOY_DATA, *VEEGAN_TOYS)
TOY_MODES = {"ring": 8, "grid": 25, "ring8": 8, "grid25": 25}
TOY_TRAIN = {"ring8": 20000, "grid25": 20000}  # the presets' data.n_train (PacGAN's toys: 100,000)
TOY_BATCH = 256  # the VEEGAN-style presets' data.batch_size
# PacGAN's protocol: 400 epochs of 100,000 samples, batch 100 = 400,000 generator steps, 40M samples seen.
PAPER_STEPS, PAPER_SAMPLES = 400_000, 40_000_000
MODE_KEYS = ("modes", "hq", "mode_kl")
IMAGE_KEYS = ("fd", "precision", "recall", "classes", "class_entropy")
# Issue 13's MNIST targets: every seed 10/10 classes, class entropy >= 2.25 nats, precision and recall >= 0.8.
# MNIST images the GAN trains on: 60,000 less the default 10 % validation split (data.val_size=0.1).
MNIST_FIT = 54000
MNIST_TARGETS = {"classes": 10.0, "class_entropy": 2.25, "precision": 0.8, "recall": 0.8}

# VEEGAN Table 1 (Srivastava et al. 2017), GAN row: modes, high-quality %; its own nets and budget, no error bars,
# no KL. Shown beside the nonsaturating row of the VEEGAN-style toys for orientation only.
VEEGAN_GAN = {"ring8": ((1.0, None), (99.3, None)), "grid25": ((3.3, None), (0.5, None))}

# PacGAN Table 1 (Lin et al. 2018; mean ± standard error over 10 trials): modes, high-quality %, reverse KL.
PACGAN_TABLE1 = {
    ("ring", 1): ((6.3, 0.5), (98.2, 0.2), (0.45, 0.09)),
    ("ring", 2): ((7.9, 0.1), (95.6, 2.0), (0.07, 0.03)),
    ("ring", 3): ((7.8, 0.1), (97.7, 0.3), (0.10, 0.02)),
    ("ring", 4): ((7.8, 0.1), (95.9, 1.4), (0.07, 0.02)),
    ("grid", 1): ((17.3, 0.8), (94.8, 0.7), (0.70, 0.07)),
    ("grid", 2): ((23.8, 0.7), (91.3, 0.8), (0.13, 0.04)),
    ("grid", 3): ((24.6, 0.4), (94.2, 0.4), (0.06, 0.02)),
    ("grid", 4): ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01)),
}


# -- budgets and rows ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """Epochs of a pack-1 run (PacGAN-m runs m times as many), validation spacing, seeds, extra overrides.

    ``toy_epochs`` / ``toy_val_every``: epochs of the VEEGAN-style toys (20,000 samples, 79 steps of batch 256).
    """

    epochs: int
    val_every: int
    toy_epochs: int
    toy_val_every: int
    pacgan_seeds: tuple[int, ...]
    loss_seeds: tuple[int, ...]
    mnist_seeds: tuple[int, ...]
    mnist: tuple[str, ...]
    extra: tuple[str, ...] = ()
    note: str = ""


# VEEGAN-style toys: at 300 epochs (23,700 steps) a nonsaturating ring8 run (seed 0, lr 1e-3) has covered 8/8 modes
# since ~epoch 60 and its high-quality share has stopped rising (~epoch 220); 2,000 epochs draw PacGAN's 40M samples.
TOY_CPU_EPOCHS = 300
TOY_FULL_EPOCHS = 2000
BUDGETS = {
    "full": Budget(
        400, 10, TOY_FULL_EPOCHS, 10, tuple(range(10)), (0, 1, 2), (0, 1, 2),
        ("trainer.max_epochs=30", "trainer.limit_train_batches=1.0"),
        note="the protocol's 400 epochs: 400,000 generator steps a run",
    ),
    "cpu": Budget(
        20, 1, TOY_CPU_EPOCHS, 10, tuple(range(5)), (0, 1, 2), (0, 1, 2),
        ("trainer.max_epochs=10", "trainer.limit_train_batches=500"),
        note="20 of the protocol's 400 epochs: 20,000 generator steps a run",
    ),
    # The whole pipeline in about a minute: for trying the command, not for numbers.
    "smoke": Budget(
        2, 1, 2, 1, (0,), (0,), (0,),
        ("trainer.max_epochs=2", "trainer.limit_train_batches=20", "model.feature_classifier_steps=50"),
        extra=("data.n_train=1000", "data.n_val=500", "data.n_test=500"),
        note="smoke test of the pipeline (1,000 samples, 2 epochs)",
    ),
}  # fmt: skip
BUDGETS["paper"] = BUDGETS["full"]  # the name reproduce.py's other tables use


@dataclass(frozen=True)
class Row:
    """One table row: its runs differ only by seed."""

    table: str  # pacgan | losses | mnist
    data: str  # ring | grid | mnist
    name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    published: tuple[tuple[float, float], ...] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.table}/{self.data}/{self.name}"

    @property
    def ident(self) -> str:
        return f"{self.key} | {' '.join(self.overrides)}"

    def as_record(self) -> dict:
        return {"table": self.table, "data": self.data, "name": self.name, "overrides": list(self.overrides),
                "published": self.published}  # fmt: skip

    @classmethod
    def from_record(cls, rec: dict) -> Row:
        published = tuple(tuple(p) for p in rec["published"]) if rec.get("published") else None
        return cls(rec["table"], rec["data"], rec["name"], tuple(rec["overrides"]), (), published)  # type: ignore[arg-type]


def epochs_overrides(epochs: int, val_every: int, pack: int) -> tuple[str, ...]:
    """A PacGAN-m run: m times the epochs of batch 100m, so 100 packed D inputs and 1,000 G steps per 100k samples."""
    return (
        f"data.batch_size={100 * pack}",
        f"trainer.max_epochs={epochs * pack}",
        f"trainer.check_val_every_n_epoch={val_every * pack}",
    )


def gan2d_rows(budget: Budget, epochs: int, tables: Sequence[str], data: Sequence[str],
               seeds: tuple[int, ...] | None = None, toy_epochs: int | None = None,
               losses: Sequence[str] = LOSSES, packs: Sequence[int] = PACKS) -> list[Row]:  # fmt: skip
    """The PacGAN table (GAN, PacGAN2-4) and the losses table (rows of ``losses``) on ``data``, at ``epochs``.

    ``data`` ring/grid are PacGAN's protocol; ring8/grid25 the VEEGAN-style toys (the losses table only), at
    ``toy_epochs`` epochs of their 20,000 samples (default: the budget's).
    """
    val_every = max(1, min(budget.val_every, epochs // 4 or 1))
    rows = []
    for d in data:
        if d in VEEGAN_TOYS:
            if "losses" in tables:
                rows += veegan_loss_rows(budget, d, toy_epochs or budget.toy_epochs, seeds, losses)
            continue
        if "pacgan" in tables:
            for m in packs:
                rows.append(Row(
                    "pacgan", d, "GAN" if m == 1 else f"PacGAN{m}",
                    (f"experiment=pacgan_{d}", f"model.pack={m}", *epochs_overrides(epochs, val_every, m),
                     *budget.extra),
                    seeds or budget.pacgan_seeds, PACGAN_TABLE1[(d, m)],
                ))  # fmt: skip
        if "losses" in tables:
            for loss in losses:
                # The nonsaturating row is the GAN row's command: its runs are shared.
                rows.append(Row(
                    "losses", d, loss,
                    (f"experiment=pacgan_{d}", "model.pack=1", *epochs_overrides(epochs, val_every, 1),
                     *budget.extra, *LOSS_ROWS[loss]),
                    seeds or budget.loss_seeds, PACGAN_TABLE1[(d, 1)] if loss == "nonsaturating" else None,
                ))  # fmt: skip
    return rows


def veegan_loss_rows(budget: Budget, d: str, epochs: int, seeds: tuple[int, ...] | None,
                     losses: Sequence[str] = LOSSES) -> list[Row]:  # fmt: skip
    """The five losses on a VEEGAN-style toy (experiment=gan_ring8|gan_grid25) for ``epochs`` epochs of batch 256."""
    val_every = max(1, min(budget.toy_val_every, epochs // 4 or 1))
    base = (f"experiment={VEEGAN_TOYS[d]}", f"data.batch_size={TOY_BATCH}", f"trainer.max_epochs={epochs}",
            f"trainer.check_val_every_n_epoch={val_every}", *budget.extra)  # fmt: skip
    return [
        Row(
            "losses",
            d,
            loss,
            (*base, *LOSS_ROWS[loss]),
            seeds or budget.loss_seeds,
            VEEGAN_GAN[d] if loss == "nonsaturating" else None,
        )  # fmt: skip
        for loss in losses
    ]


def mnist_rows(budget: Budget, data_dir: str, seeds: tuple[int, ...] | None, classifier: Path,
               variant: Sequence[str] = ()) -> list[Row]:  # fmt: skip
    """experiment=gan_mnist at the budget; every seed scored in the features of one shared classifier.

    ``variant``: Hydra overrides of the preset (e.g. ``model.ema_decay=0.999``), a row of its own named by them.
    """
    overrides = (
        "experiment=gan_mnist",
        "data.batch_size=64",
        *budget.mnist,
        f"model.feature_classifier_path={classifier}",
        *variant,
    )
    name = ", ".join(["DCGAN-style, nonsaturating", *variant])
    return [Row("mnist", "mnist", name, overrides, seeds or budget.mnist_seeds,
                env={"GENLAB_DATA_DIR": data_dir})]  # fmt: skip


def real_reference(classifier: Path, data_dir: str, n: int = 2000, seed: int = 0) -> dict:
    """The sample metrics of ``n`` real test images against the ``n`` validation images a seed-``seed`` run is
    scored against, in the shared classifier's features: what a generator indistinguishable from the data scores."""
    import torch

    from genlab.data.mnist import MNISTDataModule
    from genlab.metrics.classifier import load_classifier
    from genlab.metrics.features import ClassifierSampleMetrics

    net, _ = load_classifier(classifier)
    data = MNISTDataModule(root=data_dir, val_size=0.1, seed=seed)
    data.setup("fit")
    metric = ClassifierSampleMetrics(net, k=3, sync_on_compute=False)
    with torch.no_grad():
        metric.update_real(data.split_tensors("val")[0][:n])
        metric.update_fake(data.split_tensors("test")[0][:n])
        values = {k: round(float(v), 4) for k, v in metric.compute().items()}
    return {"values": values, "n": n, "seed": seed}


# -- running ------------------------------------------------------------------------------------------
def run_key(overrides: Iterable[str], seed: int) -> str:
    return " ".join([*overrides, f"seed={seed}"])


def command_line(row: Row, seed: int, threads: int, trainer: str | None) -> str:
    """The shell command of one run (without its run folder), as recorded in the table."""
    env = {**row.env, "OMP_NUM_THREADS": str(threads)}
    extra = [f"trainer={trainer}"] if trainer else []
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"{prefix} python -m genlab {' '.join(shlex.quote(o) for o in [*row.overrides, *extra, f'seed={seed}'])}"


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = []
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """Every validation epoch of the run's csv log: generator steps (batches so far) and the val/ sample metrics."""
    files = sorted(run_dir.glob("csv/**/metrics.csv")) or sorted(run_dir.glob("**/metrics.csv"))
    if not files:
        return []
    points = []
    with files[0].open() as fh:
        for row in csv.DictReader(fh):
            values = {k[4:]: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if values and any(k in values for k in (*MODE_KEYS, *IMAGE_KEYS)):
                # Lightning logs validation at the last trained batch's index: one generator step per batch.
                points.append({"step": int(row["step"]) + 1, "epoch": int(row["epoch"]), **values})
    return points


def shorter_run(row: Row, seed: int, records: dict) -> dict | None:
    """The recorded run of ``row``'s seed with the most epochs below its own, all other overrides equal, whose
    ``last.ckpt`` is still on disk: a longer budget continues it instead of starting again."""
    def others(overrides: Iterable[str]) -> list[str]:
        return [o for o in overrides if not o.startswith("trainer.max_epochs=")]

    epochs = int(dict(o.split("=", 1) for o in row.overrides if "=" in o).get("trainer.max_epochs", 0))
    found = [
        rec for rec in records["runs"].values()
        if rec.get("seed") == seed and others(rec["overrides"]) == others(row.overrides) and rec["epochs"] < epochs
        and (Path(rec["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
    ]  # fmt: skip
    return max(found, key=lambda rec: rec["epochs"], default=None)


def run_one(row: Row, seed: int, out: Path, threads: int, trainer: str | None, start_from: dict | None = None) -> dict:
    """Run one seed of ``row`` in its own folder; the record of its command, cost, final metrics and curve.

    ``start_from``: the record of a shorter run of the same row and seed (:func:`shorter_run`). Its folder is
    copied and continued from its ``last.ckpt`` (``ckpt_path=last``), which ends where a run started from scratch
    ends (tests/test_resume.py); its rows stay in the curve and its time counts in the cost.
    """
    # One folder per budget: a longer run of a row must not delete the shorter one's checkpoints and pictures.
    run_dir = out / row.table / row.data / re.sub(r"\W+", "_", row.name) / f"{steps_of(row)}_steps" / f"seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    if start_from is not None:
        shutil.copytree(start_from["run_dir"], run_dir)
    env = {**os.environ, **row.env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.setdefault("WANDB_MODE", "offline")
    args = [*row.overrides, *([f"trainer={trainer}"] if trainer else []), f"seed={seed}",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
            *(["ckpt_path=last"] if start_from is not None else [])]  # fmt: skip
    commit = git_commit()
    loads = [os.getloadavg()[0]]
    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    name = re.sub(r"[^A-Za-z0-9]+", "_", row.name)
    log = (out / "logs").joinpath(f"{row.table}_{row.data}_{name}_{steps_of(row)}_steps_{seed}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=REPO, env=env, stdout=fh, stderr=fh)
        while proc.poll() is None:
            time.sleep(1.0)
            if time.perf_counter() - start > 15 * len(loads):  # a load sample every 15 s
                loads.append(os.getloadavg()[0])
    wall = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{row.key} seed {seed} failed ({proc.returncode}); log: {log}\n{log.read_text()[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = read_curve(run_dir)
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    pictures = sorted((run_dir / "images").glob("modes_epoch*.png")) or sorted(
        (run_dir / "images").glob("fixed_noise_epoch*.png")
    )
    earlier = start_from or {"wall_s": 0.0, "cpu_s": 0.0}
    return {
        "command": command_line(row, seed, threads, trainer),
        "overrides": list(row.overrides),
        "seed": seed,
        "steps": curve[-1]["step"] if curve else None,
        "epochs": config["trainer"]["max_epochs"],
        "wall_s": round(wall + earlier["wall_s"], 1),
        # Only this run's process tree, with --jobs > 1 other runs' CPU time would be mixed in.
        "cpu_s": round(done.ru_utime - usage.ru_utime + done.ru_stime - usage.ru_stime + earlier["cpu_s"], 1),
        "continued_from": None if start_from is None else {
            "steps": start_from["steps"], "epochs": start_from["epochs"], "run_dir": start_from["run_dir"],
            "commit": start_from.get("commit"), "wall_s": start_from["wall_s"],  # records before provenance lack it
        },  # fmt: skip
        "load_mean": round(statistics.mean(loads), 2),
        "load_max": round(max(loads), 2),
        "threads": threads,
        "machine": cpu_name() + (f", trainer={trainer}" if trainer else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        # the code that ran and the matmul library it picked: what "same config, same seed" needs besides the command
        "commit": commit,
        "cpu_matmul": metrics.get("cpu_matmul"),
        "run_dir": str(run_dir),
        "picture": str(pictures[-1]) if pictures else None,
        "final": {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))},
        "curve": curve,
    }


def run_rows(rows: Sequence[Row], records: dict, save, out: Path, threads: int, jobs: int,
             trainer: str | None, rerun: bool, fresh: bool = False) -> None:  # fmt: skip
    """Run every (row, seed) not yet recorded (or all with ``rerun``), ``jobs`` at a time, saving after each;
    a run whose shorter budget is recorded continues that run unless ``fresh``."""
    todo, seen = [], set()
    for row in rows:
        for seed in row.seeds:
            key = run_key(row.overrides, seed)
            if key in seen or (key in records["runs"] and not rerun):
                continue
            seen.add(key)
            todo.append((row, seed, key))
    print(f"{len(todo)} runs to do ({sum(len(r.seeds) for r in rows) - len(todo)} recorded or shared)", flush=True)

    lock = threading.Lock()

    def work(item: tuple[Row, int, str]) -> None:
        row, seed, key = item
        start_from = None if fresh else shorter_run(row, seed, records)
        since = f" (continuing its {start_from['steps']:,}-step run)" if start_from else ""
        print(f"running {row.key} seed {seed}{since} ...", flush=True)
        rec = run_one(row, seed, out, threads, trainer, start_from)
        with lock:
            records["runs"][key] = rec
            save()
        final = rec["final"]
        summary = ", ".join(f"{k} {final[f'val/{k}']:.3g}" for k in (*MODE_KEYS, *IMAGE_KEYS) if f"val/{k}" in final)
        print(f"  {row.key} seed {seed}: {summary} ({rec['wall_s'] / 60:.1f} min)", flush=True)

    for row in rows:
        records.setdefault("rows", {})[row.ident] = row.as_record()
    if todo:  # the first run alone: it may write a file the others read (the MNIST feature classifier)
        work(todo[0])
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(work, todo[1:]))


# -- statistics and the verdict ------------------------------------------------------------------------
def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample std / sqrt(n)); no error for a single value."""
    if len(values) < 2:
        return float(values[0]), None
    return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))


def fmt(mean: float, se: float | None, digits: int = 1) -> str:
    return f"{mean:.{digits}f}" if se is None else f"{mean:.{digits}f} ± {se:.{digits}f}"


def verdict(ours: tuple[float, float | None], published: tuple[float, float | None], higher_is_better: bool) -> str:
    """'within 2 SE' when |ours - published| <= 2 sqrt(se_ours^2 + se_published^2), else 'better' or 'worse'.

    A missing standard error (one seed, or a paper without error bars) counts as 0.
    """
    (m, se), (p, pse) = ours, published
    if abs(m - p) <= 2 * math.hypot(se or 0.0, pse or 0.0):
        return "within 2 SE"
    return "better" if (m > p) == higher_is_better else "worse"


def row_runs(row: Row, records: dict) -> list[dict]:
    """Every recorded run of ``row``'s command, whatever seeds were asked for, by seed."""
    runs = [r for r in records["runs"].values() if r["overrides"] == list(row.overrides)]
    return sorted(runs, key=lambda r: r["seed"])


def recorded_rows(records: dict) -> list[Row]:
    """The rows of every table that has runs, in table order: PacGAN (by pack), losses (chapter order), MNIST."""
    rows = [Row.from_record(r) for r in records.get("rows", {}).values()]
    rows = [r for r in rows if row_runs(r, records)]
    names = ["GAN", *(f"PacGAN{m}" for m in PACKS[1:]), *LOSS_ROWS]

    def order(row: Row) -> tuple:
        steps = row_runs(row, records)[0]["steps"] or 0
        data = (*ALL_TOYS, "mnist").index(row.data)
        # PacGAN3's 334-batch epochs give 20,040 steps where the others have 20,000: the same budget, by 1 %.
        budget = float(f"{steps:.2g}")
        return (("pacgan", "losses", "mnist").index(row.table), data, budget,
                names.index(row.name) if row.name in names else len(names))  # fmt: skip

    return sorted(rows, key=order)


def aggregate(runs: Sequence[dict], keys: Sequence[str], scale: dict[str, float] | None = None) -> dict:
    """Mean ± SE over seeds of each ``val/<key>`` at the last validation (× scale, e.g. 100 for percentages)."""
    scale = scale or {}
    return {k: mean_se([r["final"][f"val/{k}"] * scale.get(k, 1.0) for r in runs]) for k in keys}


def cost_cell(runs: Sequence[dict]) -> str:
    """Generator steps recorded, wall time per run and in all, threads, and the load average sampled during the runs."""
    steps = sorted({r["steps"] for r in runs if r["steps"]})
    walls = [r["wall_s"] for r in runs]
    load_mean = statistics.mean(r["load_mean"] for r in runs)
    load_max = max(r["load_max"] for r in runs)
    steps_text = "/".join(f"{s:,}" for s in steps) or "?"
    continued = sorted({r["continued_from"]["steps"] for r in runs if r.get("continued_from")})
    return (
        f"{steps_text} G steps; {statistics.mean(walls) / 60:.1f} min/run ({sum(walls) / 3600:.2f} h in all), "
        f"{runs[0]['threads']} thread{'s' * (runs[0]['threads'] > 1)}/run; load {load_mean:.1f} mean, {load_max:.1f} max"
        + (f"; continued from the {'/'.join(f'{s:,}' for s in continued)}-step runs (load of the continuation)"
           if continued else "")
    )


def late_change(runs: Sequence[dict], key: str, scale: float = 1.0) -> tuple[float, int] | None:
    """Mean over seeds of (last value - value at the validation nearest half the last step) of ``key``, and that step.

    Near 0 (against the seeds' spread) when the row has plateaued over the second half of its budget; None when
    a curve has fewer than two validations.
    """
    deltas, halves = [], []
    for run in runs:
        curve = [p for p in run.get("curve") or [] if key in p]
        if len(curve) < 2:
            return None
        half = min(curve[:-1], key=lambda p: abs(p["step"] - curve[-1]["step"] / 2))
        deltas.append((curve[-1][key] - half[key]) * scale)
        halves.append(half["step"])
    return statistics.mean(deltas), round(statistics.mean(halves))


def plateau_cell(runs: Sequence[dict], keys: Sequence[tuple[str, float, int]]) -> str:
    """'+0.3 / -1.2 since 5,000' : the change of each (key, scale, digits) over the second half of the curve."""
    changes = [(late_change(runs, k, scale), digits) for k, scale, digits in keys]
    if any(c is None for c, _ in changes):
        return "–"
    text = " / ".join(f"{c[0]:+.{digits}f}" for c, digits in changes)  # type: ignore[index]
    return f"{text} since {changes[0][0][1]:,}"  # type: ignore[index]


# -- pictures -----------------------------------------------------------------------------------------
def curve_figure(rows: Sequence[Row], records: dict, keys: Sequence[tuple[str, str, float]], title: str, path: Path):
    """Mean ± SE over seeds of each metric against generator steps, one line per row; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8))
    for ax, (key, label, scale) in zip(axes, keys):
        for row in rows:
            curves = [r["curve"] for r in row_runs(row, records) if r["curve"]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            steps = [curves[0][i]["step"] for i in range(n)]
            stats = [mean_se([c[i][key] * scale for c in curves]) for i in range(n)]
            mean = [m for m, _ in stats]
            se = [s or 0.0 for _, s in stats]
            ax.plot(steps, mean, marker="o", ms=3, label=f"{row.name}, {steps[-1]:,} steps ({len(curves)} seeds)")
            ax.fill_between(steps, [m - s for m, s in zip(mean, se)], [m + s for m, s in zip(mean, se)], alpha=0.2)
        ax.set_xlabel("generator steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the RESULTS.md section ---------------------------------------------------------------------------
PROTOCOL = (
    "Protocol of PacGAN (Lin et al., NeurIPS 2018, §5.1), from its official code (github fjxmlzn/PacGAN): "
    "`synthetic_data_experiments/2DRing_GAN&PacGAN/config.py` and `2DGrid_GAN&PacGAN/config.py` (ring: 8 modes at "
    "radius 1, std 0.01; grid: 25 modes at {-4,-2,0,2,4}², std 0.05; 100,000 training samples; 400 epochs of batch "
    "100; Adam lr 1e-4, beta1 0.8; 2-D N(0, I) noise; weights N(0, 0.02²), biases 0), `pacgan_task.py` (generator "
    "4 hidden layers of 400: linear without bias, batch norm, ReLU; discriminator 3 maxout layers of 200 units x 5 "
    "pieces; linear outputs), `PacGAN/pacgan/bricks.py` (non-saturating loss; packing concatenates m samples per "
    "discriminator input), `PacGAN/pacgan/datasets.py` (a real pack is m samples of the 100,000) and "
    "`PacGAN/pacgan/extensions.py` (2,500 samples, nearest mode by std-normalised distance, high quality below 3 "
    "std, a mode counts with one high-quality sample). genlab presets: `experiment=pacgan_ring|pacgan_grid` "
    "(`conf/experiment/pacgan_*.yaml`); PacGAN-m adds `model.pack=m` with batch 100m and m times the epochs, so the "
    "discriminator judges 100 packs per step over the same 400,000 generator steps as the reference. Metrics: the "
    "last validation epoch, 2,500 samples from fixed noise. Differences from the reference: the generator samples "
    "with batch-norm running statistics (momentum 0.1) where the reference scores with the statistics of the 2,500 "
    "samples; real packs are consecutive samples of a shuffled pass where the reference draws each with replacement."
)


VEEGAN_PROTOCOL = (
    "VEEGAN-style toys, `experiment=gan_ring8|gan_grid25` (`conf/experiment/gan_ring8.yaml`, `gan_grid25.yaml`): "
    "ring of 8 modes at radius 2, std 0.02; grid of 25 modes at {-4,-2,0,2,4}², std 0.05 (the scale of VEEGAN's "
    "toys, PacGAN's ring halved); 20,000 training samples, batch 256 (79 generator steps an epoch); generator and "
    "discriminator MLPs of 3 hidden layers of 128 (generator ReLU with batch norm, discriminator leaky ReLU), "
    "16-D N(0, I) noise, Adam lr 1e-3, betas (0.5, 0.999), one discriminator step per generator step, every "
    "loss with its defaults in `conf/loss/` (WGAN-GP: penalty weight 10). Same metric as above (2,500 samples from "
    "fixed noise, 3 std). These are genlab's nets and budget, not VEEGAN's: its Table 1 GAN row (modes / "
    "high-quality %, no error bars, no KL) stands beside the nonsaturating row for orientation only, and the "
    "verdict against it treats it as exact. The budget column gives each row's generator steps and samples as a "
    "fraction of PacGAN's protocol (400,000 steps, 40M samples); *late change* is the mean over seeds of the last "
    "validation minus the one at half the steps (modes / high quality %), near 0 where the row has plateaued."
)
TOY_HEADINGS = {"pacgan": "PacGAN Table 1, {d} ({k} modes)", "losses": "The five losses, {d} ({k} modes)"}
TOY_NAMES = {"ring": "PacGAN's ring", "grid": "PacGAN's grid", "ring8": "VEEGAN-style ring8",
             "grid25": "VEEGAN-style grid25"}  # fmt: skip


def published_cell(published: Sequence[tuple[float, float | None]]) -> str:
    return " / ".join(fmt(m, s, 2 if i == 2 else 1) for i, (m, s) in enumerate(published))


def toy_table(table: str, d: str, rows: Sequence[Row], records: dict, picture: str | None) -> list[str]:
    """One 2-D table: mean ± SE of modes / high quality % / reverse KL per row, against PacGAN Table 1 where it has one."""
    source = "VEEGAN Table 1" if d in VEEGAN_TOYS else "PacGAN Table 1"
    lines = [
        "#### " + TOY_HEADINGS[table].format(d=TOY_NAMES[d], k=TOY_MODES[d]),
        "",
        f"| method | modes | high quality % | reverse KL | published ({source}) | verdict (modes / hq / KL) "
        "| late change (modes / hq) | seeds | budget | cost | command (seed 0) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = row_runs(row, records)
        agg = aggregate(runs, MODE_KEYS, {"hq": 100.0})
        pub = row.published
        verdicts = "–" if pub is None else " / ".join(
            verdict(agg[key], pub[i], higher) if i < len(pub) else "–"
            for i, (key, higher) in enumerate(zip(MODE_KEYS, (True, True, False)))
        )  # fmt: skip
        published = "–" if pub is None else ("GAN row: " if table == "losses" else "") + published_cell(pub)
        lines.append(
            f"| {row.name} | **{fmt(*agg['modes'])}** | **{fmt(*agg['hq'])}** | **{fmt(*agg['mode_kl'], 2)}** | "
            f"{published} | {verdicts} | {plateau_cell(runs, [('modes', 1.0, 1), ('hq', 100.0, 1)])} | "
            f"{', '.join(str(r['seed']) for r in runs)} | {budget_text(row)} | {cost_cell(runs)} | "
            f"`{runs[0]['command']}` |"
        )
    if picture:
        lines += ["", f"Learning curves (mean ± SE over seeds at every validation): ![{table} {d} curves]({picture})"]
    return lines + reading_lines(records, f"{table}_{d}")


def reading_lines(records: dict, key: str) -> list[str]:
    """The written reading of a table (``records["readings"][key]``: what the numbers and curves say), if any."""
    text = records.get("readings", {}).get(key)
    return ["", f"*Reading:* {text}", ""] if text else [""]


def mnist_targets_met(runs: Sequence[dict]) -> str:
    """Issue 13's MNIST targets, each 'yes' or 'no' with the row's value: every seed 10/10 classes, means ≥ target."""
    agg = aggregate(runs, IMAGE_KEYS)
    checks = [f"10/10 in every seed: {'yes' if all(r['final']['val/classes'] >= 10 for r in runs) else 'no'}"]
    checks += [
        f"{key} ≥ {target}: {'yes' if agg[key][0] >= target else 'no'}"
        for key, target in MNIST_TARGETS.items()
        if key != "classes"
    ]
    return "; ".join(checks)


def mnist_table(rows: Sequence[Row], records: dict, curve_picture: str | None, grid: str | None,
                reference: dict | None = None) -> list[str]:  # fmt: skip
    """The MNIST GAN rows (mean ± SE over seeds at the last validation), the real-data reference, the curves."""
    rows = [row for row in rows if row_runs(row, records)]
    if not rows:
        return []
    lines = [
        "### MNIST GAN against steps",
        "",
        "`experiment=gan_mnist` (DCGAN-style conv nets, non-saturating loss); FD, precision/recall (k=3) and classes "
        "in the features of one MNIST classifier shared by all seeds, on 2,000 samples from fixed noise at every "
        "validation epoch, against 2,000 images of the run's validation split. Final values: last validation epoch, "
        "mean ± SE over seeds. Targets (issue 13): 10/10 classes in every seed, class entropy ≥ 2.25 nats, "
        "precision and recall ≥ 0.8. *Late change*: mean over seeds of the last validation minus the one at half "
        "the steps (FD / precision / recall), near 0 on a plateau.",
        "",
        "| model | FD | precision | recall | classes (of 10) | class entropy (max 2.30) | targets met | late change "
        "| seeds | budget and cost | command (seed 0) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = row_runs(row, records)
        agg = aggregate(runs, IMAGE_KEYS)
        lines.append(
            f"| {row.name} | **{fmt(*agg['fd'], 2)}** | **{fmt(*agg['precision'], 3)}** | "
            f"**{fmt(*agg['recall'], 3)}** | **{fmt(*agg['classes'])}** | **{fmt(*agg['class_entropy'], 3)}** | "
            f"{mnist_targets_met(runs)} | "
            f"{plateau_cell(runs, [('fd', 1.0, 2), ('precision', 1.0, 3), ('recall', 1.0, 3)])} | "
            f"{', '.join(str(r['seed']) for r in runs)} | {cost_cell(runs)} | `{runs[0]['command']}` |"
        )
    if reference:
        v = reference["values"]
        lines.append(
            f"| real test images (reference) | {v['fd']:.2f} | {v['precision']:.3f} | {v['recall']:.3f} | "
            f"{v['classes']:.0f} | {v['class_entropy']:.3f} | – | – | {reference['seed']} (its split) | "
            f"{reference['n']:,} test images in place of samples | `python experiments/reproduce.py gan_mnist` |"
        )
        lines += [
            "",
            "The reference row scores real MNIST test images the way the GAN's samples are scored: what a "
            "generator indistinguishable from the data would get with 2,000 samples and k=3.",
        ]
    if curve_picture:
        lines += ["", f"Against steps: ![MNIST GAN curves]({curve_picture})"]
    if grid:
        lines += ["", f"Fixed-noise samples, {grid[0]}, seed 0, last epoch: ![MNIST GAN samples]({grid[1]})"]
    return lines + reading_lines(records, "mnist")


def section(records: dict, rows: Sequence[Row], pictures: dict[str, str]) -> str:
    """The ``## GANs`` section: the recorded tables in ``rows`` order, then the earlier short-budget records."""
    lines = [
        HEADING,
        "",
        "Written by `experiments/gan_bench.py` (`python experiments/reproduce.py gan2d|gan_mnist --budget "
        "cpu|full`) from `experiments/gan_results.json`. Mean ± standard error over seeds; the budget of every row "
        "is stated in it. Verdict per metric: *within 2 SE* when |genlab − published| ≤ 2 √(SE_genlab² + "
        "SE_published²), else *better* or *worse* (more modes, more high-quality samples, lower KL are better).",
        "",
    ]
    toy = [r for r in rows if r.table in ("pacgan", "losses") and row_runs(r, records)]
    lines += ["### Mode coverage on PacGAN's 2-D ring and grid", "", PROTOCOL, ""]
    if "speed" in records:
        lines += [speed_line(records["speed"]), ""]
    if not [r for r in toy if r.data in TOY_DATA]:
        lines += [
            "Not run yet. `python experiments/reproduce.py gan2d --budget full` "
            f"({BUDGETS['full'].note}; 10 seeds per PacGAN row as the paper, 3 per loss) or `--budget cpu` "
            f"({BUDGETS['cpu'].note}; 5 and 3 seeds); `--dry-run` lists every command. Published (PacGAN Table 1, "
            "mean ± SE over 10 trials, modes / high-quality % / reverse KL):",
            "",
            "| method | ring | grid |",
            "|---|---|---|",
            *(
                f"| {'GAN' if m == 1 else f'PacGAN{m}'} | "
                + " | ".join(published_cell(PACGAN_TABLE1[(d, m)]) for d in TOY_DATA)
                + " |"
                for m in PACKS
            ),
            "",
        ]
    else:
        for table in ("pacgan", "losses"):
            for d in TOY_DATA:
                chosen = [r for r in toy if r.table == table and r.data == d]
                if chosen:
                    lines += toy_table(table, d, chosen, records, pictures.get(f"{table}_{d}"))
    veegan = [r for r in toy if r.data in VEEGAN_TOYS]
    if veegan or records.get("budget_curves"):
        lines += ["### The five losses on the VEEGAN-style toys", "", VEEGAN_PROTOCOL, ""]
        lines += budget_curve_lines(records, pictures)
        if not veegan:
            lines += [
                f"Not run yet. `python experiments/reproduce.py gan2d --budget cpu --only losses --data ring8,grid25` "
                f"({TOY_CPU_EPOCHS} epochs a run, 5 losses x 3 seeds per toy; `--losses minimax,nonsaturating` "
                "runs the chapter's two first; `--dry-run` lists every command).",
                "",
            ]
        for d in VEEGAN_TOYS:
            chosen = [r for r in veegan if r.data == d]
            if chosen:
                lines += toy_table("losses", d, chosen, records, pictures.get(f"losses_{d}"))
    mnist = [r for r in rows if r.table == "mnist" and row_runs(r, records)]
    grid = (pictures["mnist_grid_row"], pictures["mnist_grid"]) if "mnist_grid" in pictures else None
    lines += mnist_table(mnist, records, pictures.get("mnist"), grid, records.get("mnist_real_reference"))
    if not mnist:
        lines += [
            "### MNIST GAN against steps",
            "",
            "Not run yet. `python experiments/reproduce.py gan_mnist --budget full` trains `experiment=gan_mnist` "
            "for 30 epochs of the 54,000 training images (about 25,300 generator steps of batch 64), `--budget cpu` "
            "for 10 epochs of 500 batches (5,000 steps), 3 seeds each, scored at every epoch. Targets (issue 13): "
            "10/10 classes in every seed, class entropy ≥ 2.25 nats, precision and recall ≥ 0.8.",
            "",
        ]
    if "modes" in records or "mnist" in records:
        lines += short_budget_section(records)
    return "\n".join(lines).rstrip("\n") + "\n"


def budget_curve_lines(records: dict, pictures: dict[str, str]) -> list[str]:
    """The single-seed curves the toy budgets were chosen from: command, cost, load, and where the plateau starts."""
    lines = []
    for d, rec in sorted(records.get("budget_curves", {}).items()):
        lines += [
            f"Budget chosen from one measured curve, {TOY_NAMES[d]}, {rec['what']}: {rec['reading']} "
            f"Commands: {'; then '.join(f'`{c}`' for c in rec['commands'])} ({rec['cost']}, {rec['date']}).",
            "",
        ]
        if f"budget_{d}" in pictures:
            lines += [f"![{d} budget curve]({pictures[f'budget_{d}']})", ""]
    return lines


def budget_curve_figure(rec: dict, title: str, path: Path) -> None:
    """Modes, high quality % and reverse KL of one recorded curve against generator steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("modes", "modes covered", 1.0), ("hq", "high quality %", 100.0), ("mode_kl", "reverse KL (nats)", 1.0)]
    fig, axes = plt.subplots(1, len(keys), figsize=(15, 3.8))
    steps = [p["step"] for p in rec["curve"]]
    for ax, (key, label, scale) in zip(axes, keys):
        ax.plot(steps, [p[key] * scale for p in rec["curve"]], marker="o", ms=3)
        for chosen in rec.get("chosen_steps", []):
            ax.axvline(chosen, color="k", ls="--", lw=0.8)
        ax.set_xlabel("generator steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title + " (dashed: the chosen budget)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speed_line(speed: dict) -> str:
    cpu = speed["steps_per_cpu_s"]
    rates = ", ".join(
        f"pack {p}: {cpu[p]:.1f} per CPU second ({speed['steps_per_s'][p]:.1f} per wall second)" for p in sorted(cpu)
    )
    hours = 400_000 / cpu["1"] / 3600 if "1" in cpu else float("nan")
    return (
        f"Speed of `experiment=pacgan_ring`, generator steps (each with one discriminator step) on one thread, "
        f"training loop only: {rates} (`python experiments/gan_bench.py speed`, {speed['steps']} steps after "
        f"{speed['warmup']} warm-up, {speed['machine']}, load average {speed['load_before']} before, "
        f"{speed['load_after']} after, {speed['date']}). At the CPU-second rate a 400,000-step GAN run needs "
        f"{hours:.1f} h of one free core."
    )


def short_budget_section(records: dict) -> list[str]:
    """The earlier 15-epoch VEEGAN-toy runs and the 2,000-step MNIST run (an earlier gan_bench.py), as recorded."""
    lines = [
        "### Earlier short-budget runs",
        "",
        "15 epochs of 20,000 samples (about 1,170 generator steps) on VEEGAN's toys (ring of radius 2, std 0.02; "
        "grid spacing 2, std 0.05) with MLP 3x128 nets, Adam lr 1e-3; under 1 % of the papers' budget, so these "
        "measure early training only. Mean ± SE over 3 seeds, final validation epoch. Published on these toys "
        "(VEEGAN Table 1, its own nets and budget; modes / high-quality %): ring GAN 1 / 99.3, Unrolled GAN "
        "7.6 / 35.6, VEEGAN 8 / 52.9; grid GAN 3.3 / 0.5, Unrolled GAN 23.6 / 16, VEEGAN 24.6 / 40.",
        "",
    ]
    for data, rec in sorted(records.get("modes", {}).items(), key=lambda item: item[0] != "ring8"):
        lines += [
            f"VEEGAN-style {data} (`experiment=gan_{data}`), {rec['epochs']} epochs, {rec['runs']} runs, "
            f"{rec['wall_s'] / 60:.1f} min wall, load {rec['load']} ({rec['date']}): `{rec['command']}`",
            "",
            "| loss | modes | high quality % | KL | seeds |",
            "|---|---|---|---|---|",
        ]
        for loss in LOSSES:
            if loss in rec["losses"]:
                v = rec["losses"][loss]
                modes, hq, kl = (mean_se(v[f"val/{k}"]) for k in MODE_KEYS)
                hq = (hq[0] * 100, None if hq[1] is None else hq[1] * 100)
                lines.append(f"| {loss} | {fmt(*modes)} | {fmt(*hq)} | {fmt(*kl, 2)} | {len(v['val/modes'])} |")
        lines.append("")
        if rec.get("picture"):
            lines += [f"Non-saturating loss, seed 0, last epoch: ![{data} modes]({rec['picture']})", ""]
    if "mnist" in records:
        r = records["mnist"]
        m = r["metrics"]
        lines += [
            f"MNIST, {r['epochs'] * r['batches_per_epoch']} generator steps, {r['wall_s'] / 60:.1f} min, load "
            f"{r['load']} ({r['date']}): FD {m['val/fd']:.2f}, precision {m['val/precision']:.3f}, recall "
            f"{m['val/recall']:.3f}, classes {m['val/classes']:.0f}; `{r['command']}`",
            "",
            "Its fixed-noise samples after the last epoch: ![MNIST GAN samples, 2,000 steps](gan_mnist_samples.png)",
            "",
        ]
    return lines


def replace_section(text: str, path: Path) -> None:
    """Put ``text`` in place of the ``## GANs`` section of ``path`` (appended when absent); other sections stay."""
    old = path.read_text() if path.is_file() else "# Results\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n"
    if pattern.search(old):
        new = pattern.sub(lambda _: body + "\n", old, count=1).rstrip("\n") + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + body
    path.write_text(new)


# -- speed --------------------------------------------------------------------------------------------
def measure_speed(packs: Sequence[int], steps: int, warmup: int) -> dict[int, tuple[float, float]]:
    """(steps per wall second, steps per CPU second of this process) of ``experiment=pacgan_ring``, pack m.

    On a shared machine the wall rate depends on the load; the CPU-time rate is the cost on one free core
    (with one thread), which is what a run's wall time comes to when it has a core to itself.
    """
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from genlab import cpu_matmul

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []

        def on_train_batch_end(self, *args) -> None:
            self.times.append(time.perf_counter())
            self.cpu.append(time.process_time())

    rates = {}
    for m in packs:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=pacgan_ring", f"model.pack={m}",
                                                f"data.batch_size={100 * m}"])  # fmt: skip
        cpu_matmul.select(cfg.cpu_matmul)  # as python -m genlab does
        torch.manual_seed(0)
        dm = instantiate(cfg.data)
        model = instantiate(cfg.model, data_shape=list(dm.data_shape), loss=instantiate(cfg.loss))
        clock = Clock()
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, max_epochs=1, limit_train_batches=warmup + steps,
                            limit_val_batches=0, callbacks=[clock])  # fmt: skip
        trainer.fit(model, datamodule=dm)
        first, last = warmup - 1, warmup + steps - 1
        rates[m] = (steps / (clock.times[last] - clock.times[first]), steps / (clock.cpu[last] - clock.cpu[first]))
        print(f"pack {m}: {rates[m][0]:.2f} steps/s wall, {rates[m][1]:.2f} steps per CPU second", flush=True)
    return rates


# -- command line -------------------------------------------------------------------------------------
def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """'0,1,2' or '0-4' (inclusive) -> seeds; None keeps the budget's."""
    if not text:
        return None
    if re.fullmatch(r"\d+-\d+", text):
        lo, hi = map(int, text.split("-"))
        return tuple(range(lo, hi + 1))
    return tuple(int(s) for s in text.split(","))


def add_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The options of the ``gan2d`` / ``gan_mnist`` commands (shared with reproduce.py's subcommands)."""
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--seeds", default=None, help="e.g. 0-4 or 0,2; default: the budget's")
    if what == "gan2d":
        parser.add_argument("--only", default="pacgan,losses", help="tables: pacgan,losses")
        parser.add_argument(
            "--data",
            default="ring,grid",
            help="ring,grid (PacGAN's protocol); ring8,grid25 (VEEGAN-style toys, losses table only)",
        )
        parser.add_argument(
            "--losses", default=",".join(LOSSES),
            help=f"rows of the losses table, e.g. minimax,nonsaturating; also {','.join(LOSS_ROW_NAMES)} "
                 "(WGAN-GP with 5 critic steps per generator step)",
        )
        parser.add_argument("--epochs", type=int, default=None, help="pack-1 epochs (default: the budget's)")
        parser.add_argument("--packs", default=",".join(map(str, PACKS)),
                            help="rows of the PacGAN table by pack, e.g. 1,2 (GAN, PacGAN2)")  # fmt: skip
        parser.add_argument("--toy-epochs", type=int, default=None,
                            help="epochs of the VEEGAN-style toys' 20,000 samples (default: the budget's)")  # fmt: skip
    else:
        parser.add_argument("--data-dir", default=os.environ.get("GENLAB_DATA_DIR", str(REPO.parent / "shared/data")))
        parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                            help="a Hydra override of the preset, e.g. model.ema_decay=0.999 (repeatable); "
                                 "the runs form a row of their own")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per run (1 on a shared CPU)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each with --threads threads)")
    parser.add_argument("--trainer", default=None, help="a conf/trainer option for every run, e.g. gpu")
    parser.add_argument("--rerun", action="store_true", help="run again even where a record exists")
    parser.add_argument("--fresh", action="store_true",
                        help="start longer budgets from scratch instead of continuing a recorded shorter run")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the commands and what is recorded; run nothing")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gan_bench", help="run folders go here")
    parser.add_argument("--write-to", type=Path, default=EXPERIMENTS, help="RESULTS.md, gan_results.json, PNGs")


def load_records(write_to: Path) -> dict:
    path = write_to / "gan_results.json"
    records = json.loads(path.read_text()) if path.is_file() else {}
    records.setdefault("runs", {})
    return records


def update_records(write_to: Path, change: Callable[[dict], None]) -> dict:
    """Apply ``change`` to the records on disk and write them back, under a lock: two tables running at once (or
    the speed command beside a table) each add their own entries instead of overwriting the other's."""
    write_to.mkdir(parents=True, exist_ok=True)
    path = write_to / "gan_results.json"
    with (write_to / "gan_results.json.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load_records(write_to)
        change(records)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    return records


def write_outputs(records: dict, rows: Sequence[Row], write_to: Path) -> None:
    """The curve PNGs of ``rows`` and the ``## GANs`` section of RESULTS.md in ``write_to``."""
    pictures: dict[str, str] = {}
    recorded = [r for r in rows if row_runs(r, records)]
    for table in ("pacgan", "losses"):
        for d in ALL_TOYS:
            chosen = [r for r in recorded if r.table == table and r.data == d]
            if chosen:
                name = f"gan2d_{table}_{d}.png"
                curve_figure(chosen, records, [("modes", "modes covered", 1.0), ("hq", "high quality %", 100.0),
                                               ("mode_kl", "reverse KL (nats)", 1.0)],
                             f"{table} table, {TOY_NAMES[d]}: mean ± SE over seeds at every validation",
                             write_to / name)  # fmt: skip
                pictures[f"{table}_{d}"] = name
    for d, rec in sorted(records.get("budget_curves", {}).items()):
        name = f"gan2d_budget_curve_{d}.png"
        budget_curve_figure(rec, f"{TOY_NAMES[d]}, {rec['what']}", write_to / name)
        pictures[f"budget_{d}"] = name
    mnist = [r for r in recorded if r.table == "mnist"]
    if mnist:
        curve_figure(mnist, records, [("fd", "FD (classifier features)", 1.0), ("precision", "precision", 1.0),
                                      ("recall", "recall", 1.0), ("classes", "classes", 1.0)],
                     "MNIST GAN", write_to / "gan_mnist_curves.png")  # fmt: skip
        pictures["mnist"] = "gan_mnist_curves.png"
        # the samples of the row with the best mean FD
        best = min(mnist, key=lambda r: aggregate(row_runs(r, records), ("fd",))["fd"][0])
        first = row_runs(best, records)[0]
        if first.get("picture") and Path(first["picture"]).is_file():
            shutil.copyfile(first["picture"], write_to / "gan_mnist_final_samples.png")
            pictures["mnist_grid"] = "gan_mnist_final_samples.png"
            pictures["mnist_grid_row"] = best.name
    replace_section(section(records, rows, pictures), write_to / "RESULTS.md")


def dry_run(rows: Sequence[Row], records: dict, threads: int, trainer: str | None, speed: dict | None) -> None:
    """Print each run's command, whether it is recorded, and the generator steps and time it will take."""
    seen: set[str] = set()
    todo_steps, core_s = 0, 0.0
    rates = (speed or {}).get("steps_per_cpu_s", {})
    for row in rows:
        for seed in row.seeds:
            key = run_key(row.overrides, seed)
            state = "recorded" if key in records["runs"] else "shared" if key in seen else "to run"
            if state == "to run":
                start = shorter_run(row, seed, records)
                steps = steps_of(row) - (start["steps"] if start else 0)
                state += f", continuing its {start['steps']:,}-step run" if start else ""
                todo_steps += steps
                pack = dict(o.split("=", 1) for o in row.overrides).get("model.pack")
                core_s += steps / rates[pack] if pack in rates else math.nan
            seen.add(key)
            print(f"[{row.key} seed {seed}: {state}] {command_line(row, seed, threads, trainer)}")
    runs = sum(len(r.seeds) for r in rows)
    print(f"{runs} (row, seed) pairs, {len(seen)} distinct runs; {todo_steps:,} generator steps still to run")
    if todo_steps and not math.isnan(core_s):
        print(f"~{core_s / 3600:.1f} core-hours of training at the CPU-second rates of `gan_bench.py speed` "
              f"(one thread per run; {speed['date']})")  # fmt: skip


def steps_of(row: Row) -> int:
    """Generator steps of one run: epochs x batches per epoch (0 when the overrides do not say)."""
    return steps_and_samples(row)[0]


def steps_and_samples(row: Row) -> tuple[int, int]:
    """(generator steps, training samples drawn) of one run from its overrides; (0, 0) when they do not say.

    Steps are epochs x batches per epoch (a partial last batch counts); samples are epochs x the samples of
    those batches (the generator makes as many per step).
    """
    values = dict(o.split("=", 1) for o in row.overrides if "=" in o)
    if "trainer.max_epochs" not in values or "data.batch_size" not in values:
        return 0, 0
    n_train = int(values.get("data.n_train", MNIST_FIT if row.data == "mnist" else TOY_TRAIN.get(row.data, 100000)))
    batch = int(values["data.batch_size"])
    batches = math.ceil(n_train / batch)
    limit = values.get("trainer.limit_train_batches", "1.0")
    batches = min(batches, int(limit)) if limit.isdigit() else math.ceil(batches * float(limit))
    samples = min(n_train, batches * batch)
    epochs = int(values["trainer.max_epochs"])
    return epochs * batches, epochs * samples


def budget_text(row: Row) -> str:
    """A toy row's budget as a fraction of PacGAN's protocol (400,000 generator steps of batch 100, 40M samples)."""
    steps, samples = steps_and_samples(row)
    if row.table == "mnist" or not steps:
        return f"{steps:,} G steps" if steps else "?"
    text = f"{steps:,} G steps = {100 * steps / PAPER_STEPS:.3g} % of the protocol's 400,000"
    if row.data in VEEGAN_TOYS:
        text += f" (batch {TOY_BATCH}: {samples / 1e6:.3g}M samples = {100 * samples / PAPER_SAMPLES:.3g} % of its 40M)"
    return text


def main_gan2d(args: argparse.Namespace) -> None:
    budget = BUDGETS[args.budget]
    tables = [t for t in args.only.split(",") if t]
    data = [d for d in args.data.split(",") if d]
    if set(tables) - {"pacgan", "losses"} or set(data) - set(ALL_TOYS):
        raise SystemExit(f"--only takes pacgan,losses and --data ring,grid,ring8,grid25; got {args.only!r}, "
                         f"{args.data!r}")  # fmt: skip
    losses = [LOSS_ROW_NAMES.get(loss, loss) for loss in args.losses.split(",") if loss]
    if not losses or set(losses) - set(LOSS_ROWS):
        raise SystemExit(f"--losses takes a subset of {','.join([*LOSSES, *LOSS_ROW_NAMES])}; got {args.losses!r}")
    packs = [int(m) for m in args.packs.split(",") if m.strip().isdigit()]
    if not packs or set(packs) - set(PACKS) or len(packs) != len([m for m in args.packs.split(",") if m.strip()]):
        raise SystemExit(f"--packs takes a subset of {','.join(map(str, PACKS))}; got {args.packs!r}")
    rows = gan2d_rows(budget, args.epochs or budget.epochs, tables, data, parse_seeds(args.seeds), args.toy_epochs,
                      losses, packs)  # fmt: skip
    run_and_write(rows, args)


def main_gan_mnist(args: argparse.Namespace) -> None:
    classifier = args.out.resolve() / "feature_classifier.pt"
    classifier = classifier.relative_to(REPO) if classifier.is_relative_to(REPO) else classifier  # runs start in REPO
    bad = [o for o in args.override if "=" not in o or o.startswith(("seed=", "hydra."))]
    if bad:
        raise SystemExit(f"--override takes KEY=VALUE Hydra overrides of the model or data (not seed or hydra.*); "
                         f"got {bad}")  # fmt: skip
    rows = mnist_rows(BUDGETS[args.budget], args.data_dir, parse_seeds(args.seeds), classifier, args.override)

    def score_real_images(records: dict) -> None:
        # the first run trains the shared classifier; the reference is scored in its features once it exists
        if (args.out / "feature_classifier.pt").is_file():
            reference = real_reference(args.out / "feature_classifier.pt", args.data_dir)
            records.update(update_records(args.write_to, lambda disk: disk.update(mnist_real_reference=reference)))

    run_and_write(rows, args, score_real_images)


def run_and_write(rows: Sequence[Row], args: argparse.Namespace,
                  after_runs: Callable[[dict], None] | None = None) -> None:  # fmt: skip
    """Run the rows' missing seeds, then ``after_runs(records)`` if given, then write the PNGs and RESULTS.md."""
    if args.budget == "smoke" and args.write_to == EXPERIMENTS:  # smoke rows never enter experiments/RESULTS.md
        args.write_to = REPO / "outputs" / "gan_bench_smoke"
    records = load_records(args.write_to)
    if args.dry_run:
        dry_run(rows, records, args.threads, args.trainer, records.get("speed"))
        return

    def save() -> None:
        def merge(disk: dict) -> None:
            for part in ("runs", "rows"):
                disk.setdefault(part, {}).update(records.get(part, {}))

        records.update(update_records(args.write_to, merge))  # and this table sees runs recorded meanwhile

    run_rows(rows, records, save, args.out, args.threads, args.jobs, args.trainer, args.rerun, args.fresh)
    if after_runs is not None:
        after_runs(records)
    write_outputs(records, recorded_rows(records), args.write_to)
    print(f"wrote {args.write_to / 'RESULTS.md'}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    add_arguments(sub.add_parser("gan2d", help="PacGAN table and the five losses on ring and grid"), "gan2d")
    add_arguments(sub.add_parser("gan_mnist", help="the MNIST GAN against steps"), "gan_mnist")
    speed = sub.add_parser("speed", help="steps/s of experiment=pacgan_ring per pack, this process's threads")
    speed.add_argument("--packs", default="1,2,3,4")
    speed.add_argument("--steps", type=int, default=300)
    speed.add_argument("--warmup", type=int, default=30)
    speed.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    speed.add_argument("--write-to", type=Path, default=EXPERIMENTS)
    table = sub.add_parser("table", help="rebuild the RESULTS.md section from the records")
    table.add_argument("--write-to", type=Path, default=EXPERIMENTS)
    reading = sub.add_parser("reading", help="record what a table's numbers and curves say, then rebuild the section")
    reading.add_argument("key", help="<table>_<data> (e.g. pacgan_grid, losses_ring8) or mnist")
    reading.add_argument("text", help="the reading; an empty string removes it")
    reading.add_argument("--write-to", type=Path, default=EXPERIMENTS)
    args = parser.parse_args(argv)
    dispatch(args)


def dispatch(args: argparse.Namespace) -> None:
    """Run the parsed command (also called by experiments/reproduce.py's gan2d / gan_mnist subcommands)."""
    if args.what == "gan2d":
        main_gan2d(args)
    elif args.what == "gan_mnist":
        main_gan_mnist(args)
    elif args.what == "speed":
        import torch

        torch.set_num_threads(args.threads)
        load_before = os.getloadavg()[0]
        rates = measure_speed([int(p) for p in args.packs.split(",")], args.steps, args.warmup)
        speed = {
            "steps_per_s": {str(m): round(r[0], 2) for m, r in rates.items()},
            "steps_per_cpu_s": {str(m): round(r[1], 2) for m, r in rates.items()},
            "steps": args.steps, "warmup": args.warmup, "threads": torch.get_num_threads(),
            "machine": cpu_name() + f", {torch.get_num_threads()} thread", "load_before": f"{load_before:.1f}",
            "load_after": f"{os.getloadavg()[0]:.1f}", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }  # fmt: skip
        update_records(args.write_to, lambda records: records.update(speed=speed))
        print(speed_line(speed))
    else:
        if args.what == "reading":
            keys = {"mnist", *(f"{t}_{d}" for t in ("pacgan", "losses") for d in ALL_TOYS)}
            if args.key not in keys:
                raise SystemExit(f"reading: key {args.key!r} is not one of {', '.join(sorted(keys))}")

            def set_reading(records: dict) -> None:
                readings = records.setdefault("readings", {})
                if args.text:
                    readings[args.key] = args.text
                else:
                    readings.pop(args.key, None)

            update_records(args.write_to, set_reading)
        records = load_records(args.write_to)
        write_outputs(records, recorded_rows(records), args.write_to)
        print(f"wrote {args.write_to / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
