"""genlab's speed benchmarks: ``make bench`` = ``python -m experiments.bench`` (experiments/BENCHMARKS.md)."""
