"""``python -m genlab.sample ckpt=PATH n=64``: samples (and reconstructions) from a trained run, as PNG and NPZ.

The model is rebuilt from the run config stored in the checkpoint (``checkpoint["genlab"]["config"]``), so no
other file of the run is needed; the checkpoint is read with ``torch.load(weights_only=True)``.
Writes to ``out`` (default ``<run folder>/samples/``):
- ``samples.png`` + ``samples.npz`` (``samples``: (n, *data_shape)) for models with ``sample(n)``;
- ``reconstructions.png`` + ``reconstructions.npz`` (``inputs``, ``labels``, ``reconstructions``) of the first
  ``n`` examples of the ``split`` for models with ``reconstruct(x)`` (the VAE family, autoencoders, PCA).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from genlab.callbacks.images import as_images, grid_figure  # noqa: E402
from genlab.checkpoints import load_genlab_checkpoint  # noqa: E402
from genlab.checks import ConfigError, one_of, positive_int  # noqa: E402
from genlab.data.idx import DataFileError  # noqa: E402

USAGE = """usage: python -m genlab.sample ckpt=PATH [n=64] [out=DIR] [seed=0] [split=test] [device=cpu]
  ckpt    a checkpoint written by `python -m genlab` (e.g. <run>/checkpoints/best.ckpt)
  n       how many samples, and how many inputs to reconstruct
  out     output folder (default: <run folder>/samples)
  seed    seed of the sampling noise
  split   where the inputs to reconstruct come from: test | val | train
  device  cpu | cuda | ... (where the model runs)"""


@dataclass
class SampleArgs:
    """The command line, ``key=value`` as in Hydra overrides."""

    ckpt: str = ""
    n: int = 64
    out: str | None = None
    seed: int = 0
    split: str = "test"
    device: str = "cpu"


def parse_args(argv: Sequence[str]) -> SampleArgs:
    """``key=value`` words into :class:`SampleArgs`; a ConfigError names a bad or unknown key."""
    known = {f.name: f for f in fields(SampleArgs)}
    values: dict[str, Any] = {}
    for word in argv:
        key, sep, value = word.partition("=")
        key = key.lstrip("+")
        if not sep or key not in known:
            raise ConfigError(f"{word!r} is not accepted: expected key=value with key one of {sorted(known)}")
        if key in ("n", "seed"):
            try:
                values[key] = int(value)
            except ValueError:
                raise ConfigError(f"{key}={value!r} is not accepted: expected an integer") from None
        else:
            values[key] = None if key == "out" and value in ("", "null") else value
    args = SampleArgs(**values)
    if not args.ckpt:
        raise ConfigError("ckpt is required: ckpt=PATH to a .ckpt written by `python -m genlab`")
    positive_int("n", args.n)
    positive_int("seed", args.seed, allow_zero=True)
    one_of("split", args.split, ("test", "val", "train"))
    return args


def load_model(checkpoint: dict[str, Any], device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """(model with the checkpoint's weights in eval mode, the un-set-up datamodule) from the stored run config."""
    config = checkpoint["genlab"]["config"]
    datamodule = instantiate(config["data"])
    model = instantiate(config["model"], data_shape=datamodule.data_shape)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), datamodule


def points_figure(points: Tensor, title: str, reference: Tensor | None = None) -> Figure:
    """A scatter of 2-D ``points`` (red) over optional ``reference`` points (grey)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=3, c="lightgray", label="inputs")
    ax.scatter(points[:, 0], points[:, 1], s=4, c="tab:red", label=title)
    ax.legend(loc="upper right")
    ax.set_title(title)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_samples(model: Any, n: int, out: Path) -> list[Path]:
    """samples.npz and samples.png (an image grid, or a 2-D scatter) of ``model.sample(n)``."""
    samples = model.sample(n).float().cpu().reshape(n, *model.data_shape)
    np.savez_compressed(out / "samples.npz", samples=samples.numpy())
    images = as_images(samples)
    written = [out / "samples.npz"]
    if images is not None:
        written.append(save_figure(grid_figure(images, f"{n} samples"), out / "samples.png"))
    elif samples.flatten(1).shape[1] == 2:
        written.append(save_figure(points_figure(samples.flatten(1), "samples"), out / "samples.png"))
    return written


def write_reconstructions(model: Any, datamodule: Any, n: int, split: str, out: Path) -> list[Path]:
    """reconstructions.npz and .png of the first ``n`` examples of ``split``: inputs (odd rows) over reconstructions."""
    x, y = datamodule.split_tensors(split)
    x, y = x[:n], y[:n]
    recon = model.reconstruct(x.to(model.device)).float().cpu().reshape(x.shape)
    np.savez_compressed(out / "reconstructions.npz", inputs=x.numpy(), labels=y.numpy(), reconstructions=recon.numpy())
    written = [out / "reconstructions.npz"]
    originals, recons = as_images(x), as_images(recon)
    if originals is not None and recons is not None:
        nrow = min(8, len(originals))
        rows = []
        for start in range(0, len(originals), nrow):
            rows += [originals[start : start + nrow], recons[start : start + nrow]]
        fig = grid_figure(torch.cat(rows), f"{split} inputs (odd rows) and reconstructions (even rows)", nrow=nrow)
        written.append(save_figure(fig, out / "reconstructions.png"))
    elif x.flatten(1).shape[1] == 2:
        fig = points_figure(recon.flatten(1), "reconstructions", reference=x.flatten(1))
        written.append(save_figure(fig, out / "reconstructions.png"))
    return written


@torch.no_grad()
def sample_from_checkpoint(args: SampleArgs) -> list[Path]:
    """Rebuild the run's model from ``args.ckpt``, write its samples and reconstructions; return the files."""
    checkpoint = load_genlab_checkpoint(args.ckpt)
    model, datamodule = load_model(checkpoint, args.device)
    can_sample, can_reconstruct = hasattr(model, "sample"), hasattr(model, "reconstruct")
    if not (can_sample or can_reconstruct):
        raise ConfigError(f"ckpt={args.ckpt!r}: {type(model).__name__} can neither sample nor reconstruct")
    # A checkpoint lives in <run>/checkpoints/; its samples go next to it in <run>/samples/.
    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent.parent / "samples"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    written = write_samples(model, args.n, out) if can_sample else []
    if can_reconstruct:
        written += write_reconstructions(model, datamodule, args.n, args.split, out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """The command: exit status 0 with the written paths printed, 2 with a one-line error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return 0
    try:
        written = sample_from_checkpoint(parse_args(argv))
    except (ConfigError, DataFileError, FileNotFoundError) as err:
        print(f"genlab.sample: error: {err}\n{USAGE}", file=sys.stderr)
        return 2
    for path in written:
        print(f"genlab.sample: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
