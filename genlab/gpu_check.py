"""``make gpu-check``: genlab's acceptance test on a GPU, one command, at most 10 minutes on one H100.

    make gpu-check                        # installs a CUDA build of torch into .venv if needed, then runs this
    python -m genlab.gpu_check --device cpu --families ae --stages devices,resume   # a dry run on the CPU

Every run is ``python -m genlab`` on the digits data (bundled with scikit-learn: nothing is downloaded), seed 0,
``--epochs`` epochs, the test stage on the final weights; ``--workers`` runs at a time, each in its own process.

1. devices: every family on the CPU in float32 (``cpu_matmul`` left at ``auto``, as users run it) and on the GPU
   in ``32``, ``bf16-mixed`` and ``16-mixed``; VaDE with ``eval_on=all``. Rows: GPU float32 against CPU float32,
   and each mixed precision against GPU float32, on each family's METRICS; and which library ``cpu_matmul=auto``
   chose (GPU runs must leave CPU matmuls alone).
2. resume: the VAE with ``trainer.deterministic=true`` and pictures every epoch, stopped by SIGINT in the middle
   of an epoch and resumed with ``ckpt_path=last``, ends with the weights and test numbers of the same run never
   interrupted, bit for bit; a run without pictures ends there too (pictures never move the training noise).
3. determinism: ``gan_conv`` (conv layers, image metrics) twice with ``trainer.deterministic=true``: equal weights.
4. ddp (whenever two GPUs are visible, or ``--stages ...,ddp`` on the CPU with 2 gloo processes): every family on
   2 devices with half the batch against the 1-device float32 run (the same effective batch).
5. calibrate (only on request, CPU only): what the CPU shows against the tolerances: float32 with oneDNN against
   torch's BLAS (another summation order), seeds 1 and 2 against 0 (the noise-stream spread), bf16-mixed against
   32 (``python -m genlab.gpu_check --device cpu --stages calibrate``).

Tolerances (TOLERANCES) are relative to the reference value, plus an absolute floor; why each is what it is is
written beside it. Every comparison is one row of the printed table; the exit status is 0 only when every row
passes. The table, every run's command, exit status and metrics go to ``--out`` (JSON).

``--device cpu`` runs the same stages with ``trainer=cpu`` in place of ``trainer=gpu``: the dry run the tests use,
which exercises every run and comparison on a machine without a GPU (there "GPU" and CPU float32 agree exactly).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("pca", "ae", "ae_linear", "ae_conv", "vae", "iwae", "iwae2", "vade", "gan", "gan_conv")
STAGES = ("devices", "resume", "determinism", "ddp", "calibrate")
STOCHASTIC = ("vae", "iwae", "iwae2", "vade")  # noise drawn on the device: another stream on a GPU
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
NO_CUDA_EXIT = 2
FAMILY_ARGS = {  # small evaluations: 200 importance samples, 500 GAN samples scored by a 200-step classifier
    **{f: ["model.eval_k=200"] for f in ("vae", "iwae", "iwae2")},
    "vade": ["model.eval_k=200", "model.pretrain_epochs=3", "model.gmm_n_init=1", "model.eval_on=all"],
    **{f: ["model.eval_samples=500", "model.feature_classifier_steps=200"] for f in ("gan", "gan_conv")},
}
METRICS = {
    "pca": ("test/loss", "test/explained_variance"),
    **{f: ("test/loss",) for f in ("ae", "ae_linear", "ae_conv")},
    **{f: ("test/loss", "test/nll") for f in ("vae", "iwae", "iwae2")},
    "vade": ("test/loss", "test/nll", "test/all_acc"),
    **{f: ("test/fd", "test/d_loss") for f in ("gan", "gan_conv")},
}
DETERMINISTIC = ["trainer.deterministic=true"]
PICTURES_EVERY_EPOCH = [f"callbacks.{name}.every_n_epochs=1" for name in ("reconstructions", "latent_scatter",
                                                                          "samples", "interpolations")]


@dataclass(frozen=True)
class Tol:
    """|value - reference| <= abs + rel * |reference|."""

    rel: float
    abs: float = 0.0

    def __str__(self) -> str:
        parts = ([f"{self.rel:g} rel"] if self.rel else []) + ([f"{self.abs:g} abs"] if self.abs else [])
        return " + ".join(parts) or "exact"


EXACT = Tol(0.0)
# About 3x the largest difference the CPU shows with these settings (``--stages calibrate``; the numbers are in
# experiments/BENCHMARKS.md, "gpu-check tolerances"). The GPU itself could not be measured when they were set: its
# first run's table tells whether they hold there.
TOLERANCES: dict[tuple[str, str], Tol] = {
    # GPU float32 vs CPU float32. The same initial weights, data order and GAN noise (drawn on the CPU); other
    # summation orders (oneDNN against BLAS on the CPU moved no AE or VAE metric in its 6th digit, the GANs' by 1%),
    # TF32 convolutions on Ampere+ (10-bit mantissas: bounded by bfloat16's 8-bit, which moved gan_conv's FD by 16%),
    # and for the VAE family another noise stream, bounded by the spread over seeds (VAE/IWAE 1.1%, VaDE 2.8%).
    **{("gpu", f): Tol(1e-3, 1e-3) for f in ("pca", "ae", "ae_linear")},
    ("gpu", "ae_conv"): Tol(2e-2, 1e-3),
    **{("gpu", f): Tol(3e-2, 0.05) for f in ("vae", "iwae", "iwae2")},
    ("gpu", "vade"): Tol(8e-2, 0.1),
    ("gpu", "gan"): Tol(0.2, 0.05),
    ("gpu", "gan_conv"): Tol(0.5, 0.05),
    # Mixed precision vs GPU float32, the same noise streams. bfloat16 on the CPU moved the AE's loss by 1.9%, the VAE
    # family's by 0.2%, VaDE's NLL by 0.4%, the GANs' FD by 4.6% (MLP) and 16% (conv). float16 keeps 11 bits but its
    # gradient scaler skips the first overflowing steps; it gets the same bounds (CPU autocast has no float16 run).
    **{("mixed", f): Tol(6e-2, 1e-3) for f in ("pca", "ae", "ae_linear", "ae_conv")},
    **{("mixed", f): Tol(1e-2, 0.05) for f in ("vae", "iwae", "iwae2")},
    ("mixed", "vade"): Tol(5e-2, 0.1),
    ("mixed", "gan"): Tol(0.2, 0.05),
    ("mixed", "gan_conv"): Tol(0.5, 0.05),
}
TOLERANCES |= {("ddp", f): TOLERANCES["gpu", f] for f in FAMILIES}  # 2 x b/2 vs 1 x b: rounding, other noise per rank


@dataclass
class Run:
    """One ``python -m genlab`` job and what came of it."""

    name: str
    args: list[str]
    expect_exit: int = 0
    folder: str = ""  # the run folder under --work (default: the name); a resumed run shares its interrupted one's
    exit: int | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """One comparison: ``value`` of ``metric`` against ``reference`` within ``tol`` (``ok`` False when either is
    missing)."""

    check: str
    family: str
    metric: str
    value: float | str | None
    reference: float | str | None
    tol: str
    ok: bool
    note: str = ""


def compare(check: str, family: str, metric: str, value: Any, reference: Any, tol: Tol, note: str = "") -> Row:
    """A row for two numbers (None: the run gave none); the difference must be finite and within ``tol``."""
    ok = (isinstance(value, (int, float)) and isinstance(reference, (int, float)) and math.isfinite(value)
          and math.isfinite(reference) and abs(value - reference) <= tol.abs + tol.rel * abs(reference))
    return Row(check, family, metric, value, reference, str(tol), ok, note)


def runs_for(stages: list[str], families: list[str], device: str, epochs: int, ddp_devices: int) -> list[Run]:
    """Every run the stages need (the resume continuation excepted: it starts after its interrupted run)."""
    gpu = ["trainer=gpu"] if device == "cuda" else ["trainer=cpu"]
    common = ["data=digits", "seed=0", "logger=csv", "trainer.enable_progress_bar=false",
              f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={epochs}",
              "callbacks.model_checkpoint.monitor=null"]  # test the final weights: the same step in every run
    runs = []
    for fam in families if "devices" in stages or "ddp" in stages else []:
        base = [f"model={fam}", *common, *FAMILY_ARGS.get(fam, []), "callbacks=lean"]
        runs.append(Run(f"cpu_{fam}_32", [*base, "trainer=cpu"]))
        for precision in PRECISIONS if "devices" in stages else ("32",):
            runs.append(Run(f"gpu_{fam}_{precision}", [*base, *gpu, f"trainer.precision={precision}"]))
        if "ddp" in stages:
            ddp = ["trainer=ddp", f"trainer.devices={ddp_devices}", "data.batch_size=64"]
            runs.append(Run(f"ddp_{fam}", [*base, *ddp, *([] if device == "cuda" else ["trainer.accelerator=cpu"])]))
    if "resume" in stages:
        vae = ["model=vae", *common, *FAMILY_ARGS["vae"], *gpu, *DETERMINISTIC]
        # SIGINT once step 11 is done: the interrupt callback saves at the end of the next loader item (step 18 of
        # digits' 10-step epochs in blocks of 4), in the middle of epoch 1
        runs += [Run("resume_whole", [*vae, *PICTURES_EVERY_EPOCH]),
                 Run("resume_cut", [*vae, *PICTURES_EVERY_EPOCH, "+callbacks.sigint._target_=genlab.gpu_check.SigintAt",
                                    "+callbacks.sigint.step=11"], expect_exit=128 + signal.SIGINT),
                 Run("no_pictures", [*vae, "callbacks=lean"])]
    for fam in families if "calibrate" in stages else []:
        base = [f"model={fam}", *common, *FAMILY_ARGS.get(fam, []), "callbacks=lean", "trainer=cpu"]
        runs += [Run(f"cal_{fam}_blas", [*base, "cpu_matmul=blas"]), Run(f"cal_{fam}_onednn", [*base, "cpu_matmul=onednn"]),
                 Run(f"cal_{fam}_bf16-mixed", [*base, "cpu_matmul=blas", "trainer.precision=bf16-mixed"])]
        runs += [Run(f"cal_{fam}_seed{s}", [*base, "cpu_matmul=blas", f"seed={s}"]) for s in (1, 2) if fam in STOCHASTIC]
    if "determinism" in stages:
        gan = ["model=gan_conv", *common, *FAMILY_ARGS["gan_conv"], *gpu, *DETERMINISTIC, "callbacks=lean"]
        runs += [Run("deterministic_a", gan), Run("deterministic_b", gan)]
    return runs


class SigintAt(L.Callback):
    """Sends this process SIGINT at the end of the first loader item after optimizer step ``step``: Ctrl+C in the
    middle of an epoch (the interrupt callback then saves last.ckpt and stops the run with exit status 130)."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def execute(run: Run, work: Path, deadline: float) -> Run:
    """Run ``run`` into ``work/<name>`` (its output in ``<name>.log``); read its metrics.json if it wrote one."""
    folder = work / (run.folder or run.name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "genlab", *run.args, f"hydra.run.dir={folder}"]
    start = time.perf_counter()
    with (work / f"{run.name}.log").open("w") as log:
        try:
            run.exit = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=max(1.0, deadline - time.monotonic())).returncode
        except subprocess.TimeoutExpired:
            run.exit = 124
    run.seconds += time.perf_counter() - start
    metrics = folder / "metrics.json"
    run.metrics = json.loads(metrics.read_text()) if metrics.is_file() else {}
    return run


