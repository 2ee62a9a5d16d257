"""A W&B logger that is offline unless the user is logged in, and never lets a W&B failure stop training."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from genlab.checks import one_of, positive

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY or a stored login), checked without prompting."""
    import wandb

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001 - any failure to read credentials means "not logged in"
        return False


def server_reachable(base_url: str, timeout: float) -> bool:
    """Whether a TCP connection to the W&B server's host and port opens within ``timeout`` seconds."""
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def sweep_names() -> tuple[str | None, str | None]:
    """(group, run name) from Hydra: a sweep's jobs share the group ``<task>-<sweep folder>`` and are named by
    their job number and overrides; a single run has no group and is named after its run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        group = f"{hc.job.name}-{Path(hc.sweep.dir).name}"
        overrides = hc.job.override_dirname
        return group, f"{hc.job.num}" + (f": {overrides}" if overrides else "")
    return None, Path(hc.runtime.output_dir).name


def _warn(message: str) -> None:
    # Said on stderr as well as in the log file: a run that silently stops syncing is worse than a loud one.
    log.warning(message)
    print(f"genlab: warning: {message}", file=sys.stderr)


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
    init_timeout: float = 60.0,
) -> WandbLogger:
    """A started WandbLogger: ``mode=auto`` is online only when logged in; an online start that fails (server
    unreachable, bad key, server error) falls back to offline with a warning. ``group``/``name`` default to
    the Hydra sweep (see :func:`sweep_names`)."""
    import wandb

    one_of("logger.wandb.mode", mode, MODES)
    positive("logger.wandb.init_timeout", init_timeout)
    if os.environ.get("WANDB_MODE") in MODES[1:]:
        mode = os.environ["WANDB_MODE"]  # the user's environment wins over the config default
    # Only global rank zero starts a run (start_logger); the other ranks of a DDP run skip the login lookup and
    # the network probe, which would cost each compute node up to 10 s where it has no network.
    online = rank_zero_only.rank == 0 and (mode == "online" or (mode == "auto" and wandb_logged_in()))
    if wandb.run is not None:
        # Left over from an earlier job of this process (a sweep job that failed before finishing its run):
        # without this, Lightning would log the new job into the old run.
        wandb.finish(exit_code=1)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    auto_group, auto_name = sweep_names()
    kwargs = dict(
        project=project, entity=entity, group=group or auto_group, job_type=job_type, tags=list(tags),
        save_dir=str(save_dir), name=name or auto_name, log_model=log_model,
    )
    if mode == "disabled":
        return start_logger("disabled", kwargs, init_timeout)
    if online:
        base_url = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
        if not server_reachable(base_url, timeout=min(init_timeout, 10.0)):
            _warn(f"W&B server {base_url} is unreachable; logging offline instead. Upload later with "
                  f"`wandb sync {save_dir}/wandb/offline-run-*`.")
        else:
            try:
                return start_logger("online", kwargs, init_timeout)
            except Exception as err:  # noqa: BLE001 - bad key, server error, timeout: keep training
                _warn(f"W&B could not start online ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                      f"logging offline instead. Upload later with `wandb sync {save_dir}/wandb/offline-run-*`.")
                wandb.teardown()  # the failed session keeps its online settings; offline needs a fresh one
    return start_logger("offline", kwargs, init_timeout)


def init_run(mode: str, init_timeout: float, **init: Any) -> Any:
    """``wandb.init`` with W&B's console output kept to warnings and errors (genlab prints the sync hint itself),
    and Lightning's x-axis (``trainer/global_step``) for every metric."""
    import wandb

    run = wandb.init(mode=mode, settings=wandb.Settings(quiet=True, init_timeout=init_timeout), **init)
    if getattr(run, "define_metric", None):
        run.define_metric("trainer/global_step")
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run


def start_logger(mode: str, kwargs: Mapping[str, Any], init_timeout: float) -> WandbLogger:
    """A WandbLogger on a run started now by :func:`init_run` on global rank zero (other ranks log nothing).

    The run is started here rather than by Lightning, which passes ``anonymous=None`` (W&B then warns that the
    setting has no effect) and, offline, sets ``WANDB_MODE`` after W&B has read the environment (W&B then warns
    that the change is ignored); ``mode="offline"`` is what this W&B honours.
    """
    init = {k: v for k, v in kwargs.items() if k not in ("save_dir", "log_model")}
    experiment = None
    if rank_zero_only.rank == 0:
        experiment = init_run(mode, init_timeout, dir=kwargs["save_dir"], **init)
    return WandbLogger(experiment=experiment, offline=mode != "online", save_dir=kwargs["save_dir"],
                       project=kwargs["project"], name=kwargs["name"], log_model=kwargs["log_model"])


def sync_hints(loggers: Sequence[Logger]) -> list[str]:
    """For each W&B run: the ``wandb sync <run folder>`` command of an offline run, or an online run's page.

    Call before :func:`publish_summary` (it finishes the runs); on rank zero."""
    hints = []
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        if getattr(run, "disabled", False):
            continue
        if run.offline:
            hints.append(f"genlab: upload to W&B: wandb sync {Path(run.dir).parent}")
        elif run.url:
            hints.append(f"genlab: W&B run: {run.url}")
    return hints


def publish_summary(loggers: Sequence[Logger], metrics: Mapping[str, Any]) -> None:
    """For each W&B logger: the final metrics as a ``summary/metrics`` table and in the run summary, then
    finish the run (so the next job of a sweep in this process starts its own). Call on rank zero."""
    import wandb

    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        table = wandb.Table(columns=["metric", "value"], data=[[k, v] for k, v in sorted(numbers.items())])
        run.log({"summary/metrics": table})
        run.summary.update({f"final/{k}": v for k, v in numbers.items()})
        run.finish()
