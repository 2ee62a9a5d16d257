"""Runs grouped by config keys (``--by model,model.beta``): per metric the mean, the sample standard deviation
and the standard error of the mean over the group's runs (usually its seeds), with the number of runs n."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genlab.compare.runs import Run, differing_keys, finite, select_metrics
from genlab.compare.table import format_value, sort_rows

N_COLUMN = "n"


@dataclass(frozen=True)
class Stat:
    """mean, sample std (ddof=1; NaN for n < 2) and standard error std/sqrt(n) of n finite values."""

    mean: float
    std: float
    sem: float
    n: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> Stat:
        """The statistics of the finite numbers among ``values`` (missing and NaN values are left out)."""
        xs = [float(v) for v in values if finite(v)]
        n = len(xs)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = math.fsum(xs) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
        return cls(mean, std, std / math.sqrt(n), n)

    def cell(self, digits: int) -> str:
        """``mean ± sem`` with ``digits`` decimals (the mean alone for one value), ``–`` for none."""
        if self.n == 0:
            return "–"
        return f"{self.mean:.{digits}f}" + (f" ± {self.sem:.{digits}f}" if self.n > 1 else "")

    def verdict(self, mean: float, se: float | None, higher_is_better: bool) -> str:
        """Against a published ``mean ± se``: 'within 2 SE' when |difference| <= 2 sqrt(sem² + se²) (a missing
        standard error, or one value, counts as 0), else 'better' or 'worse'."""
        sem = self.sem if self.n > 1 else 0.0
        if abs(self.mean - mean) <= 2 * math.hypot(sem, se or 0.0):
            return "within 2 SE"
        return "better" if (self.mean > mean) == higher_is_better else "worse"

    def text(self, n_group: int) -> str:
        """``mean ± std (se sem)``, with ``n=`` when fewer runs than the group's have the metric."""
        if self.n == 0:
            return "-"
        out = format_value(self.mean)
        if self.n > 1:
            out += f" ± {self.std:.3g} (se {self.sem:.2g})"
        return out + (f" n={self.n}" if self.n != n_group else "")


def _key_value(run: Run, key: str) -> Any:
    # metrics.json also holds the model, data and seed of a run: a fallback for folders without .hydra/
    return run.config.get(key, run.metrics.get(key))


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> dict[tuple[str, ...], list[Run]]:
    """The runs by their values of ``keys`` (JSON text, so lists group too), groups in first-seen order."""
    known = {k for run in runs for k in (*run.config, *run.metrics)}
    for key in keys:
        if key not in known:
            raise KeyError(f"--by {key!r} is no config key of these runs; keys that differ between them: "
                           f"{differing_keys(runs)}")
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        value = tuple(json.dumps(_key_value(run, k), sort_keys=True, default=str) for k in keys)
        groups.setdefault(value, []).append(run)
    return groups


def mixed_keys(groups: dict[tuple[str, ...], list[Run]], keys: Sequence[str]) -> list[str]:
    """Config keys other than ``keys`` and ``seed`` that differ inside some group: the group mixes settings."""
    mixed: set[str] = set()
    for members in groups.values():
        mixed.update(k for k in differing_keys(members) if k not in keys and k != "seed")
    return sorted(mixed)


def build_group_table(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str] | None = None,
                      sort: str | None = None, descending: bool = False) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): the ``keys`` values, the group size n, then one :class:`Stat` per chosen metric."""
    chosen = select_metrics(runs, metrics)
    if sort and sort not in chosen:
        chosen += select_metrics(runs, [sort])
    header = [*keys, N_COLUMN, *chosen]
    rows = [
        [*(json.loads(v) for v in value), len(members), *(Stat.of([r.metrics.get(m) for r in members]) for m in chosen)]
        for value, members in group_runs(runs, keys).items()
    ]
    if sort:
        sort_rows(rows, header.index(sort), descending, number=lambda stat: stat.mean)
    return header, rows


def display_rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The rows with each :class:`Stat` as ``mean ± std (se sem)`` text, for the text and Markdown tables."""
    n_col = list(header).index(N_COLUMN)
    return [[v.text(row[n_col]) if isinstance(v, Stat) else v for v in row] for row in rows]


def csv_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows with four numeric columns per metric: ``M mean``, ``M std``, ``M sem``, ``M n``."""
    n_col = list(header).index(N_COLUMN)
    out_header = [*header[: n_col + 1]]
    for name in header[n_col + 1 :]:
        out_header += [f"{name} mean", f"{name} std", f"{name} sem", f"{name} n"]
    out_rows = []
    for row in rows:
        out = list(row[: n_col + 1])
        for stat in row[n_col + 1 :]:
            out += [None if not finite(x) else x for x in (stat.mean, stat.std, stat.sem)] + [stat.n]
        out_rows.append(out)
    return out_header, out_rows