def last_checkpoint(work: Path, folder: str) -> dict[str, Any]:
    """``work/<folder>/checkpoints/last.ckpt`` (empty when there is none)."""
    path = work / folder / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}


def weight_row(check: str, family: str, work: Path, name: str, reference: str) -> Row:
    """Largest |difference| between two runs' final weights, which must be 0 (None when a checkpoint is missing)."""
    a, b = (last_checkpoint(work, f).get("state_dict", {}) for f in (name, reference))
    diff = None
    if a and a.keys() == b.keys():
        diff = max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()),
                   default=0.0)
    return compare(check, family, "max |weight diff|", diff, 0.0, EXACT, f"{name} vs {reference}")


def rows_for(runs: dict[str, Run], stages: list[str], families: list[str], work: Path, device: str) -> list[Row]:
    """The table: every comparison the finished runs allow (a missing run or metric is a failed row)."""
    rows: list[Row] = []

    def metric(name: str, key: str) -> Any:
        return runs[name].metrics.get(key) if name in runs else None

    for fam in families if "devices" in stages else []:
        for key in METRICS[fam]:
            rows.append(compare("GPU 32 vs CPU 32", fam, key, metric(f"gpu_{fam}_32", key),
                                metric(f"cpu_{fam}_32", key), TOLERANCES["gpu", fam]))
            for precision in PRECISIONS[1:]:
                rows.append(compare(f"{precision} vs 32 (GPU)", fam, key, metric(f"gpu_{fam}_{precision}", key),
                                    metric(f"gpu_{fam}_32", key), TOLERANCES["mixed", fam]))
    if "devices" in stages and families:
        def libraries(prefix: str) -> list[str]:  # of the runs that finished (the others have rows of their own)
            return sorted({str(r.metrics.get("cpu_matmul")) for n, r in runs.items() if n.startswith(prefix) and r.metrics})

        cpu, gpu = libraries("cpu_"), libraries("gpu_")
        gpu_ok = all(v.startswith("unused") for v in gpu) if device == "cuda" else gpu == cpu
        rows.append(Row("cpu_matmul=auto", "all", "library", ", ".join(gpu), ", ".join(cpu), "GPU runs: unused",
                        len(cpu) == 1 and cpu[0] in ("blas", "onednn") and bool(gpu) and gpu_ok, "GPU runs vs CPU runs"))
    for fam in families if "ddp" in stages else []:
        for key in METRICS[fam]:
            rows.append(compare("DDP 2 x b/2 vs 1 x b", fam, key, metric(f"ddp_{fam}", key),
                                metric(f"gpu_{fam}_32", key), TOLERANCES["ddp", fam]))
    if "resume" in stages:
        rows.append(weight_row("SIGINT mid-epoch, resumed", "vae", work, "resume_cut", "resume_whole"))
        for key in METRICS["vae"]:
            rows.append(compare("SIGINT mid-epoch, resumed", "vae", key, metric("resume_continued", key),
                                metric("resume_whole", key), EXACT))
        rows.append(weight_row("pictures keep the noise", "vae", work, "no_pictures", "resume_whole"))
    for fam in families if "calibrate" in stages else []:  # what the CPU shows against the tolerances above
        for key in METRICS[fam]:
            ref = metric(f"cal_{fam}_blas", key)
            rows.append(compare("CPU: onednn vs blas", fam, key, metric(f"cal_{fam}_onednn", key), ref,
                                TOLERANCES["gpu", fam]))
            rows.append(compare("CPU: bf16-mixed vs 32", fam, key, metric(f"cal_{fam}_bf16-mixed", key), ref,
                                TOLERANCES["mixed", fam]))
            rows += [compare(f"CPU: seed {s} vs 0", fam, key, metric(f"cal_{fam}_seed{s}", key), ref,
                             TOLERANCES["gpu", fam]) for s in (1, 2) if fam in STOCHASTIC]
    if "determinism" in stages:
        rows.append(weight_row("deterministic=true twice", "gan_conv", work, "deterministic_b", "deterministic_a"))
        for key in METRICS["gan_conv"]:
            rows.append(compare("deterministic=true twice", "gan_conv", key, metric("deterministic_b", key),
                                metric("deterministic_a", key), EXACT))
    return rows


