"""A table file (``conf/table/<name>.yaml`` or any path): its schema, checked by OmegaConf, and its runs' overrides."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
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
    label: str | None = None
    digits: int = 2
    scale: float = 1.0  # 100 for a percentage


@dataclass
class Budget:
    share: str = MISSING  # which part of the paper's protocol this is, in words
    overrides: list[str] = field(default_factory=list)
    rows: dict[str, list[str]] = field(default_factory=dict)  # what some rows add at this budget
    seeds: list[int] | None = None  # default: the table's
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
    published: dict[str, Any] = field(default_factory=dict)  # label -> {metric: [mean, standard error or null]}
    curves: list[str] = field(default_factory=list)  # metrics drawn against x from the runs' logs
    x: X = X.step
    late_change: list[str] = field(default_factory=list)  # curves whose change over the second half is shown
    show_seeds: bool = False  # a line per seed under each row
    protocol: str = ""
    reading: str = ""
    name: str = ""
    path: Path = Path()

    @property
    def records(self) -> Path:
        """experiments/tables/NAME.jsonl for conf/table/NAME.yaml; beside any other table file."""
        return REPO / f"experiments/tables/{self.name}.jsonl" if self.path.parent == TABLES else self.path.with_suffix(".jsonl")

    @property
    def results(self) -> Path:
        return REPO / "experiments/RESULTS.md" if self.path.parent == TABLES else self.path.with_suffix(".md")

    def column(self, metric: str) -> Column | None:
        return next((c for c in self.columns if c.metric == metric), None)

    def overrides(self, row: str, budget: str) -> list[str]:
        """What a run of ``row`` at ``budget`` sets (the seed apart)."""
        b = self.budgets[budget]
        return [*self.base, *self.rows[row], *b.overrides, *b.rows.get(row, [])]

    def command(self, row: str, budget: str, seed: int, extra: tuple[str, ...] = ()) -> str:
        words = [*self.overrides(row, budget), *extra, f"seed={seed}"]
        return "python -m genlab " + " ".join(shlex.quote(o) for o in words)


def table_names() -> list[str]:
    return sorted(p.stem for p in TABLES.glob("*.yaml"))


def load_table(name: str) -> Table:
    """The table ``name`` of conf/table/, or the table file at the path ``name``, checked."""
    path = Path(name) if name.endswith((".yaml", ".yml")) or "/" in name else TABLES / f"{name}.yaml"
    if not path.is_file():
        raise TableError(f"table {name!r}: no file {path}; the tables of conf/table/: {', '.join(table_names())}")
    try:
        table = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Table), _escape(yaml.safe_load(path.read_text()))))
    except OmegaConfBaseException as err:
        raise TableError(f"{path}: {err.full_key}: {str(err.msg).splitlines()[0]}") from None
    table.name, table.path = path.stem, path.resolve()
    check(table)
    return table


def _escape(node: Any) -> Any:
    """Overrides may hold interpolations (``${paths.log_dir}``) for genlab to resolve: OmegaConf keeps them as text."""
    if isinstance(node, dict):
        return {k: _escape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_escape(v) for v in node]
    return node.replace("${", "\\${") if isinstance(node, str) else node


def _need(ok: Any, where: str, expected: str, got: Any) -> None:
    if not ok:
        raise TableError(f"{where}: expected {expected}, got {got!r}")


def check(t: Table) -> None:
    """What the schema's types cannot say: overrides, published numbers, curves, which budget continues which."""
    where = t.path.name
    lists = {"base": t.base, **{f"rows.{r}": o for r, o in t.rows.items()}}
    for name, b in t.budgets.items():
        b.seeds = b.seeds or t.seeds
        lists.update({f"budgets.{name}.overrides": b.overrides,
                      **{f"budgets.{name}.rows.{r}": o for r, o in b.rows.items()}})
        _need(set(b.rows) <= set(t.rows), f"{where}: budgets.{name}.rows", f"rows among {list(t.rows)}", list(b.rows))
    for at, overrides in lists.items():
        bad = [o for o in overrides if "=" not in o or o.startswith("hydra") or
               o.split("=", 1)[0].lstrip("+~") in ("seed", "ckpt_path")]
        _need(not bad, f"{where}: {at}", "KEY=VALUE overrides other than seed, ckpt_path, hydra.* (the runner's)", bad)
    for label, entry in t.published.items():
        _need(isinstance(entry, dict) and all(t.column(m) and isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, (int, float, type(None))) for x in v) for m, v in entry.items()),
            f"{where}: published.{label}", "{COLUMN METRIC: [mean, standard error or null]}", entry)
    _need(set(t.late_change) <= set(t.curves), f"{where}: late_change", f"metrics among curves {t.curves}",
          t.late_change)
    for name, b in t.budgets.items():
        at = f"{where}: budgets.{name}.continues"
        _need(b.continues in (None, *t.budgets) and b.continues != name, at, f"another of {list(t.budgets)}",
              b.continues)
        for row in t.rows if b.continues else ():
            mine, theirs = ({o.split("=", 1)[0]: o for o in t.overrides(row, x)} for x in (name, b.continues))
            differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k) and k not in LENGTH_KEYS)
            _need(not differ, f"{at} (row {row})", f"budgets that differ in {', '.join(LENGTH_KEYS)} only", differ)


def slug(label: str) -> str:
    """A row label as a folder name."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_") or "row"
