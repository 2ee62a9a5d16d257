"""``make bench`` = ``python -m experiments.bench``: genlab's speed against hand-written PyTorch, pythae, scikit-learn.

    python -m experiments.bench --only toy_gan --reps 7                  # one training case
    python -m experiments.bench --only nll --nll-images 10000            # nll_eval_seconds measured on all 10k
    python -m experiments.bench --only vae --blocks 1,4 --clock cpu      # also genlab at data.steps_per_block=1, 4
    python -m experiments.bench --only gan --compile --out /tmp/c.json   # also the loop with torch.compile'd nets

A ratio is the median over repetitions of two ways' rates in the same repetition (experiments/BENCHMARKS.md). The
report is one flat JSON object (``--out``); a partial ``--only`` run updates that file's keys.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import get_method

from experiments.bench import run
from experiments.bench.cases import CASES, Case, case_data, load_mnist, loop_rate
from genlab import cpu_matmul
from genlab.data.idx import DataFileError

ALL_CASES = (*(case.name for case in CASES), "nll", "pca", "startup", "pythae")
BASELINES = ("minimal", "dataloader", "minimal_same_matmul")  # genlab's rate over each: <case>_vs_<baseline>
RUN_KEYS = ("machine", "load_average_start", "load_average_end", "threads", "reps", "device", "harness_seconds",
            "cases", "fast_path_keys")  # a run's own: a partial run keeps them apart (merge_reports)


def training_ways(case: Case, args: argparse.Namespace, workdir: Path) -> dict[str, Callable[[int], float]]:
    """The ways ``case`` runs, each giving steps/s: genlab (StepTimer), the hand-written loops, and the minimal loop
    on genlab's matmul library where ``cpu_matmul=auto`` picks oneDNN (the per-step overhead alone)."""
    device, (x, y) = torch.device(args.device), case_data(case)
    steps, per = max(5, round(case.steps * args.steps_scale)), case.optimizer_steps_per_batch

    def genlab(*extra: str, pad: int = 0) -> Callable[[int], float]:
        # global_step counts optimizer steps (a GAN minibatch takes two); the timer stops at an item's end
        overrides = [*case.overrides, *extra, f"trainer.max_steps={(steps + case.warmup + pad) * per}", "test=false",
                     "logger=csv", *(["trainer=gpu"] if device.type == "cuda" else [])]
        return lambda rep: run.run_genlab(overrides, workdir, args.threads, case.warmup, per, args.clock)["steps_per_s"]

    def loop(kind: str, compiled: bool = False) -> Callable[[int], float]:
        return lambda rep: loop_rate(kind, case.step(tuple(x.shape[1:]), device, compiled), x, y, case.batch_size,
                                     steps, case.warmup, device, get_method(run.CLOCKS[args.clock]))

    ways = {"genlab": genlab("trainer.enable_progress_bar=true")}
    if case.bar_off:
        ways["genlab_no_bar"] = genlab("trainer.enable_progress_bar=false")
    ways["minimal"] = loop("minimal")
    if device.type == "cpu" and run.genlab_cpu_matmul() != "blas":  # else the same loop as "minimal"
        ways["minimal_same_matmul"] = lambda rep: run.on_genlab_matmul(lambda: loop("minimal")(rep))
    ways["dataloader"] = loop("dataloader")
    ways.update({f"genlab_S{s}": genlab(f"data.steps_per_block={s}", pad=s) for s in args.blocks})
    if args.compile:
        ways["compiled"] = loop("minimal", compiled=True)
    return ways


def training_report(name: str, rates: dict[str, list[float]]) -> dict[str, float]:
    """Each way's median steps/s, genlab's paired ratio over each baseline, and each other way's over minimal."""
    report = {f"{name}_{way}_steps_per_s": statistics.median(values) for way, values in rates.items()}
    for way in rates:
        if way in BASELINES:
            report[f"{name}_vs_{way}"] = run.paired_ratio(rates["genlab"], rates[way])
        elif way != "genlab":
            report[f"{name}_{way.removeprefix('genlab_')}_vs_minimal"] = run.paired_ratio(rates[way], rates["minimal"])
    return report


def merge_reports(old: dict[str, object], new: dict[str, object]) -> dict[str, object]:
    """A partial run's keys over the last full report; the run's own fields (load, cases, fast-path keys) are kept
    per run under ``partial_runs``, so every number stays next to the load it was measured under."""
    merged = {**old, **{k: v for k, v in new.items() if k not in RUN_KEYS}}
    runs = [r for r in old.get("partial_runs", []) if not set(r["cases"]) <= set(new["cases"])]  # type: ignore[union-attr]
    merged["partial_runs"] = [*runs, {k: new[k] for k in RUN_KEYS if k in new}]
    stale = [k for k in old.get("fast_path_keys", []) if k not in new]  # type: ignore[union-attr]
    merged["fast_path_keys"] = sorted({*stale, *new["fast_path_keys"]})  # type: ignore[misc]
    return merged


