"""A W&B logger that is offline unless the user is logged in, and never lets a W&B failure stop training."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from genlab.checks import one_of

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY or a stored login), checked without prompting."""
    import wandb

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001 - any failure to read credentials means "not logged in"
        return False


def make_wandb_logger(
    mode: str = "auto",
    project: str = "genlab",
    entity: str | None = None,
    group: str | None = None,
    job_type: str | None = "train",
    tags: Sequence[str] = (),
    save_dir: str | Path = ".",
    name: str | None = None,
    log_model: bool = False,
) -> WandbLogger:
    """A started WandbLogger: ``mode=auto`` is online only when logged in; an online start that fails falls back offline."""
    one_of("logger.wandb.mode", mode, MODES)
    if os.environ.get("WANDB_MODE") in MODES[1:]:
        mode = os.environ["WANDB_MODE"]  # the user's environment wins over the config default
    online = mode == "online" or (mode == "auto" and wandb_logged_in())
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        project=project, entity=entity, group=group, job_type=job_type, tags=list(tags),
        save_dir=str(save_dir), name=name, log_model=log_model,
    )
    if mode == "disabled":
        return WandbLogger(mode="disabled", **kwargs)
    if online:
        logger = WandbLogger(offline=False, settings={"init_timeout": 60}, **kwargs)
        try:
            logger.experiment  # noqa: B018 - start the run now so a failure is caught here
            return logger
        except Exception as err:  # noqa: BLE001 - no network, bad key, server error: keep training
            log.warning("W&B could not start online (%s); logging offline instead. Upload later with "
                        "`wandb sync %s/wandb/offline-run-*`.", err, save_dir)
    logger = WandbLogger(offline=True, **kwargs)
    logger.experiment  # noqa: B018
    return logger
