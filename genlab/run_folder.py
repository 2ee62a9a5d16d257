"""Run folders: every run gets its own (time stamp + a short random id), and no run writes into another's.

``hydra.run.dir`` and ``hydra.sweep.dir`` end in ``${run_id:}``: six random hex digits, drawn once per launch
(the resolver is cached, so a run's folder and a sweep's jobs agree on it). Two runs started in the same second
therefore get two folders. A folder that already holds a run's results is refused unless the new run resumes
that run (``ckpt_path=last``, or a checkpoint inside the folder).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from genlab.checks import ConfigError

RUN_ID_HEX_DIGITS = 6  # 16.7 M ids: two runs started in the same second collide with odds of 1 in 16.7 M


def new_run_id() -> str:
    """A short random id from the OS entropy pool (never from the seeded RNGs, which every run of a seed shares)."""
    return secrets.token_hex(RUN_ID_HEX_DIGITS // 2)


def register_run_id_resolver() -> None:
    """Register ``${run_id:}`` (cached: one id per composed config, copied to a sweep's job configs by Hydra)."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", new_run_id, use_cache=True)


def earlier_results(folder: Path) -> list[str]:
    """The results of an earlier run in ``folder``: metrics.json, checkpoints, pictures (paths relative to it)."""
    found = ["metrics.json"] if (folder / "metrics.json").is_file() else []
    for pattern in ("checkpoints/*.ckpt", "images/*.png"):
        found += sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))
    return found


def resumes(folder: Path, ckpt_path: str | None) -> bool:
    """Whether ``ckpt_path`` continues the run in ``folder``: ``last``, or a checkpoint file inside it."""
    if ckpt_path is None:
        return False
    return ckpt_path == "last" or Path(ckpt_path).resolve().is_relative_to(folder.resolve())


def check_run_folder(folder: Path, ckpt_path: str | None, key: str = "hydra.run.dir") -> None:
    """Refuse ``folder`` when it holds another run's results and this run does not resume that run."""
    found = earlier_results(folder)
    if found and not resumes(folder, ckpt_path):
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(
            f"{key}: the run folder {folder} already holds another run ({shown}); genlab does not write over it. "
            f"Continue that run with ckpt_path=last (and the same {key}), or leave {key} out (or pick a new "
            f"folder) to start a new run."
        )


class RunFolderGuard(Callback):
    """Hydra callback: a single run checks its folder before Hydra writes its ``.hydra/`` config there.

    Sweep jobs are checked by ``genlab.train`` (Hydra names a job's folder only when the job starts).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_run_folder(Path(str(config.hydra.run.dir)), config.get("ckpt_path"))
        except ConfigError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"genlab: error: {err}", file=sys.stderr)
            sys.exit(2)
