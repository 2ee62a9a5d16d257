"""A table's section of its results file and its curves, rebuilt from the table file and its records alone."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genlab.compare.curves import late_change, mean_curve, plot_panels
from genlab.compare.groups import Stat
from genlab.compare.table import format_markdown, write_section
from genlab.provenance import describe
from genlab.table import Better, Column, Table, X, total

Records = Sequence[dict[str, Any]]
VERDICT = "*within 2 SE* when |measured − published| ≤ 2 √(SE² + SE_published²), else *better* or *worse*"


def grouped(table: Table, records: Records) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The records by (budget, row) in the table's order, each group by seed; groups without records left out."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {(b, r): [] for b in table.budgets for r in table.rows}
    for rec in sorted(records, key=lambda r: r["seed"]):
        if (rec["budget"], rec["row"]) in groups:  # rows and budgets no longer in the table are left out
            groups[rec["budget"], rec["row"]].append(rec)
    return {key: recs for key, recs in groups.items() if recs}


def pm(mean: float, se: float | None, digits: int) -> str:
    """A published ``mean ± se``, or the mean alone."""
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def value(rec: dict[str, Any], column: Column) -> float:
    """A run's final ``column.metric``; for a ``late_change`` column, its curve's mean over the last fifth of the
    steps minus the mean over the fifth before it (the plateau test: near 0 once the curve has flattened)."""
    if not column.late_change:
        return rec["metrics"].get(column.metric, math.nan)
    change = late_change(rec["curve"].get(column.metric, []))
    return math.nan if change is None else change


def cost(table: Table, recs: Records) -> str:
    """Length, wall time per run and in all, load, machine, notes, commit (and whether dirty), continuation."""
    parts = ["/".join(sorted({str(r["epochs"]) for r in recs}, key=int)) + " epochs"]
    steps = sorted({r["curve"][m][-1][0] for r in recs for m in table.curves[:1] if r["curve"].get(m)})
    if table.x == X.step and steps:
        parts[0] += f", {'/'.join(f'{s:,}' for s in steps)} steps"
    walls = [total(r, "wall_s") for r in recs if r["provenance"].get("wall_s") is not None]
    parts += [f"{sum(walls) / len(walls) / 60:.1f} min/run ({sum(walls) / 3600:.2f} h in all)"] if walls else []
    parts += describe([r["provenance"] for r in recs], [r["seed"] for r in recs])
    earlier = "/".join(sorted({r["continued_from"]["budget"] for r in recs if r.get("continued_from")}))
    return "; ".join(parts + ([f"continues the {earlier} runs (cost of both)"] if earlier else []))


def rows(table: Table, records: Records) -> tuple[list[str], list[list[str]]]:
    """The Markdown table: per (budget, row) mean ± SE over seeds, the published numbers and the verdict."""
    pub = bool(table.published)
    head = ["row", "budget", *(c.label for c in table.columns)]
    head += [f"published ({table.source})" if table.source else "published", "verdict"] * pub
    head += ["seeds", "cost", "command (first seed)"]
    out = []
    for (budget, row), recs in grouped(table, records).items():
        seed_lines = [(f"{row}, seed {r['seed']}", [r]) for r in recs if table.show_seeds and len(recs) > 1]
        for label, runs in [(row, recs), *seed_lines]:  # the mean in bold, then a line per seed if asked
            mean = runs is recs
            stats = [(Stat.of([value(r, c) * c.scale for r in runs]), c,
                      None if c.late_change else table.published.get(row, {}).get(c.metric)) for c in table.columns]
            cells = [f"**{s.cell(c.digits)}**" if mean else s.cell(c.digits) for s, c, _ in stats]
            if pub:
                cells += [" / ".join(pm(*p, c.digits) for _, c, p in stats if p) or "–",
                          " / ".join(s.verdict(*p, c.better == Better.higher) for s, c, p in stats if p) or "–"] \
                    if mean else ["", ""]
            seeds = ", ".join(str(r["seed"]) for r in runs)
            out.append([label, budget, *cells, seeds, cost(table, runs), f"`{runs[0]['command']}`"])
    for name, entry in table.published.items():  # published lines of their own: references, other papers
        if name not in table.rows:
            cells = [pm(*entry[c.metric], c.digits) if c.metric in entry and not c.late_change else "–"
                     for c in table.columns]
            out.append([name, "published", *cells, *[""] * (len(head) - len(cells) - 2)])
    return head, out


def draw(table: Table, records: Records, path: Path) -> None:
    """One panel per curve metric, one line per (row, budget): the mean over seeds with a ±1 std band."""
    panels = []
    for column in map(table.column, table.curves):
        curves = []
        for (budget, row), recs in grouped(table, records).items():
            points = [[(x, v * column.scale) for x, v in r["curve"][column.metric]] for r in recs
                      if r["curve"].get(column.metric)]
            curves += [mean_curve(f"{row} ({budget})", points)] if points else []
        panels += [(column.label, curves)] if curves else []
    if panels:
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_panels(path, panels, x_label=table.x.name, title=table.title)


def section(table: Table, records: Records, results: Path) -> str:
    """The table's section of ``results``: title, protocol, table, budgets, curves, reading, where the rows are."""
    done = {r["budget"] for r in records}
    budgets = "; ".join(f"`{name}`: {b.share}" + " (not run yet)" * (name not in done)
                        for name, b in table.budgets.items())
    verdict = f"; verdict per metric: {VERDICT}." if table.published else "."
    text = [f"### {table.title}", "", table.protocol, "", format_markdown(*rows(table, records)),
            f"Budgets: {budgets}.", f"Each cell: the mean ± standard error over the seeds{verdict}"]
    if any(r["curve"].get(m) for r in records for m in table.curves):
        text += ["", f"![{table.name} curves](curves/{table.name}.png)"]
    if table.reading:
        text += ["", f"*Reading:* {table.reading}"]
    return "\n".join([*text, "", f"Rows from `{os.path.relpath(table.records, results.parent)}` ({len(records)} runs): "
                      f"`python -m genlab.table run {table.name} --budget BUDGET` adds runs, `render {table.name}` "
                      "rewrites this section."])


def render(table: Table, results: Path | None = None) -> Path:
    """Rewrite the table's section of ``results`` (default: the table's results file) and its curves PNG."""
    results = results or table.results
    records = table.recorded()
    draw(table, records, results.parent / "curves" / f"{table.name}.png")
    write_section(results, f"table:{table.name}", section(table, records, results))
    return results
