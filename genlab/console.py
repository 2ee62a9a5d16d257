"""What a run prints: a one-line header, the final metrics as a short table, how to continue and upload the run.

Third-party notices that ask nothing of the user are dropped, each by its logger (or warning category) and its
exact text, so every other message of those libraries still shows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

# Logger name -> starts of the notices it emits that carry nothing to act on.
DROPPED_NOTICES: dict[str, tuple[str, ...]] = {
    "lightning.fabric.utilities.seed": ("Seed set to ",),  # the header names the seed
    "lightning.pytorch.utilities.rank_zero": (
        "💡 Tip: For seamless cloud logging",  # an advertisement for another logger
        "GPU available: False, used: False",  # nothing to choose; "GPU available: True, used: False" still shows
        "TPU available: False, using: 0 TPU cores",
        "`Trainer.fit` stopped: `max_epochs=",  # the normal end (a max_steps or max_time stop still shows)
    ),
}
# Lightning 2.6 builds torch pytree LeafSpecs, which torch 2.13 deprecates: nothing a genlab user can change.
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
SPLITS = ("train", "val", "test")


class DropNotices(logging.Filter):
    """Drops the log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def drop_notices() -> None:
    """Install the filters for :data:`DROPPED_NOTICES` and the LeafSpec deprecation warning (idempotent)."""
    for name, prefixes in DROPPED_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) for f in logger.filters):
            logger.addFilter(DropNotices(prefixes))
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)


def count(n: int) -> str:
    """A parameter count in the style of Lightning's summary: 812, 99.7 K, 1.2 M."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def header(data: str, model: str, n_params: int, seed: int, run_dir: Any) -> str:
    """The first line of a run: what trains on what, and where its files go."""
    return f"genlab: {model} ({count(n_params)} parameters) on {data}, seed {seed} -> run folder {run_dir}"


def metrics_table(metrics: Mapping[str, Any], digits: int = 4) -> list[str]:
    """Final metrics as rows (metric name) x columns (train, val, test, other prefixes).

    Lightning's ``_step``/``_epoch`` twins of a metric are left out when the metric itself is there.
    """
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if "/" not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        split, name = key.split("/", 1)
        base = name.removesuffix("_step").removesuffix("_epoch")
        if base != name and f"{split}/{base}" in metrics:
            continue
        table.setdefault(name, {})[split] = float(value)
    if not table:
        return []
    present = {split for row in table.values() for split in row}
    columns = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    width = max(len(name) for name in table) + 2
    lines = ["  " + "metric".ljust(width) + "".join(c.rjust(12) for c in columns)]
    for name, row in table.items():
        cells = "".join((f"{row[c]:.{digits}g}" if c in row else "").rjust(12) for c in columns)
        lines.append("  " + name.ljust(width) + cells)
    return lines


def final_report(metrics: Mapping[str, Any], hints: Iterable[str]) -> str:
    """The lines printed when a run ends: the metrics table, then one line per hint."""
    table = metrics_table(metrics)
    lines = (["genlab: final metrics", *table] if table else []) + list(hints)
    return "\n".join(lines)
