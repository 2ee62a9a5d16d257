"""The fast path's benchmark: genlab at data.steps_per_block=S against the minimal hand-written loop, in one process.

    GENLAB_DATA_DIR=/work/shared/data python experiments/fast_path_bench.py --blocks 1,4 --reps 5
    python experiments/fast_path_bench.py --only toy_gan --blocks 1,4,16 --reps 7
    python experiments/fast_path_bench.py --blocks 1,4 --fused     # also genlab with fused Adam at the largest S

Each repetition runs, in a rotating order, ``genlab.train.train`` (the whole ``python -m genlab`` run minus the
process start: default callbacks, progress bar, CSV logger, ``test=false``) once per S, and the minimal loop of
:mod:`bench_loops`, all in this process with one torch thread. genlab is timed by :class:`BatchTimer` from the end
of the loader item that completes the ``warmup``-th minibatch to the end of the last one, validation left out; the
loop from the end of its ``warmup``-th step. Rates are minibatches per second (a GAN minibatch is a D and a G
step in both). A ratio is the median over repetitions of genlab's rate over the loop's in the same repetition.

Two clocks: wall time, and the main thread's CPU time (``time.thread_time``), which other processes' load on a
shared machine does not inflate (both ways run on this one thread).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_loops import gan_step, make_gan, make_vae, minimal_batches, vae_step  # noqa: E402

CASES = ("vae", "gan", "toy_gan")
GAN_OPTIMIZERS = ("optimizer_g", "optimizer_d")


def clocks() -> Tensor:
    """(wall seconds, main-thread CPU seconds) now."""
    return torch.tensor([time.perf_counter(), time.thread_time()], dtype=torch.float64)


class BatchTimer(L.Callback):
    """Writes ``{"batches", "wall", "cpu"}`` (seconds on both clocks) for the minibatches trained after ``warmup``."""

    def __init__(self, out: str, warmup: int = 20) -> None:
        self.out, self.warmup = Path(out), int(warmup)
        self.start: tuple[Tensor, int] | None = None
        self.stop: tuple[Tensor, int] | None = None
        self.validation = torch.zeros(2, dtype=torch.float64)
        self._pending = torch.zeros(2, dtype=torch.float64)
        self._val_start: Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now, done = clocks(), pl_module.batches_trained
        if self.start is None and done >= self.warmup:
            self.start = (now, done)
        self.stop = (now, done)
        self.validation += self._pending  # a validation counts once a later item ends inside the window
        self._pending.zero_()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is not None and not trainer.sanity_checking:
            self._val_start = clocks()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None:
            self._pending += clocks() - self._val_start
            self._val_start = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is None or self.stop is None or self.stop[1] <= self.start[1]:
            raise RuntimeError(f"BatchTimer: no minibatches after warmup={self.warmup}")
        wall, cpu = (self.stop[0] - self.start[0] - self.validation).tolist()
        self.out.write_text(json.dumps({"batches": self.stop[1] - self.start[1], "wall": wall, "cpu": cpu}))


@dataclass
class Case:
    name: str
    overrides: list[str]
    optimizers: tuple[str, ...]
    batch_size: int
    steps: int
    warmup: int
    optimizer_steps_per_batch: int
    rates: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def cases(only: set[str], scale: float) -> list[Case]:
    def n(steps: int) -> int:
        return max(10, round(steps * scale))

    all_cases = [
        Case("vae", ["model=vae", "data=mnist", "data.binarize=static"], ("optimizer",), 128, n(200), 20, 1),
        Case("gan", ["model=gan", "data=mnist", "model.generator_output=sigmoid", "model.sample_metrics=false"],
             GAN_OPTIMIZERS, 128, n(200), 20, 2),
        Case("toy_gan", ["model=gan", "data=ring8", "model.latent_dim=2", "model.generator.hidden=[128,128]",
                         "model.discriminator.hidden=[128,128]"], GAN_OPTIMIZERS, 256, n(400), 40, 2),
    ]
    return [c for c in all_cases if c.name in only]


def genlab_rate(case: Case, steps_per_block: int, workdir: Path, fused: bool = False) -> tuple[float, float]:
    """Minibatches per wall and per CPU second of one in-process ``genlab.train.train`` run at ``steps_per_block``
    (``fused``: with torch's fused Adam, ``model.<optimizer>.fused=true``)."""
    from hydra import compose, initialize_config_dir

    from genlab.train import CONF_DIR, train

    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    out = run_dir / "rate.json"
    batches = case.warmup + case.steps + steps_per_block  # the timer stops at an item end
    overrides = [
        *case.overrides, f"data.steps_per_block={steps_per_block}",
        f"trainer.max_steps={batches * case.optimizer_steps_per_batch}", "test=false", "logger=csv",
        f"paths.output_dir={run_dir}", "+callbacks.batch_timer._target_=fast_path_bench.BatchTimer",
        f"+callbacks.batch_timer.out={out}", f"+callbacks.batch_timer.warmup={case.warmup}",
        *(f"++model.{name}.fused=true" for name in case.optimizers if fused),
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    train(cfg)
    timed = json.loads(out.read_text())
    return timed["batches"] / timed["wall"], timed["batches"] / timed["cpu"]


def loop_rate(case: Case, x: Tensor, y: Tensor, shape: tuple[int, ...]) -> tuple[float, float]:
    """Minibatches per wall and per CPU second of the minimal loop (bench_loops' steps and batches)."""
    if case.name == "vae":
        step = vae_step(make_vae(shape))
    elif case.name == "gan":
        step = gan_step(make_gan(shape, 16, [128, 128, 128], sigmoid_output=True))
    else:
        step = gan_step(make_gan(shape, 2, [128, 128], sigmoid_output=False))
    batches = minimal_batches(x, case.batch_size)
    for _ in range(case.warmup):
        step(next(batches))
    start = clocks()
    for _ in range(case.steps):
        step(next(batches))
    wall, cpu = (clocks() - start).tolist()
    return case.steps / wall, case.steps / cpu


def case_data(case: Case) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """The training tensors genlab's run uses (same split, binarization, shape)."""
    from genlab.data.mnist import MNISTDataModule
    from genlab.data.toy2d import Toy2DDataModule

    if case.name == "toy_gan":
        dm = Toy2DDataModule(kind="ring8", n_train=20000, n_val=2000, n_test=2000, batch_size=256)
    else:
        dm = MNISTDataModule(root=os.environ.get("GENLAB_DATA_DIR", "data"),
                             binarize="static" if case.name == "vae" else "none")
    x, y = dm.train_tensors()
    return x, y, dm.data_shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--blocks", default="1,4", help="comma-separated data.steps_per_block values")
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--fused", action="store_true", help="also time genlab with fused Adam at the largest S")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    blocks = [int(b) for b in args.blocks.split(",")]
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "disabled")
    report: dict[str, Any] = {"load_average_start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
                              "threads": 1, "reps": args.reps, "blocks": blocks}
    with tempfile.TemporaryDirectory(prefix="genlab_fast_path_") as tmp:
        for case in cases(set(args.only.split(",")), args.steps_scale):
            x, y, shape = case_data(case)
            ways = {f"genlab_S{s}": functools.partial(genlab_rate, case, s, Path(tmp)) for s in blocks}
            if args.fused:
                ways[f"genlab_S{max(blocks)}_fused"] = functools.partial(genlab_rate, case, max(blocks), Path(tmp), True)
            ways["minimal"] = functools.partial(loop_rate, case, x, y, shape)
            names = list(ways)
            for rep in range(args.reps):
                for name in names[rep % len(names):] + names[: rep % len(names)]:
                    torch.manual_seed(rep)
                    case.rates.setdefault(name, []).append(ways[name]())
                print(f"{case.name} rep {rep + 1} (wall, cpu): "
                      + ", ".join(f"{k} {case.rates[k][-1][0]:.1f} {case.rates[k][-1][1]:.1f}" for k in names),
                      flush=True)
            for name, rates in case.rates.items():
                for i, clock in enumerate(("wall", "cpu")):
                    report[f"{case.name}_{name}_batches_per_{clock}_s"] = statistics.median(r[i] for r in rates)
                    if name != "minimal":
                        report[f"{case.name}_{name}_vs_minimal_{clock}"] = statistics.median(
                            a[i] / b[i] for a, b in zip(rates, case.rates["minimal"], strict=True))
    report["load_average_end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    for key, value in report.items():
        print(f"{key:<40} {value:.3f}" if isinstance(value, float) else f"{key:<40} {value}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
