"""Run folders: every folder holding a ``metrics.json`` below a DIR, with its flattened config.

A run's config is ``.hydra/config.yaml`` flattened to dotted keys plus the config-group choices of
``.hydra/hydra.yaml`` (``model``, ``data``, ...); keys equal across all runs and path-like keys (output
folders, checkpoint paths) are dropped by :func:`differing_keys`, so a table shows what was varied.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Keys whose values are locations, not experimental choices: they differ between any two runs.
PATH_LIKE = re.compile(r"(^|\.)(paths|hydra)(\.|$)|(dir|dirpath|_path|save_dir|root)$")
RUN_COLUMN = "run"


@dataclass
class Run:
    """One run folder: its flattened config (group choices included) and its metrics.json."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()  # the config keys that are group choices (model, data, ...)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists stay whole values (shown as text)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _read_yaml(path: Path) -> Any:
    # Hydra writes plain YAML; interpolations (${...}) stay strings, which is what the table shows.
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def read_run(folder: Path) -> Run:
    """The run in ``folder`` (which holds metrics.json); a missing .hydra/ gives an empty config."""
    metrics = json.loads((folder / "metrics.json").read_text())
    config = flatten(_read_yaml(folder / ".hydra" / "config.yaml") or {})
    hydra_cfg = _read_yaml(folder / ".hydra" / "hydra.yaml") or {}
    choices = (hydra_cfg.get("hydra") or {}).get("runtime", {}).get("choices", {}) or {}
    groups = tuple(g for g in choices if not g.startswith("hydra/"))
    for group in groups:
        config[group] = choices[group]  # the option chosen for a config group, e.g. model=vae
    return Run(folder, config, metrics, groups)


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every run folder at or below ``dirs`` (each holding metrics.json), in path order without duplicates."""
    folders: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"{d}: no such folder")
        for metrics_file in sorted(d.rglob("metrics.json"), key=lambda p: _natural_key(str(p))):
            folders[metrics_file.parent.resolve()] = None
    return [read_run(folder) for folder in folders]


def _natural_key(text: str) -> list[Any]:
    # Sweep jobs are numbered folders: 2 before 10.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _varies(runs: Sequence[Run], key: str) -> bool:
    return len({json.dumps(run.config.get(key), sort_keys=True, default=str) for run in runs}) > 1


def _explained_by_choice(runs: Sequence[Run], key: str, group: str) -> bool:
    # model.beta differs between model=ae and model=vae runs only because the group option differs.
    by_option: dict[str, list[Run]] = {}
    for run in runs:
        by_option.setdefault(json.dumps(run.config.get(group), default=str), []).append(run)
    return all(not _varies(members, key) for members in by_option.values())


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (absent counts as a value), paths excluded, and
    keys below a differing group choice left out when runs with the same option agree on them (the option
    explains them: ``model=ae,vae`` shows ``model``, not the VAE's extra keys)."""
    if len(runs) < 2:
        return []
    keys = [k for k in sorted({k for run in runs for k in run.config if not PATH_LIKE.search(k)}) if _varies(runs, k)]
    groups = {g for run in runs for g in run.groups if g in keys}
    return [
        k for k in keys
        if not any(k.startswith(g.replace("/", ".") + ".") and _explained_by_choice(runs, k, g) for g in groups)
    ]


def metric_names(runs: Sequence[Run]) -> list[str]:
    """The numeric metrics of the runs (``stage/name`` keys of metrics.json), sorted."""
    return sorted({k for run in runs for k, v in run.metrics.items() if "/" in k and isinstance(v, (int, float))})


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's folder relative to the runs' common parent (a sweep job shows as e.g. ``multiruns/x/3``)."""
    paths = [run.path for run in runs]
    if len(paths) == 1:
        return [paths[0].name]
    common = Path(*[parts[0] for parts in zip(*(p.parts for p in paths)) if len(set(parts)) == 1])
    return [str(p.relative_to(common)) for p in paths]




def is_duplicate(name: str) -> bool:
    """A metric Lightning logs twice (``on_step`` and ``on_epoch``): ``x_step``/``x_epoch`` beside ``x``."""
    return name.endswith(("_step", "_epoch"))


def headline_metrics(runs: Sequence[Run]) -> list[str]:
    """The metrics a reader looks for first: each run's ``model.monitor`` and every ``test/*``, no duplicates.

    All metrics (still without ``_step``/``_epoch`` duplicates) when the runs have neither.
    """
    available = [m for m in metric_names(runs) if not is_duplicate(m)]
    monitors = {run.config.get("model.monitor") for run in runs}
    chosen = [m for m in available if m in monitors or m.startswith("test/")]
    return chosen or available


def select_metrics(runs: Sequence[Run], patterns: Sequence[str] | None) -> list[str]:
    """The metrics matching any of the glob ``patterns`` (``val/*``, ``test/nll``), in name order; the
    headline metrics for None. A pattern that matches nothing is a KeyError naming the available metrics."""
    if not patterns:
        return headline_metrics(runs)
    available = metric_names(runs)
    chosen: dict[str, None] = {}
    for pattern in patterns:
        matched = [m for m in available if fnmatch.fnmatchcase(m, pattern)]
        if not matched:
            raise KeyError(f"metric {pattern!r} matches no run's metrics.json; available: {available}")
        chosen.update(dict.fromkeys(matched))
    return list(chosen)


def finite(value: Any) -> bool:
    """A real number that is not NaN or infinite (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
