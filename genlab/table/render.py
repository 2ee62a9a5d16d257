"""A table's section of its results file (between ``<!-- table:NAME -->`` markers) and its curve PNG, rebuilt from
the table file and its records alone: mean ± standard error over seeds, the published numbers, the verdict."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genlab.compare.curves import late_change, mean_curve, plot_panels
from genlab.compare.groups import Stat
from genlab.table.runner import _total, read_records
from genlab.table.spec import Better, Column, Table, X


def value(rec: dict[str, Any], column: Column) -> float | None:
    """The run's value of ``column``, scaled: its final metric, or its curve's value at the point ``at``."""
    if column.at is None:
        raw = rec["metrics"].get(column.metric)
    else:
        raw = next((v for x, v in rec["curve"].get(column.metric, []) if x == column.at), None)
    return None if raw is None else raw * column.scale


def number(mean: float, se: float | None, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if se is None or math.isnan(se) else f" ± {se:.{digits}f}")


def verdict(ours: Stat, published: tuple[float, float | None], higher: bool) -> str:
    """'within 2 SE' when |ours - published| <= 2 sqrt(SE² + SE_published²) (a missing SE counts as 0), else
    'better' or 'worse'."""
    (p, pse), se = published, 0.0 if math.isnan(ours.sem) else ours.sem
    if abs(ours.mean - p) <= 2 * math.hypot(se, pse or 0.0):
        return "within 2 SE"
    return "better" if (ours.mean > p) == higher else "worse"


def late_cell(table: Table, recs: Sequence[dict[str, Any]]) -> str:
    """Mean over the runs of each late_change metric's last value minus the one near half the run, and where."""
    cells, since = [], []
    for metric in table.late_change:
        changes = [late_change(r["curve"].get(metric, [])) for r in recs]
        if None in changes:
            return "–"
        column = table.column(metric)
        scale, digits = (column.scale, column.digits) if column else (1.0, 2)
        cells.append(f"{scale * sum(c[0] for c in changes) / len(changes):+.{digits}f}")
        since.append(round(sum(c[1] for c in changes) / len(changes)))
    return f"{' / '.join(cells)} since {since[0]:,}" if cells else ""


def cost(table: Table, recs: Sequence[dict[str, Any]]) -> str:
    """Length, wall time per run and in all, threads, load, machine and commit of the runs."""
    prov = [r["provenance"] for r in recs]
    text = "/".join(sorted({str(r["epochs"]) for r in recs}, key=int)) + " epochs"
    first = table.curves[0] if table.curves else ""
    steps = sorted({r["curve"][first][-1][0] for r in recs if r["curve"].get(first)})
    if table.x == X.step and steps:
        text += f", {'/'.join(f'{s:,}' for s in steps)} steps"
    walls = [_total(r, "wall_s") for r in recs if r["provenance"].get("wall_s") is not None]
    if walls:
        text += f"; {sum(walls) / len(walls) / 60:.1f} min/run ({sum(walls) / 3600:.2f} h in all)"
    threads = sorted({p["threads"] for p in prov if p.get("threads")})
    text += f", {'/'.join(map(str, threads))} thread{'s' * (threads != [1])}/run" if threads else ""
    loads = [p["load"] for p in prov if p.get("load")]
    if loads:
        text += "; load " + ", ".join(
            f"{(max if k == 'max' else lambda v: sum(v) / len(v))([d[k] for d in loads if k in d]):.1f} {k}"
            for k in loads[0])
    for part in ("machine", "note"):
        text += "".join(f"; {v}" for v in dict.fromkeys(p[part] for p in prov if p.get(part)))
    commits = ", ".join(dict.fromkeys(str(p.get("commit")) for p in prov))
    dirty = [str(r["seed"]) for r in recs if r["provenance"].get("dirty")]
    text += f"; commit {commits}" + (f" with uncommitted changes (seeds {', '.join(dirty)})" if dirty else "")
    earlier = sorted({r["continued_from"]["budget"] for r in recs if r.get("continued_from")})
    return text + (f"; continues the {'/'.join(earlier)} runs (cost of both)" if earlier else "")


