"""The config ``python -m genlab OVERRIDES`` composes, built in the test process (a CLI process costs seconds of
imports), for checks that need no Hydra run: config validation, what a launcher config resolves to."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO, TINY
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig


def composed(*overrides: str, hydra: bool = False) -> DictConfig:
    """The root config composed with ``overrides``; ``hydra=True`` keeps the ``hydra`` node (launcher, sweeper)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def tiny_run(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config of a run writing to ``output_dir``, for ``genlab.train.train``; TINY's limits (unless
    ``overrides`` set them) bound the training that a missing check would let through."""
    keys = {o.lstrip("+").split("=", 1)[0] for o in overrides}
    tiny = [o for o in TINY if o.split("=", 1)[0] not in keys]
    return composed(*tiny, *overrides, f"paths.output_dir={output_dir}")
