"""``make gpu-check``: its dry run on the CPU goes through every step (runs, SIGINT and resume, comparisons, table,
JSON, exit status); rows pass only within their tolerance; without CUDA the GPU run refuses loudly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genlab import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check would run for ten minutes")
def test_without_cuda_it_says_so_and_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--work", str(tmp_path / "work")]) == gpu_check.NO_CUDA_EXIT != 0
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device cpu" in err and "make gpu-check" in err
    assert not out.exists() and not (tmp_path / "work").exists()  # nothing ran, nothing claims to have


def test_a_row_passes_only_with_two_finite_numbers_within_its_tolerance() -> None:
    tol = gpu_check.Tol(rel=1e-2, abs=1e-3)
    assert str(tol) == "0.01 rel + 0.001 abs" and str(gpu_check.EXACT) == "exact"
    assert gpu_check.compare("c", "ae", "test/loss", 101.0, 100.0, tol).ok  # |1| <= 0.001 + 1
    assert not gpu_check.compare("c", "ae", "test/loss", 101.01, 100.0, tol).ok
    assert gpu_check.compare("c", "ae", "test/loss", 0.0009, 0.0, tol).ok  # the absolute floor near 0
    for value, reference in ((None, 1.0), (1.0, None), (math.nan, 1.0), (math.inf, math.inf), ("onednn", 1.0)):
        assert not gpu_check.compare("c", "ae", "m", value, reference, tol).ok, (value, reference)
    assert gpu_check.compare("c", "ae", "m", 0.0, 0.0, gpu_check.EXACT).ok
    assert not gpu_check.compare("c", "ae", "m", 1e-12, 0.0, gpu_check.EXACT).ok


def test_rows_compare_gpu_with_cpu_and_mixed_with_float32_and_read_missing_runs_as_misses(tmp_path: Path) -> None:
    def run(name: str, **metrics: float | str) -> gpu_check.Run:
        return gpu_check.Run(name, [], exit=0, metrics={k.replace("test_", "test/"): v for k, v in metrics.items()})

    runs = {r.name: r for r in [
        run("cpu_vae_32", test_loss=100.0, test_nll=90.0, cpu_matmul="onednn"),
        run("gpu_vae_32", test_loss=100.5, test_nll=90.2, cpu_matmul="unused (trainer.accelerator=gpu)"),
        run("gpu_vae_bf16-mixed", test_loss=110.0, test_nll=90.1, cpu_matmul="unused (trainer.accelerator=gpu)"),
        # 16-mixed crashed: no metrics
        gpu_check.Run("gpu_vae_16-mixed", [], exit=1),
    ]}
    rows = gpu_check.rows_for(runs, ["devices"], ["vae"], tmp_path, "cuda")
    got = {(r.check, r.metric): r.ok for r in rows}
    assert got == {("GPU 32 vs CPU 32", "test/loss"): True, ("GPU 32 vs CPU 32", "test/nll"): True,
                   ("bf16-mixed vs 32 (GPU)", "test/loss"): False, ("bf16-mixed vs 32 (GPU)", "test/nll"): True,
                   ("16-mixed vs 32 (GPU)", "test/loss"): False, ("16-mixed vs 32 (GPU)", "test/nll"): False,
                   ("cpu_matmul=auto", "library"): True}
    # A GPU run that routed CPU matmuls (the crash of finding 1) is a miss; so is a CPU run without a library.
    runs["gpu_vae_32"].metrics["cpu_matmul"] = "onednn"
    assert not next(r for r in gpu_check.rows_for(runs, ["devices"], ["vae"], tmp_path, "cuda")
                    if r.check == "cpu_matmul=auto").ok
    text = gpu_check.table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "family", "metric", "value", "reference", "tolerance", "result"]
    assert len(lines) == 1 + len(rows) and sum(line.endswith("MISS") for line in lines) == 3
    assert "missing" in text  # the crashed run's values


def test_the_dry_run_goes_through_every_step_and_exits_non_zero_on_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # On the CPU the "GPU" runs are CPU runs: float32 agrees exactly, bf16-mixed only within its tolerance. With no
    # tolerance left for bf16-mixed (and 16-mixed, bf16 on a CPU), exactly those rows must miss and the exit be 1.
    monkeypatch.setitem(gpu_check.TOLERANCES, ("mixed", "ae"), gpu_check.EXACT)
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--device", "cpu", "--families", "ae", "--stages", "devices,resume", "--epochs", "2",
                           "--workers", "2", "--work", str(tmp_path / "work"), "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {(r["check"], r["family"], r["metric"]): r for r in report["rows"]}
    missed = {key for key, r in rows.items() if not r["ok"]}
    assert code == 1 and not report["passed"]
    assert missed == {(f"{p} vs 32 (GPU)", "ae", "test/loss") for p in ("bf16-mixed", "16-mixed")}, printed
    same = rows["GPU 32 vs CPU 32", "ae", "test/loss"]
    assert same["ok"] and same["value"] == same["reference"]
    # the resume stage: stopped by SIGINT in the middle of an epoch, resumed to the uninterrupted run's weights
    assert report["runs"]["resume_cut"]["exit"] == 130 and report["runs"]["resume_continued"]["exit"] == 0
    stop = rows["SIGINT mid-epoch, resumed", "vae", "stopped at step"]
    assert stop["ok"] and int(stop["value"]) % 10  # digits: 10 steps per epoch
    assert rows["SIGINT mid-epoch, resumed", "vae", "max |weight diff|"]["value"] == 0.0
    assert rows["pictures keep the noise", "vae", "max |weight diff|"]["ok"]
    assert rows["cpu_matmul=auto", "all", "library"]["ok"]
    assert printed.count("MISS") == 2 and f"{len(rows) - 2} of {len(rows)} rows within tolerance" in printed
