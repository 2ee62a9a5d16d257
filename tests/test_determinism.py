"""The same config and seed give identical metrics on CPU, for each model family (AE, VAE, IWAE, GAN).

On GPUs, cuDNN algorithm choice and atomic adds make runs differ in the last bits unless
``trainer.deterministic=true``; docs/RELIABILITY.md gives the tolerance.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import TINY, read_metrics, run_cli

MODELS = ["ae", "vae", "iwae", "gan"]


def test_same_seed_same_metrics_for_every_model_family(tmp_path):
    sweeps = [tmp_path / "a", tmp_path / "b"]
    # Two identical sweeps side by side; every job trains, validates and tests, and writes metrics.json.
    args = ["-m", f"model={','.join(MODELS)}", *TINY, "trainer.deterministic=true"]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda d: run_cli(*args, f"hydra.sweep.dir={d}", env={"OMP_NUM_THREADS": "1"}), sweeps))
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    for job, model in enumerate(MODELS):
        first, second = (read_metrics(sweep / str(job)) for sweep in sweeps)
        assert first["model"] == model and first == second
        assert any(k.startswith("test/") for k in first), "the comparison covers the test metrics"
    assert read_metrics(sweeps[0] / str(MODELS.index("gan")))["train/diverged"] == 0.0
