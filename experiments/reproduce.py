"""Run the VAE-family paper reproductions and write the ``## VAE family`` section of experiments/RESULTS.md.

    python experiments/reproduce.py --budget small                 # what fits a 2-core CPU, ~20 min in all
    python experiments/reproduce.py --budget small --only vade     # one row (each run is recorded on its own)
    python experiments/reproduce.py --budget paper --trainer gpu   # the papers' full schedules

Every run is ``python -m genlab experiment=<preset> <overrides>``; the command, the budget (epochs, wall
time, machine) and the measured metrics are kept in experiments/vae_results.json, and the RESULTS.md
section is rebuilt from all recorded runs, so rows measured by separate invocations stay.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "RESULTS.md"
RECORDS = REPO / "experiments" / "vae_results.json"
HEADING = "## VAE family"


@dataclass(frozen=True)
class Reproduction:
    """One row: a preset plus overrides, the paper's number, and the extra overrides of each budget."""

    name: str
    title: str
    preset: str
    overrides: tuple[str, ...]
    metric: str
    paper: str
    budgets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    budget_notes: dict[str, str] = field(default_factory=dict)


# The small budget is what fits a shared 2-core CPU in under ~10 min a run: the same setup as the
# paper (architecture, batch, optimizer, lr schedule), cut to 3 epochs; NLL on the first 1,000 test images.
IWAE_SMALL = ("trainer.max_epochs=3", "trainer.limit_test_batches=50")
IWAE_NOTE = {
    "small": "3 of the paper's 3,280 epochs (8,100 updates of batch 20); NLL at k=5000 on the first 1,000 test images",
    "paper": "the paper's 3,280 epochs (3^i-epoch passes, lr 1e-3 * 10^(-i/7)); NLL at k=5000 on all 10,000 test images",
}
# The papers' schedules run for hundreds of epochs: draw the pictures every 20th epoch, not every epoch.
PICTURES = ("reconstructions", "latent_scatter", "samples", "interpolations", "cluster_samples")
PAPER_PICTURES = tuple(f"callbacks.{name}.every_n_epochs=20" for name in PICTURES)

REPRODUCTIONS = [
    Reproduction(
        "vae",
        "VAE (k=1), 784-200-200-50 tanh",
        "iwae_mnist",
        ("model.objective=elbo", "model.k=1"),
        "test/nll",
        "86.76",
        {"small": IWAE_SMALL, "paper": PAPER_PICTURES},
        IWAE_NOTE,
    ),
    Reproduction(
        "iwae5",
        "IWAE k=5, 784-200-200-50 tanh",
        "iwae_mnist",
        ("model.k=5",),
        "test/nll",
        "85.54",
        {"small": IWAE_SMALL, "paper": PAPER_PICTURES},
        IWAE_NOTE,
    ),
    Reproduction(
        "iwae50",
        "IWAE k=50, 784-200-200-50 tanh",
        "iwae_mnist",
        ("model.k=50",),
        "test/nll",
        "84.78",
        {"small": IWAE_SMALL, "paper": PAPER_PICTURES},
        IWAE_NOTE,
    ),
    Reproduction(
        "vade",
        "VaDE, 784-500-500-2000-10, K=10",
        "vade_mnist",
        (),
        "test/acc",
        "94.46%",
        {
            "small": (
                "model.pretrain_epochs=4",
                "trainer.max_epochs=12",
                "model.eval_k=100",
            ),
            "paper": PAPER_PICTURES,
        },
        {
            "small": "4 autoencoder + 8 VaDE epochs of batch 100 (paper: 300 VaDE epochs); "
            "test NLL at k=100; all 10,000 test images",
            "paper": "10 autoencoder + 300 VaDE epochs (lr 2e-3, x0.9 every 10 epochs); test NLL at k=5000",
        },
    ),
]


NOTES = [
    "Notes:",
    "- Same architecture, optimizer, batch size and learning-rate schedule as each paper; only the number of "
    "updates (and, for the small budget, the number of test images in the k=5000 NLL) is cut. `--budget paper` "
    "runs the papers' schedules with the same presets.",
    "- Early in training a VAE on binarized MNIST sits on a plateau near 200 nats (the decoder predicts the mean "
    "image) before the latent code is used; small-budget numbers are far from converged and compare the objectives "
    "at an equal number of updates only.",
    "- Training uses 54,000 of the 60,000 MNIST training images (6,000 are held out for validation and "
    "checkpoint selection); the IWAE paper trained on all 60,000.",
    "- VaDE's paper reports accuracy on all 70,000 MNIST images; `test/acc` here is on the 10,000 test images "
    "(`val/acc` on the 6,000 held-out training images), clusters matched to labels with the Hungarian algorithm.",
    "- Wall times are on a 2-core machine shared with other jobs (the load average is recorded); CPU time is the "
    "run's own.",
]


