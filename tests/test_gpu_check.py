"""``make gpu-check`` refuses loudly without CUDA, and reads a sweep's jobs as passed only with finite losses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check would run for ten minutes")
def test_without_cuda_it_says_so_and_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--work", str(tmp_path / "work")]) == gpu_check.NO_CUDA_EXIT != 0
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "work").exists()  # nothing ran, nothing claims to have


def test_job_outcomes_pass_only_jobs_with_finite_losses(tmp_path: Path) -> None:
    metrics = {"0": {"train/loss": 1.5, "val/loss": 1.2}, "1": {"train/d_loss": float("nan"), "val/loss": 2.0},
               "2": None, "3": {"val/explained_variance": 0.9}}
    for job, values in metrics.items():
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- model=m{job}\n- trainer.precision=16-mixed\n")
        if values is not None:
            (tmp_path / job / "metrics.json").write_text(json.dumps(values))
    (tmp_path / "multirun.yaml").write_text("")  # not a job folder
    jobs = gpu_check.job_outcomes(tmp_path)
    assert [(j["job"], j["ok"]) for j in jobs] == [("0", True), ("1", False), ("2", False), ("3", False)]
    assert jobs[0]["overrides"] == ["model=m0", "trainer.precision=16-mixed"]
    assert jobs[2]["why"] == "no metrics.json" and jobs[3]["why"] == "no finite loss in metrics.json"
