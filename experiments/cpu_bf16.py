"""``trainer.precision=bf16-mixed`` against ``32`` on the CPU: what the bfloat16 units gain, what autocast costs.

    OMP_NUM_THREADS=1 nice python experiments/cpu_bf16.py --threads 1,2 --batch 128,1024 --out experiments/cpu_bf16.json

Everything is timed in one process, float32 and bfloat16 taking turns, so that a burst of load on a shared machine
hits both. Each timing is taken on two clocks: wall time (the fastest repetition: load only adds time) and this
process's CPU time (all its threads; with one thread it does not count the time other processes took the core,
which on a loaded machine the fastest wall time still includes). Each row gives the median over ``--rounds`` turns
of either precision and their ratios (bf16 / float32: below 1, bfloat16 is faster).

- ``linear``: each F.linear of the MNIST VAE (conf/model/vae.yaml: 784-400-40, 20-400-784) and GAN
  (conf/model/gan.yaml: 16-128-128-128-784, 784-128-128-128-1) forward, at float32 (the library ``cpu_matmul=auto``
  picks), with bfloat16 inputs and weights (what the bfloat16 units can give), and with float32 inputs under
  ``torch.autocast("cpu", torch.bfloat16)`` (the casts of inputs and weights included);
- ``step``: a training step of genlab's own VAE and GAN (their configs, MNIST-shaped batches) through Lightning's
  precision plugin, as ``python -m genlab ... trainer.precision=bf16-mixed`` runs it: forward, backward, Adam.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from genlab import cpu_matmul
from genlab.config import instantiate_checked
from genlab.train import CONF_DIR

VAE_LAYERS = [(784, 400), (400, 40), (20, 400), (400, 784)]
GAN_LAYERS = [(16, 128), (128, 128), (128, 128), (128, 784), (784, 128), (128, 1)]


def alternate(fns: dict[str, Callable[[], None]], reps: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per fn, the median over ``rounds`` of its fastest of ``reps`` calls on the wall clock and on the process CPU
    clock (seconds), the fns taking turns."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up: oneDNN's kernel creation
    for _ in range(rounds):
        for name, fn in fns.items():
            wall = cpu = float("inf")
            for _ in range(reps):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
            times[name].append((wall, cpu))
    return {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in times.items()}


def linear_variants(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> dict[str, Callable[[], None]]:
    """F.linear(x, w, b) in float32, on bfloat16 copies, and on the float32 operands under bf16 autocast."""
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()

    def autocast() -> None:
        with torch.autocast("cpu", torch.bfloat16):
            F.linear(x, w, b)

    return {"32": lambda: F.linear(x, w, b), "bf16": lambda: F.linear(xb, wb, bb), "autocast": autocast}


def linear_rows(batch: int, rounds: int) -> list[dict[str, Any]]:
    """Forward F.linear per layer: float32, bfloat16 operands, float32 operands under bf16 autocast."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for model, layers in (("vae", VAE_LAYERS), ("gan", GAN_LAYERS)):
        for n_in, n_out in layers:
            x, w, b = torch.randn(batch, n_in, generator=gen), torch.randn(n_out, n_in, generator=gen), torch.zeros(n_out)
            t = alternate(linear_variants(x, w, b), reps=20, rounds=rounds)
            row = {"part": "linear", "model": model, "shape": f"{batch}x{n_in} @ {n_in}x{n_out}"}
            for clock, i in (("wall", 0), ("cpu", 1)):
                row |= {f"{clock}_us_32": 1e6 * t["32"][i], f"{clock}_us_bf16": 1e6 * t["bf16"][i],
                        f"{clock}_us_autocast": 1e6 * t["autocast"][i],
                        f"{clock}_bf16_over_32": t["bf16"][i] / t["32"][i],
                        f"{clock}_autocast_over_32": t["autocast"][i] / t["32"][i]}
            rows.append(row)
    return rows


class StepClock(L.Callback):
    """Times each loader item (a block of minibatches) of a fit after the first ``warmup``: seconds per optimizer
    step on the wall clock (the fastest item: on a shared machine the others carry other processes' load) and on
    the process CPU clock (the median item)."""

    def __init__(self, warmup: int = 1) -> None:
        self.warmup, self.marks = warmup, []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), trainer.global_step))

    def seconds_per_step(self) -> tuple[float, float]:
        marks = self.marks[self.warmup :]
        items = [((w1 - w0) / (s1 - s0), (c1 - c0) / (s1 - s0)) for (w0, c0, s0), (w1, c1, s1) in zip(marks, marks[1:])]
        return min(w for w, _ in items), statistics.median(c for _, c in items)


def step_rows(batch: int, steps: int, rounds: int) -> list[dict[str, Any]]:
    """Seconds per optimizer step of genlab's VAE and GAN in fits at 32 and bf16-mixed, taking turns."""
    rows = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for model_name in ("vae", "gan"):
            # the GAN without its image metrics: no feature classifier is trained (or written) for a timing
            extra = ["model.sample_metrics=false"] if model_name == "gan" else []
            cfg = compose("config", overrides=[f"model={model_name}", "data=mnist", f"data.batch_size={batch}", *extra])
            datamodule = instantiate_checked(cfg.data, "data")
            times: dict[str, list[tuple[float, float]]] = {"32": [], "bf16": []}
            for _ in range(rounds):
                for name, plugin in (("32", Precision()), ("bf16", MixedPrecision("bf16-mixed", "cpu"))):
                    L.seed_everything(0, verbose=False)
                    model = instantiate_checked(cfg.model, "model", data_shape=datamodule.data_shape)
                    model.run_config = {}
                    clock = StepClock()
                    trainer = L.Trainer(accelerator="cpu", plugins=[plugin], max_steps=steps, logger=False,
                                        default_root_dir=tempfile.gettempdir(),
                                        enable_checkpointing=False, enable_progress_bar=False,
                                        enable_model_summary=False, limit_val_batches=0, callbacks=[clock])
                    trainer.fit(model, datamodule=datamodule)
                    times[name].append(clock.seconds_per_step())
            row = {"part": "step", "model": model_name, "shape": f"batch {batch}"}
            for clock, i in (("wall", 0), ("cpu", 1)):
                t32, t16 = (statistics.median(t[i] for t in times[p]) for p in ("32", "bf16"))
                row |= {f"{clock}_ms_32": 1e3 * t32, f"{clock}_ms_bf16": 1e3 * t16, f"{clock}_bf16_over_32": t16 / t32}
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1", help="torch intra-op threads, comma-separated")
    parser.add_argument("--batch", default="128,1024", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=96, help="optimizer steps per timed fit (GAN: 2 per batch)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of float32 and bf16 each")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    matmul = cpu_matmul.select("auto")
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for batch in (int(b) for b in args.batch.split(",")):
            for row in linear_rows(batch, args.rounds) + step_rows(batch, args.steps, args.rounds):
                rows.append({"threads": threads, **row})
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                      flush=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    report = {"cpu_matmul": matmul, "torch": torch.__version__, "load_after": load, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
