"""A table's section of its results file and its curves, rebuilt from the table file and its records alone."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genlab.compare.curves import late_change, mean_curve, plot_panels
from genlab.compare.groups import Stat
from genlab.compare.table import format_markdown, write_section
from genlab.table.runner import read_records, total
from genlab.table.spec import Better, Column, Table, X

Records = Sequence[dict[str, Any]]


def value(rec: dict[str, Any], column: Column) -> float | None:
    raw = rec["metrics"].get(column.metric)
    return None if raw is None else raw * column.scale


def pm(mean: float, se: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def label(table: Table, metric: str) -> str:
    column = table.column(metric)
    return (column.label if column else None) or metric


def late_cell(table: Table, recs: Records) -> str:
    """Mean over the runs of each late_change curve's last value minus its value near half the run, and where."""
    cells, halves = [], []
    for metric in table.late_change:
        changes = [late_change(r["curve"].get(metric, [])) for r in recs]
        if None in changes:
            return "–"
        column = table.column(metric)
        scale, digits = (column.scale, column.digits) if column else (1.0, 2)
        cells.append(f"{scale * sum(c[0] for c in changes) / len(changes):+.{digits}f}")
        halves.append(round(sum(c[1] for c in changes) / len(changes)))
    return f"{' / '.join(cells)} since {halves[0]:,}"


def cost(table: Table, recs: Records) -> str:
    """Length, wall time per run and in all, load, machine, notes, commit (and whether dirty), continuation."""
    prov = [r["provenance"] for r in recs]
    parts = ["/".join(sorted({str(r["epochs"]) for r in recs}, key=int)) + " epochs"]
    steps = sorted({r["curve"][m][-1][0] for r in recs for m in table.curves[:1] if r["curve"].get(m)})
    if table.x == X.step and steps:
        parts[0] += f", {'/'.join(f'{s:,}' for s in steps)} steps"
    walls = [total(r, "wall_s") for r in recs if r["provenance"].get("wall_s") is not None]
    if walls:
        parts.append(f"{sum(walls) / len(walls) / 60:.1f} min/run ({sum(walls) / 3600:.2f} h in all)")
    threads = sorted({str(p["threads"]) for p in prov if p.get("threads")})
    if threads:
        parts.append(f"{'/'.join(threads)} thread{'s' * (threads != ['1'])}/run")
    loads = [v for p in prov for v in (p.get("load") or {}).values()]
    if loads:
        parts.append(f"load average {min(loads):.1f}-{max(loads):.1f}")
    parts += dict.fromkeys(p[k] for k in ("machine", "note") for p in prov if p.get(k))
    dirty = ", ".join(str(r["seed"]) for r in recs if r["provenance"].get("dirty"))
    commits = ", ".join(c for c in dict.fromkeys(p.get("commit") for p in prov) if c) or "not recorded"
    parts.append(f"commit {commits}" + (f" with uncommitted changes (seeds {dirty})" if dirty else ""))
    earlier = "/".join(sorted({r["continued_from"]["budget"] for r in recs if r.get("continued_from")}))
    if earlier:
        parts.append(f"continues the {earlier} runs (cost of both)")
    return "; ".join(parts)


def rows(table: Table, records: Records) -> tuple[list[str], list[list[str]]]:
    """The Markdown table: per (budget, row) mean ± SE over seeds, the published numbers and the verdict."""
    pub, late = bool(table.published), bool(table.late_change)
    head = ["row", "budget", *(c.label or c.metric for c in table.columns)]
    if pub:
        head += [f"published ({table.source})" if table.source else "published", "verdict"]
    if late:
        head.append(f"late change ({' / '.join(label(table, m) for m in table.late_change)})")
    head += ["seeds", "cost", "command (first seed)"]
    out = []
    for budget in table.budgets:
        for row in table.rows:
            recs = sorted((r for r in records if (r["row"], r["budget"]) == (row, budget)), key=lambda r: r["seed"])
            if not recs:
                continue
            stats = [Stat.of([value(r, c) for r in recs]) for c in table.columns]
            cells = [f"**{s.cell(c.digits)}**" for s, c in zip(stats, table.columns)]
            if pub:
                mine = [(s, c, table.published.get(row, {}).get(c.metric)) for s, c in zip(stats, table.columns)]
                cells += [" / ".join(pm(*p, c.digits) for _, c, p in mine if p) or "–",
                          " / ".join(s.verdict(*p, c.better == Better.higher) for s, c, p in mine if p) or "–"]
            if late:
                cells.append(late_cell(table, recs))
            seeds = ", ".join(str(r["seed"]) for r in recs)
            out.append([row, budget, *cells, seeds, cost(table, recs), f"`{recs[0]['command']}`"])
            for r in recs if table.show_seeds and len(recs) > 1 else []:
                values = [Stat.of([value(r, c)]).cell(c.digits) for c in table.columns]
                out.append([f"{row}, seed {r['seed']}", budget, *values, *[""] * (2 * pub + late), str(r["seed"]),
                            cost(table, [r]), f"`{r['command']}`"])
    for name, entry in table.published.items():  # published lines of their own: references, other papers
        if name not in table.rows:
            cells = [pm(*entry[c.metric], c.digits) if c.metric in entry else "–" for c in table.columns]
            out.append([name, "published", *cells, *[""] * (len(head) - len(cells) - 2)])
    return head, out


def draw(table: Table, records: Records, path: Path) -> None:
    """One panel per curve metric, one line per (row, budget): the mean over seeds with a ±1 std band."""
    panels = []
    for metric in table.curves:
        scale = table.column(metric).scale if table.column(metric) else 1.0
        curves = []
        for budget in table.budgets:
            for row in table.rows:
                points = [[(x, v * scale) for x, v in r["curve"][metric]] for r in records
                          if (r["row"], r["budget"]) == (row, budget) and r["curve"].get(metric)]
                curves += [mean_curve(f"{row} ({budget})", points)] if points else []
        panels += [(label(table, metric), curves)] if curves else []
    if panels:
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_panels(path, panels, x_label=table.x.name, title=table.title)


def section(table: Table, records: Records, results: Path) -> str:
    """The table's section of ``results``: title, protocol, table, budgets, curves, reading, where the rows are."""
    done = {r["budget"] for r in records}
    text = [f"### {table.title}", "", table.protocol, "", format_markdown(*rows(table, records)),
            "Budgets: " + "; ".join(f"`{name}`: {b.share}" + " (not run yet)" * (name not in done)
                                    for name, b in table.budgets.items()) + ".",
            "Each cell: the mean ± standard error over the seeds" + ("; verdict per metric: *within 2 SE* when "
            "|measured − published| ≤ 2 √(SE² + SE_published²), else *better* or *worse*." if table.published else ".")]
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
    records = read_records(table)
    draw(table, records, results.parent / "curves" / f"{table.name}.png")
    write_section(results, f"table:{table.name}", section(table, records, results))
    return results