def lines(table: Table, records: list[dict[str, Any]]) -> list[str]:
    """The Markdown table: per (budget, row) mean ± SE over seeds, beside the published numbers."""
    pub = bool(table.published)
    head = ["row", "budget", *(c.label or c.metric for c in table.columns)]
    head += [f"published ({table.source})" if table.source else "published", "verdict"] if pub else []
    head += [f"late change ({' / '.join(table.late_change)})"] if table.late_change else []
    head += ["seeds", "cost", "command (first seed)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for budget in table.budgets:
        for row in table.rows:
            recs = sorted((r for r in records if (r["row"], r["budget"]) == (row, budget)), key=lambda r: r["seed"])
            if not recs:
                continue
            stats = [Stat.of([value(r, c) for r in recs]) for c in table.columns]
            cells = [f"**{number(s.mean, s.sem, c.digits)}**" for s, c in zip(stats, table.columns)]
            if pub:
                mine = table.published.get(row, {})
                cells += [_published(table, mine), " / ".join(verdict(s, mine[c.metric], c.better == Better.higher)
                                                              for s, c in zip(stats, table.columns)
                                                              if c.metric in mine) or "–"]
            cells += [late_cell(table, recs)] if table.late_change else []
            seeds = ", ".join(str(r["seed"]) for r in recs)
            out.append(f"| {row} | {budget} | " + " | ".join(cells) + f" | {seeds} | {cost(table, recs)} | "
                       f"`{recs[0]['command']}` |")
            for r in recs if table.show_seeds and len(recs) > 1 else []:
                values = [number(v, None, c.digits) if (v := value(r, c)) is not None else "–" for c in table.columns]
                blank = [""] * (2 * pub + bool(table.late_change))
                out.append(f"| {row}, seed {r['seed']} | {budget} | " + " | ".join([*values, *blank]) +
                           f" | {r['seed']} | {cost(table, [r])} | `{r['command']}` |")
    for label, entry in table.published.items():  # published lines of their own: references, other papers
        if label not in table.rows:
            cells = [number(*entry[c.metric], c.digits) if c.metric in entry else "–" for c in table.columns]
            empty = [""] * (len(head) - len(cells) - 3)
            out.append(f"| {label} | published | " + " | ".join([*cells, table.source, *empty]) + " |")
    return out


def _published(table: Table, entry: dict[str, tuple[float, float | None]]) -> str:
    return " / ".join(number(*entry[c.metric], c.digits) for c in table.columns if c.metric in entry) or "–"


def draw(table: Table, records: list[dict[str, Any]], path: Path) -> bool:
    """One panel per curve metric, one line per (row, budget): the mean over seeds with a ±1 std band."""
    panels = []
    for metric in table.curves:
        column = table.column(metric)
        label, scale = (column.label or metric, column.scale) if column else (metric, 1.0)
        curves = []
        for budget in table.budgets:
            for row in table.rows:
                points = [[(x, v * scale) for x, v in r["curve"][metric]] for r in records
                          if (r["row"], r["budget"]) == (row, budget) and r["curve"].get(metric)]
                curves += [mean_curve(f"{row} ({budget})", points)] if points else []
        panels += [(label, curves)] if curves else []
    if panels:
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_panels(path, panels, x_label=table.x.name, title=table.title)
    return bool(panels)


def section(table: Table, records: list[dict[str, Any]], results: Path) -> str:
    """The table's whole section: title, protocol, table, budgets, curves, reading, where the rows come from."""
    text = [f"### {table.title}", "", table.protocol.strip(), "", *lines(table, records), ""]
    run = {r["budget"] for r in records}
    text.append("Budgets: " + "; ".join(f"`{name}`: {b.share}" + ("" if name in run else " (not run yet)")
                                        for name, b in table.budgets.items()) + ".")
    text.append("Each cell: mean ± standard error over the seeds (n − 1 in the standard deviation)" + (
        "; verdict per metric: *within 2 SE* when |measured − published| ≤ 2 √(SE² + SE_published²), else *better*"
        " or *worse*." if table.published else "."))
    png = results.parent / "curves" / f"{table.name}.png"
    if draw(table, records, png):
        text += ["", f"![{table.name} curves]({os.path.relpath(png, results.parent)})"]
    text += ["", f"*Reading:* {table.reading.strip()}"] if table.reading else []
    where = os.path.relpath(table.records, results.parent)
    text += ["", f"Rows from `{where}` ({len(records)} runs); `python -m genlab.table run {table.name} --budget "
                 f"BUDGET` adds runs, `python -m genlab.table render {table.name}` rewrites this section."]
    return "\n".join(text).replace("\n\n\n", "\n\n")


def render(table: Table, results: Path | None = None) -> Path:
    """Rewrite the table's section of ``results`` (default: the table's) between its markers, or append it."""
    results = results or table.results
    body = section(table, read_records(table), results)
    start, end = f"<!-- table:{table.name} -->", f"<!-- /table:{table.name} -->"
    old = results.read_text() if results.is_file() else "# Results\n"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old, count=1) if pattern.search(old) else old.rstrip("\n") + f"\n\n{block}\n"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(new)
    return results
