"""A paper's table as a config: a table file (``conf/table/<name>.yaml`` or any path), its schema checked by
OmegaConf, and its runs' overrides; ``python -m genlab.table`` runs, records and renders it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import II, MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

REPO = Path(__file__).resolve().parents[2]
TABLES = REPO / "conf" / "table"
LENGTH_KEYS = ("trainer.max_epochs", "trainer.max_time")  # all a budget may change in the run it continues
Better = Enum("Better", "higher lower")
X = Enum("X", "step epoch")


class TableError(ValueError):
    """A table file or a command-line choice that cannot be used; the message names the key."""


@dataclass
class Column:
    metric: str = MISSING  # a metrics.json key, e.g. val/modes
    better: Better = MISSING
    label: str = II(".metric")  # default: the metric
    digits: int = 2
    scale: float = 1.0  # 100 for a percentage
    late_change: bool = False  # each run's curve: mean over its last fifth of steps - mean over the fifth before


@dataclass
class Budget:
    share: str = MISSING  # which part of the paper's protocol this is, in words
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = II("...seeds")  # default: the table's
    continues: str | None = None  # a shorter budget whose recorded runs train on to this one's length


@dataclass
class Table:
    title: str = MISSING
    rows: dict[str, list[str]] = MISSING  # label -> overrides
    budgets: dict[str, Budget] = MISSING
    seeds: list[int] = MISSING
    columns: list[Column] = MISSING
    base: list[str] = field(default_factory=list)  # overrides of every run
    source: str = ""  # of the published numbers
    published: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # label -> {metric: [mean, SE or null]}
    curves: list[str] = field(default_factory=list)  # metrics drawn against x from the runs' logs
    x: X = X.step
    show_seeds: bool = False  # a line per seed under each row
    protocol: str = ""
    reading: str = ""
    name: str = ""
    path: Path = Path()

    @property
    def records(self) -> Path:
        """experiments/tables/NAME.jsonl for conf/table/NAME.yaml; beside any other table file."""
        shipped = self.path.parent == TABLES
        return REPO / f"experiments/tables/{self.name}.jsonl" if shipped else self.path.with_suffix(".jsonl")

    @property
    def results(self) -> Path:
        """experiments/RESULTS.md for conf/table/NAME.yaml; beside any other table file."""
        return REPO / "experiments/RESULTS.md" if self.path.parent == TABLES else self.path.with_suffix(".md")

    def recorded(self) -> list[dict[str, Any]]:
        """The records, one dict per recorded run."""
        lines = self.records.read_text().splitlines() if self.records.is_file() else []
        return [json.loads(line) for line in lines if line.strip()]

    def column(self, metric: str) -> Column:
        """The column of ``metric``, or one with the defaults for a metric that is only drawn."""
        return next((c for c in self.columns if c.metric == metric), Column(metric, label=metric))

    def overrides(self, row: str, budget: str) -> list[str]:
        """What a run of ``row`` at ``budget`` sets (the seed apart)."""
        return [*self.base, *self.rows[row], *self.budgets[budget].overrides]

    def args(self, row: str, budget: str, seed: int, extra: Sequence[str] = ()) -> list[str]:
        """The ``python -m genlab`` arguments of a run."""
        return [*self.overrides(row, budget), *extra, f"seed={seed}"]


def total(rec: dict[str, Any], what: str) -> float:
    """Wall or CPU seconds of a recorded run with those of its earlier processes: the ``earlier`` time its checkpoint
    carried (every resume, the run it continued included), or, for runs from before checkpoints carried time, the
    recorded run it continued."""
    prov = rec["provenance"]
    before = prov["earlier"] if prov.get("earlier") else rec.get("continued_from") or {}
    return (prov.get(what) or 0.0) + before.get(what, 0.0)


def table_names() -> list[str]:
    """The tables of conf/table/."""
    return sorted(p.stem for p in TABLES.glob("*.yaml"))


def load_table(name: str) -> Table:
    """The table ``name`` of conf/table/, or the table file at the path ``name``, checked."""
    path = Path(name) if name.endswith((".yaml", ".yml")) or "/" in name else TABLES / f"{name}.yaml"
    if not path.is_file():
        raise TableError(f"table {name!r}: no file {path}; the tables of conf/table/: {', '.join(table_names())}")
    try:  # ${ escaped: the interpolations of overrides (${model.pack}) are genlab's to resolve, in each run
        text = json.dumps(OmegaConf.to_container(OmegaConf.load(path))).replace("${", "\\\\${")
        node = OmegaConf.merge(Table, json.loads(text), {"name": path.stem, "path": path.resolve()})
        table = OmegaConf.to_object(node)
    except OmegaConfBaseException as err:
        raise TableError(f"{path}: {err.full_key}: {str(err.msg).splitlines()[0]}") from None
    check(table)
    return table


def check(t: Table) -> None:
    """What the schema's types cannot say: overrides, published numbers, curves, which budget continues which."""

    def need(ok: Any, key: str, expected: str, got: Any) -> None:
        if not ok:
            raise TableError(f"{t.path.name}: {key}: expected {expected}, got {got!r}")

    lists = {"base": t.base, **{f"rows.{r}": o for r, o in t.rows.items()}}
    for name, b in t.budgets.items():
        lists[f"budgets.{name}.overrides"] = b.overrides
        need(b.continues in (None, *t.budgets) and b.continues != name, f"budgets.{name}.continues",
             f"another of {list(t.budgets)}", b.continues)
        for row in t.rows if b.continues else ():
            mine, theirs = ({key_of(o): o for o in t.overrides(row, x)} for x in (name, b.continues))
            differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k) and k not in LENGTH_KEYS)
            need(not differ, f"budgets.{name}.continues (row {row})",
                 f"budgets that differ in {', '.join(LENGTH_KEYS)} only", differ)
    for key, overrides in lists.items():
        bad = [o for o in overrides if "=" not in o or o.startswith("hydra") or key_of(o) in ("seed", "ckpt_path")]
        need(not bad, key, "KEY=VALUE overrides other than seed, ckpt_path, hydra.* (the runner's)", bad)
    for label, entry in t.published.items():
        numbers = all(isinstance(x, (int, float, type(None))) for v in entry.values() for x in v)
        metrics = [c.metric for c in t.columns if not c.late_change]
        need(numbers and all(m in metrics and len(v) == 2 for m, v in entry.items()),
             f"published.{label}", "{COLUMN METRIC: [mean, standard error or null]}", entry)
    late = [c.metric for c in t.columns if c.late_change]
    need(set(late) <= set(t.curves), "columns (late_change)", f"metrics among curves {t.curves}", late)


def key_of(override: str) -> str:
    """The key an override sets: ``trainer.max_epochs`` of ``+trainer.max_epochs=2``."""
    return override.split("=", 1)[0].lstrip("+~")
