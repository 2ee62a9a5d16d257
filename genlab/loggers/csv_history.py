"""A CSV logger whose ``metrics.csv`` keeps the rows of the run a resumed run continues."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

Row = dict[str, Any]


def row_key(row: Row) -> tuple[int, int, frozenset[str]]:
    """A row's identity: (epoch, step, the names of its non-empty metrics); read-back strings and floats alike."""
    names = frozenset(k for k, v in row.items() if k not in ("epoch", "step") and v not in ("", None))
    return int(float(row.get("epoch") or 0)), int(float(row["step"])), names


def merge_rows(history: list[Row], logged: list[Row]) -> list[Row]:
    """The earlier run's training rows, minus those the resumed run logged again, then the resumed run's rows.

    Dropped from the earlier rows: those logged again (the steps between the checkpoint and the stop, trained once
    more) and the test stage's (a score of the model the resumed run trains on; it tests again at its end).
    """
    redone = {row_key(row) for row in logged}
    kept = []
    for row in history:
        key = row_key(row)
        if key not in redone and not all(name.startswith("test/") for name in key[2]):
            kept.append(row)
    return kept + logged


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``; when the run resumes (``ckpt_path`` set), ``metrics.csv`` keeps the earlier rows.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, so a run resumed in its own folder
    would lose every epoch before the checkpoint. Here the earlier rows are read first and written back ahead
    of the new ones (see :func:`merge_rows`), so the file reads as one uninterrupted run.
    """

    def __init__(self, save_dir: str, name: str = "csv", version: str | int | None = "",
                 flush_logs_every_n_steps: int = 100, ckpt_path: str | None = None) -> None:
        super().__init__(save_dir, name=name, version=version, flush_logs_every_n_steps=flush_logs_every_n_steps)
        self.ckpt_path = ckpt_path
        self._history: list[Row] | None = None  # the earlier rows, until no new row can replace one
        self._logged: list[Row] = []
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if ckpt_path is not None and path.is_file():
            with path.open(newline="") as file:
                self._history = list(csv.DictReader(file))

    @property
    def experiment(self) -> ExperimentWriter:
        with warnings.catch_warnings():
            if self._history is not None:  # the "previous log files will be deleted" warning: they are kept
                warnings.filterwarnings("ignore", message="Experiment logs directory")
            return super().experiment

    @rank_zero_only
    def save(self) -> None:
        writer = self.experiment
        if self._history is None or not writer.metrics:
            super().save()
            return
        self._logged += writer.metrics
        writer.metrics = []
        rows = merge_rows(self._history, self._logged)
        writer.metrics_keys = sorted(set().union(*rows))
        tmp = f"{writer.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as file:
            out = csv.DictWriter(file, fieldnames=writer.metrics_keys)
            out.writeheader()
            out.writerows(rows)
        os.replace(tmp, writer.metrics_file_path)
        if max(row_key(r)[1] for r in self._logged) > max((row_key(r)[1] for r in self._history), default=-1) + 1:
            # Past the earlier run's last step (epoch-end rows go one step back) nothing is logged again: append
            # from now on, as Lightning does.
            self._history, self._logged = None, []
