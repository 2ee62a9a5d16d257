"""Does ``torch.compile`` speed up a training step on this machine? The bench's VAE and GAN steps, eager and compiled.

    python experiments/bench_compile.py --reps 3 --threads 1 [--data mnist|random] [--out compile.json]

The steps are :mod:`bench_loops`'s hand-written ones (genlab's nets and losses, Adam): the MNIST VAE
(784-400-20, batch 128; the forward and the loss compiled as one function, the backward through AOTAutograd),
the MNIST MLP GAN and the ring8 GAN (2-128-128-2, batch 256; generator and discriminator compiled as modules).
Each way runs ``warmup`` untimed steps (the compilation happens there and is reported apart) and then ``steps``
timed ones, alternating eager and compiled over ``reps`` repetitions; the speed-up is the median of compiled
steps/s over eager steps/s in the same repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_loops import gan_step, make_gan, make_vae, minimal_batches, time_steps, vae_step  # noqa: E402

from genlab.data.toy2d import Toy2DDataModule  # noqa: E402


def mnist_like(binary: bool) -> torch.Tensor:
    """MNIST training images from ``$GENLAB_DATA_DIR`` when present, else random images of the same shape
    (the step's cost does not depend on the pixel values)."""
    from genlab.data.idx import DataFileError
    from genlab.data.mnist import MNISTDataModule

    try:
        return MNISTDataModule(binarize="static" if binary else "none").split_tensors("train")[0]
    except (DataFileError, FileNotFoundError):  # no MNIST here: the timing depends on the shapes only
        g = torch.Generator().manual_seed(0)
        x = torch.rand(10000, 1, 28, 28, generator=g)
        return x.round() if binary else x


def cases() -> dict[str, tuple[Callable[[bool], Callable[[torch.Tensor], None]], torch.Tensor, int]]:
    """name -> (step factory taking ``compiled``, data, batch size)."""

    def vae(compiled: bool) -> Callable[[torch.Tensor], None]:
        parts = make_vae((1, 28, 28))
        if compiled:
            parts.loss = torch.compile(parts.loss)  # type: ignore[method-assign]
        return vae_step(parts)

    def gan(shape: tuple[int, ...], latent: int, hidden: list[int], sigmoid: bool) -> Callable[[bool], Callable]:
        def build(compiled: bool) -> Callable[[torch.Tensor], None]:
            parts = make_gan(shape, latent, hidden, sigmoid_output=sigmoid)
            if compiled:
                parts.generator = torch.compile(parts.generator)  # type: ignore[assignment]
                parts.discriminator = torch.compile(parts.discriminator)  # type: ignore[assignment]
            return gan_step(parts)
        return build

    toy = Toy2DDataModule(kind="ring8", n_train=20000, n_val=2000, n_test=2000, batch_size=256)
    return {
        "vae": (vae, mnist_like(binary=True), 128),
        "gan": (gan((1, 28, 28), 16, [128, 128, 128], True), mnist_like(binary=False), 128),
        "toy_gan": (gan((2,), 2, [128, 128], False), toy.train_tensors()[0], 256),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--only", default="vae,gan,toy_gan")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, object] = {"torch": torch.__version__, "threads": args.threads,
                                 "load_average_start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())}
    cpu = torch.device("cpu")
    for name, (build, x, batch) in cases().items():
        if name not in args.only.split(","):
            continue
        rates: dict[str, list[float]] = {"eager": [], "compiled": []}
        compile_s: list[float] = []
        for rep in range(args.reps):
            for way in ("eager", "compiled") if rep % 2 == 0 else ("compiled", "eager"):
                torch.manual_seed(rep)
                step = build(way == "compiled")
                batches = minimal_batches(x, batch)
                start = time.perf_counter()
                step(next(batches))  # the first call compiles
                if way == "compiled":
                    compile_s.append(time.perf_counter() - start)
                rates[way].append(time_steps(step, batches, args.steps, args.warmup, cpu))
            print(f"{name} rep {rep + 1}: eager {rates['eager'][-1]:.1f} steps/s, "
                  f"compiled {rates['compiled'][-1]:.1f} steps/s", flush=True)
        report[f"compile_{name}_eager_steps_per_s"] = statistics.median(rates["eager"])
        report[f"compile_{name}_compiled_steps_per_s"] = statistics.median(rates["compiled"])
        report[f"compile_{name}_speedup"] = statistics.median(
            c / e for c, e in zip(rates["compiled"], rates["eager"], strict=True))
        report[f"compile_{name}_first_call_seconds"] = statistics.median(compile_s)
    report["load_average_end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