def table(rows: list[Row]) -> str:
    """The rows as an aligned text table, misses marked."""
    def show(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else "missing" if v is None else str(v)

    header = ("check", "family", "metric", "value", "reference", "tolerance", "result")
    cells = [header] + [(r.check, r.family, r.metric, show(r.value), show(r.reference), r.tol,
                         "ok" if r.ok else "MISS") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the dry run (trainer=cpu)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--stages", default=None, help=f"of {','.join(STAGES)}; default: all (ddp with >= 2 GPUs)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run (10 optimizer steps each)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="runs at a time")
    parser.add_argument("--budget", type=float, default=570.0, help="seconds for everything")
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "gpu_check.json")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "gpu_check")
    args = parser.parse_args(argv)
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); nothing was run. On a machine with an NVIDIA GPU: rm -rf .venv && "
              f"make gpu-check (it installs a CUDA build); without one: --device cpu for the dry run.", file=sys.stderr)
        return NO_CUDA_EXIT
    families = [f for f in args.families.split(",") if f]
    stages = args.stages.split(",") if args.stages else [*STAGES[:3], *["ddp"] * (gpus >= 2)]
    unknown = sorted(set(families) - set(FAMILIES)) + sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown families or stages {unknown}: expected families of {FAMILIES}, stages of {STAGES}")
    deadline = time.monotonic() + args.budget
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    runs = {r.name: r for r in runs_for(stages, families, args.device, args.epochs, 2)}
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        list(pool.map(lambda r: execute(r, args.work, deadline), runs.values()))
    rows = []
    if "resume_cut" in runs:  # what the printed resume command runs: the same overrides, ckpt_path=last
        cut = last_checkpoint(args.work, "resume_cut")
        sums = cut.get("genlab", {}).get("train_log", {}).get("sums")
        rows.append(Row("SIGINT mid-epoch, resumed", "vae", "stopped at step", str(cut.get("global_step")),
                        "mid-epoch", "", bool(sums), "the checkpoint holds the epoch's partial sums"))
        args_ = [a for a in runs["resume_cut"].args if "callbacks.sigint" not in a] + ["ckpt_path=last"]
        runs["resume_continued"] = execute(Run("resume_continued", args_, folder="resume_cut"), args.work, deadline)
    rows += rows_for(runs, stages, families, args.work, args.device)
    for run in runs.values():
        if run.exit != run.expect_exit:
            rows.append(Row("run", run.name, "exit status", str(run.exit), str(run.expect_exit), "", False,
                            str(args.work / f"{run.name}.log")))
    misses = sum(not r.ok for r in rows)
    print(table(rows))
    where = torch.cuda.get_device_name(0) if gpus else "CPU (dry run)"
    print(f"gpu-check on {where}: {len(rows) - misses} of {len(rows)} rows within tolerance; runs and logs in "
          f"{args.work}; table in {args.out}", flush=True)
    report = {"device": where, "torch": torch.__version__, "cuda": torch.version.cuda, "stages": stages,
              "families": families, "epochs": args.epochs, "rows": [asdict(r) for r in rows],
              "runs": {n: asdict(r) for n, r in runs.items()}, "passed": misses == 0}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
