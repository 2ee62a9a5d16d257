"""Comparison of a resumed run's folder with an uninterrupted run's: what "exact resume" means in the tests."""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

import torch
from conftest import read_metrics


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def run_metrics(run_dir: Path) -> dict:
    """metrics.json without its ``provenance`` (commit, clocks, load): the results that must match between runs."""
    metrics = read_metrics(run_dir)
    metrics.pop("provenance", None)
    return metrics


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def without_epoch_means(rows: list[dict[str, str]], epochs: Collection[int]) -> list[dict[str, str]]:
    """The rows without the training epoch-end rows (their ``*_epoch`` means) of ``epochs``."""
    def epoch_end_row(row: dict[str, str]) -> bool:
        return int(row["epoch"]) in epochs and any(v for k, v in row.items() if k.endswith("_epoch"))

    return [row for row in rows if not epoch_end_row(row)]


def assert_same_run(resumed_dir: Path, uninterrupted_dir: Path, model: str, min_steps: int,
                    epoch: int | None = None, stopped_in: Collection[int] = ()) -> None:
    """Both runs end with the same weights, optimizer and scheduler states, step, metrics.json and CSV rows.

    ``stopped_in``: the epochs the run was stopped inside. Their training epoch-end rows (the ``*_epoch`` means)
    are left out of the CSV comparison: Lightning 2.6 does not checkpoint a running epoch's metric sums, so after
    the resume they average only the batches trained after it (none, and no row, when the stop came after its
    last batch). The last epoch must run entirely after the resume.
    """
    resumed, uninterrupted = final_state(resumed_dir), final_state(uninterrupted_dir)
    assert resumed["epoch"] == uninterrupted["epoch"], model
    assert epoch is None or resumed["epoch"] == epoch, model
    assert resumed["global_step"] == uninterrupted["global_step"] >= min_steps, model
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), f"{model}: {name} differs after resume"
    assert len(resumed["optimizer_states"]) == (2 if model == "gan" else 1)
    for opt_r, opt_u in zip(resumed["optimizer_states"], uninterrupted["optimizer_states"]):
        assert opt_r["param_groups"] == opt_u["param_groups"]
        for pid, moments in opt_u["state"].items():
            for key, value in moments.items():
                assert torch.equal(torch.as_tensor(opt_r["state"][pid][key]), torch.as_tensor(value)), (model, key)
    assert resumed["lr_schedulers"] == uninterrupted["lr_schedulers"]
    assert run_metrics(resumed_dir) == run_metrics(uninterrupted_dir), model
    resumed_rows = without_epoch_means(csv_rows(resumed_dir), stopped_in)
    assert resumed_rows == without_epoch_means(csv_rows(uninterrupted_dir), stopped_in), model