def count(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int of at least ``low`` (and at most ``high``)."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low or high is not None and int(text) > high:
            raise argparse.ArgumentTypeError(f"expected an int in {low}..{high or ''}, got {text!r}")
        return int(text)
    return parse


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("python -m experiments.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arg = parser.add_argument
    arg("--only", default=",".join(ALL_CASES), help=f"comma-separated subset of {ALL_CASES}")
    arg("--reps", type=count(1), default=5, help="rotating repetitions per training case and start-up (medians)")
    arg("--threads", type=count(1), default=1, help="torch threads for every way (OMP_NUM_THREADS of genlab runs)")
    arg("--steps-scale", type=float, default=1.0, help="multiply every training case's timed step count")
    arg("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time, which load inflates least")
    arg("--blocks", type=lambda text: [count(1)(t) for t in text.split(",")], default=[],
        help="also time genlab at these data.steps_per_block values, e.g. 1,4")
    arg("--compile", action="store_true", help="also time the minimal loop with torch.compile'd nets")
    arg("--nll-images", type=count(1, 10000), default=256, help="test images timed for the NLL (10000 = all)")
    arg("--nll-threads", type=count(1), default=2, help="torch threads for the NLL (the target: 2 cores)")
    arg("--nll-compare-images", type=count(0, 10000), default=256, help="images scored at bf16 and 32; 0: skip")
    arg("--nll-train-epochs", type=count(0), default=2, help="untimed epochs before the NLL (bf16's error needs them)")
    arg("--pythae-reps", type=count(1), default=2, help="rotations of the pythae and genlab processes")
    arg("--pythae-nll-k", type=count(1), default=1000, help="importance samples of the estimator scoring both")
    arg("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: the loops, genlab (trainer=gpu) and the NLL")
    arg("--out", type=Path, default=run.REPO / "experiments" / "bench.json")
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    if not args.only <= set(ALL_CASES):
        parser.error(f"--only {','.join(sorted(args.only))}: expected a subset of {','.join(ALL_CASES)}")
    if args.device == "cuda" and {"pca", "pythae"} & args.only:
        parser.error("--device cuda times the training cases, nll and startup; pca and pythae run on the CPU only")
    return args


def main(argv: list[str] | None = None) -> int:
    from experiments.bench import measures, pythae

    args = parse(argv)
    if args.only - {"toy_gan"}:  # every other case reads MNIST: say where it was looked for, before any timing
        try:
            load_mnist("none", "test")
        except (DataFileError, FileNotFoundError) as err:
            sys.exit(f"bench: MNIST is needed: {err} (e.g. GENLAB_DATA_DIR=/work/shared/data make bench)")
    torch.set_num_threads(args.threads)
    started, probe = time.perf_counter(), cpu_matmul.probe()
    report: dict[str, object] = {
        "machine": run.machine(), "load_average_start": run.load_average(), "threads": args.threads,
        "reps": args.reps, "device": args.device, "cpu_matmul": run.genlab_cpu_matmul(),
        "cpu_matmul_probe_blas_us": probe.blas_us, "cpu_matmul_probe_onednn_us": probe.onednn_us,
        "cpu_matmul_probe_onednn_error": probe.onednn_error}
    print(f"bench: {report['machine']}; load average {report['load_average_start']}; {args.threads} thread(s)")
    fast_path_keys: list[str] = []
    with tempfile.TemporaryDirectory(prefix="genlab_bench_") as tmp:
        for case in (c for c in CASES if c.name in args.only):
            rates = run.alternate(training_ways(case, args, Path(tmp)), args.reps, case.name, lambda r: f"{r:.1f}")
            report.update(timed := training_report(case.name, rates))
            fast = run.uses_fast_path(case.overrides)  # the --blocks ways name their own data.steps_per_block
            fast_path_keys += [k for k in timed if (int(m[1]) > 1 if (m := re.search(r"_S(\d+)_", k)) else fast)]
        if "startup" in args.only:
            report.update(measures.bench_startup(args.reps, args.threads, Path(tmp)))
            fast_path_keys += ["startup_seconds"] if run.uses_fast_path(measures.STARTUP_JOB) else []
        if "pythae" in args.only:
            report.update(pythae.bench_vs_pythae(Path(tmp) / "pythae", args.pythae_reps, args.threads,
                                                 args.pythae_nll_k, args.nll_threads))
            fast_path_keys += ["vae_vs_pythae"] if run.uses_fast_path(pythae.GENLAB_JOB) else []
    if "nll" in args.only:
        report.update(run.on_genlab_matmul(lambda: measures.bench_nll(
            args.nll_images, args.nll_threads, torch.device(args.device), args.nll_compare_images,
            args.nll_train_epochs)), nll_threads=args.nll_threads)
        torch.set_num_threads(args.threads)
    if "pca" in args.only:
        report.update(measures.bench_pca(args.reps))
    report.update({"load_average_end": run.load_average(), "harness_seconds": time.perf_counter() - started,
                   "fast_path_keys": fast_path_keys, "cases": sorted(args.only)})
    if args.only != set(ALL_CASES) and args.out.is_file():
        report = merge_reports(json.loads(args.out.read_text()), report)
    for key, value in report.items():
        print(f"{key:<40} {value:.4g}" if isinstance(value, float) else f"{key:<40} {value}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
