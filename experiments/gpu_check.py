"""``make gpu-check``: every model family trains on the GPU under each precision and under DDP, then the bench runs there.

    make gpu-check                                   # = python experiments/gpu_check.py
    python experiments/gpu_check.py --steps 300 --budget 600 --out experiments/gpu_check.json

1. ``python -m genlab -m model=<every family> trainer=gpu trainer.precision=32,bf16-mixed,16-mixed`` on the
   digits data (bundled with scikit-learn, so nothing is downloaded), ``--steps`` optimizer steps each, with the
   test stage on two batches; Hydra's joblib launcher runs the jobs in parallel worker processes and a failed
   job does not stop the others.
2. ``python -m genlab -m model=<every family> trainer=ddp trainer.devices=1`` (one DDP process per job,
   NCCL), in Hydra's basic launcher.
3. ``python -m experiments.bench --device cuda`` (the training cases, the k=5000 NLL on all 10,000 MNIST test images,
   start-up) when MNIST is in ``$GENLAB_DATA_DIR/mnist``, with whatever of the time budget is left.

Every job's outcome (finite final losses in its metrics.json, its wall time) and the bench's numbers go to one
JSON file. The exit status is 0 only when every job passed and the bench ran; on a machine without CUDA it
says so and exits with status 2 before running anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FAMILIES = ("pca", "ae", "ae_linear", "ae_conv", "vae", "iwae", "vade", "gan", "gan_conv")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
NO_CUDA_EXIT = 2


def job_overrides(steps: int) -> list[str]:
    """A few hundred optimizer steps on digits, a validation every 10 epochs, a two-batch test stage, CSV logs.

    ``max_epochs`` bounds PCA, which takes no optimizer steps (every epoch of the others takes at least one).
    """
    return [
        "data=digits", "logger=csv", "trainer.enable_progress_bar=false", f"trainer.max_steps={steps}",
        f"trainer.max_epochs={max(1, steps // 10)}", "trainer.check_val_every_n_epoch=10",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
    ]


def job_outcomes(sweep: Path) -> list[dict[str, object]]:
    """One entry per job folder of a Hydra sweep: its overrides, and whether its final losses are finite numbers."""
    outcomes = []
    for job in sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = (job / ".hydra" / "overrides.yaml").read_text() if (job / ".hydra").is_dir() else ""
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        losses = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k.endswith("loss")}
        ok = bool(losses) and all(math.isfinite(v) for v in losses.values())
        outcomes.append({"job": job.name, "overrides": [o.strip("- ").strip() for o in overrides.splitlines()],
                         "ok": ok, "losses": losses,
                         "why": "" if ok else ("no metrics.json" if not metrics else "no finite loss in metrics.json")})
    return outcomes


def run(cmd: list[str], log: Path, timeout: float, env: dict[str, str]) -> tuple[int, float]:
    """Exit status (124 past ``timeout``) and wall seconds of ``cmd``; its output goes to ``log``."""
    start = time.perf_counter()
    with log.open("w") as fh:
        try:
            code = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, timeout)).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per training job")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the whole check")
    parser.add_argument("--workers", type=int, default=4, help="parallel jobs of the precision sweep (joblib)")
    parser.add_argument("--out", type=Path, default=HERE / "gpu_check.json")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "gpu_check")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); nothing was run. Run it on a machine with an NVIDIA GPU and a "
              f"CUDA build of torch.", file=sys.stderr)
        return NO_CUDA_EXIT
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "disabled"}
    report: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported(), "steps": args.steps, "families": list(FAMILIES),
    }
    families = f"model={','.join(FAMILIES)}"
    stages = {
        "precisions": [sys.executable, "-m", "genlab", "-m", families, "trainer=gpu",
                       f"trainer.precision={','.join(PRECISIONS)}", "hydra/launcher=joblib",
                       f"hydra.launcher.n_jobs={args.workers}", *job_overrides(args.steps)],
        "ddp": [sys.executable, "-m", "genlab", "-m", families, "trainer=ddp", "trainer.devices=1",
                *job_overrides(args.steps)],
    }
    expected = {"precisions": len(FAMILIES) * len(PRECISIONS), "ddp": len(FAMILIES)}
    failed = False
    for name, cmd in stages.items():
        sweep = args.work / name
        cmd = [*cmd, f"hydra.sweep.dir={sweep}"]
        left = args.budget - (time.perf_counter() - started)
        code, seconds = run(cmd, args.work / f"{name}.log", left, env)
        jobs = job_outcomes(sweep) if sweep.is_dir() else []
        passed = sum(bool(j["ok"]) for j in jobs)
        report[name] = {"command": " ".join(cmd), "exit": code, "seconds": seconds, "jobs": jobs,
                        "passed": passed, "expected": expected[name]}
        print(f"gpu-check: {name}: {passed}/{expected[name]} jobs passed in {seconds:.0f} s (exit {code}; "
              f"log {args.work / f'{name}.log'})", flush=True)
        failed |= code != 0 or passed != expected[name]

    mnist = Path(os.environ.get("GENLAB_DATA_DIR", "data")) / "mnist"
    left = args.budget - (time.perf_counter() - started)
    if not mnist.is_dir():
        report["bench"] = {"skipped": f"no MNIST in {mnist} (set GENLAB_DATA_DIR)"}
        failed = True
    else:
        bench_out = args.work / "bench_gpu.json"
        cmd = [sys.executable, "-m", "experiments.bench", "--device", "cuda", "--only", "vae,gan,toy_gan,nll,startup",
               "--reps", "3", "--threads", "4", "--nll-threads", "4", "--nll-images", "10000", "--out", str(bench_out)]
        code, seconds = run(cmd, args.work / "bench.log", left, env)
        report["bench"] = {"command": " ".join(cmd), "exit": code, "seconds": seconds,
                           "results": json.loads(bench_out.read_text()) if bench_out.is_file() else None}
        print(f"gpu-check: bench exit {code} in {seconds:.0f} s", flush=True)
        failed |= code != 0
    report["seconds"] = time.perf_counter() - started
    report["passed"] = not failed
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu-check: {'passed' if not failed else 'FAILED'}; wrote {args.out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
