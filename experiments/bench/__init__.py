"""genlab's speed benchmarks (``make bench`` = ``python -m experiments.bench``; experiments/BENCHMARKS.md).

:mod:`~experiments.bench.cases` holds the training cases and their hand-written baselines, :mod:`~.timer` the step
timer a genlab run carries, :mod:`~.run` the one way to run genlab and alternate the ways, :mod:`~.measures` and
:mod:`~.pythae` the measures beside training speed.
"""