def machine() -> str:
    """CPU model and core count (and the GPU when one is used), for the budget column."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def command(rep: Reproduction, budget: str, trainer: str | None) -> list[str]:
    """The genlab overrides of one run (without the run folder)."""
    extra = [f"trainer={trainer}"] if trainer else []
    return [
        f"experiment={rep.preset}",
        *extra,
        *rep.overrides,
        *rep.budgets[budget],
        "trainer.enable_progress_bar=false",
    ]


def run(rep: Reproduction, budget: str, trainer: str | None, out_root: Path, threads: int | None = None) -> dict:
    """Run one reproduction in ``out_root/<budget>/<name>`` and return its record."""
    overrides = command(rep, budget, trainer)
    run_dir = out_root / budget / rep.name
    env = dict(os.environ)
    env.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.setdefault("WANDB_MODE", "offline")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    start, cpu_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{rep.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    return {
        "name": rep.name,
        "budget": budget,
        "command": "python -m genlab " + " ".join(shlex.quote(o) for o in overrides if "enable_progress_bar" not in o),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load": round(os.getloadavg()[0], 1),
        "epochs": config["trainer"]["max_epochs"],
        "machine": machine() + (f", {threads} thread{'s' * (threads > 1)} per run" if threads else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir),
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))},
    }


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}%" if percent else f"{value:.2f}"


def section(records: dict[str, dict]) -> str:
    """The ``## VAE family`` section from every recorded run, in the order of REPRODUCTIONS."""
    lines = [
        HEADING,
        "",
        "Written by `experiments/reproduce.py` (rows from `experiments/vae_results.json`). NLL in nats (lower is "
        "better), log p(x) estimated with the importance-weighted bound; MNIST from `../shared/data/mnist` "
        "(54,000 train / 6,000 validation with the default `data.val_size=0.1` / 10,000 test). Budgets below the papers' are stated per row.",
        "",
        "| run | budget | measured | paper | other metrics | command | epochs, wall time, machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for rep in REPRODUCTIONS:
        for budget in ("small", "paper"):
            rec = records.get(f"{rep.name}:{budget}")
            if rec is None:
                continue
            m = rec["metrics"]
            if rep.metric == "test/acc":
                measured = f"acc {fmt(m.get('test/acc'), True)}"
                other = (
                    f"NMI {fmt(m.get('test/nmi'))}, ARI {fmt(m.get('test/ari'))}, val acc {fmt(m.get('val/acc'), True)}, "
                    f"NLL {fmt(m.get('test/nll'))}, ELBO {fmt(m.get('test/elbo'))}"
                )
                paper = f"acc {rep.paper}"
            else:
                measured = f"NLL {fmt(m.get('test/nll'))}"
                other = (
                    f"-ELBO {fmt(-m['test/elbo'] if 'test/elbo' in m else None)}, KL {fmt(m.get('test/kl'))}, "
                    f"active units {m.get('test/active_units', 0):.0f}/50"
                )
                paper = f"NLL {rep.paper}"
            budget_cell = f"{budget}: {rep.budget_notes[budget]}"
            cost = (
                f"{rec['epochs']} epochs, {rec['wall_s'] / 60:.1f} min wall ({rec['cpu_s'] / 60:.1f} CPU-min; "
                f"load average {rec['load']} at the end), {rec['machine']} ({rec['date']})"
            )
            lines.append(
                f"| {rep.title} | {budget_cell} | **{measured}** | {paper} | {other} | `{rec['command']}` | {cost} |"
            )
    return "\n".join(lines + ["", *NOTES]) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## VAE family`` section of ``path``, leaving every other section as it is."""
    old = path.read_text() if path.is_file() else "# Results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HEADING), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=["small", "paper"], default="small")
    parser.add_argument(
        "--only",
        default=",".join(r.name for r in REPRODUCTIONS),
        help="comma-separated runs: " + ", ".join(r.name for r in REPRODUCTIONS),
    )
    parser.add_argument("--trainer", default=None, help="a conf/trainer option, e.g. gpu")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "reproduce", help="run folders go here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per run (OMP_NUM_THREADS); 1 on a shared machine: oversubscribed "
        "OpenMP threads spin and run many times slower",
    )
    parser.add_argument("--write-only", action="store_true", help="rebuild the RESULTS.md section, run nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = set(chosen) - {r.name for r in REPRODUCTIONS}
    if unknown:
        parser.error(f"--only: unknown runs {sorted(unknown)}")
    records = json.loads(RECORDS.read_text()) if RECORDS.is_file() else {}
    for rep in (r for r in REPRODUCTIONS if r.name in chosen and not args.write_only):
        if args.dry_run:
            print("python -m genlab " + " ".join(command(rep, args.budget, args.trainer)))
            continue
        print(f"running {rep.name} ({args.budget}) ...", flush=True)
        record = run(rep, args.budget, args.trainer, args.out, args.threads)
        records[f"{rep.name}:{args.budget}"] = record
        RECORDS.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        print(f"  {rep.metric} = {record['metrics'].get(rep.metric)} in {record['wall_s']:.0f} s", flush=True)
    if not args.dry_run:
        write_section(section(records))
        print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
