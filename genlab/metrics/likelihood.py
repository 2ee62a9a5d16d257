"""Marginal likelihood estimates: log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), in memory-bounded chunks.

The chunks are independent given their noise, so on CPU they are evaluated by ``workers`` threads with one
intra-op thread each: every core then runs whole large matmuls and elementwise passes without the fork/join
barrier of intra-op parallelism, which on a shared 2-core machine made two intra-op threads slower than one.
The noise is drawn on the calling thread in chunk order and the chunks' log-sum-exps are merged in chunk order,
so the estimate does not depend on the number of workers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from genlab.checks import positive_int


def _chunk_log_sum_exp(log_weights: Callable[[Tensor], Tensor], eps: Tensor, autocast: tuple[bool, torch.dtype]) -> Tensor:
    """log sum_i w_i over one chunk, (B,), under inference mode and the caller's CPU autocast (both thread-local)."""
    enabled, dtype = autocast
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=enabled):
        return torch.logsumexp(log_weights(eps).float(), dim=0)


def importance_weighted_log_likelihood(
    log_weights: Callable[[Tensor], Tensor],
    noise: Callable[[int], Tensor],
    k: int,
    chunk: int,
    workers: int = 1,
) -> Tensor:
    """The k-sample importance-weighted estimate log (1/k) sum_i w_i per example, (B,), ``chunk`` samples at a time.

    ``noise(n)`` draws the randomness of n samples (n leading); ``log_weights(eps)`` maps it to log-weights
    (n, B). Chunk log-sum-exps are merged with logaddexp, so the result equals the one-shot log-mean-exp over
    all k samples. ``workers > 1`` evaluates chunks on that many threads (CPU tensors only).
    """
    positive_int("k", k)
    positive_int("chunk", chunk)
    positive_int("workers", workers)
    sizes = [min(chunk, k - start) for start in range(0, k, chunk)]
    autocast = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
    total: Tensor | None = None

    def merge(lse: Tensor) -> None:
        nonlocal total
        total = lse if total is None else torch.logaddexp(total, lse)

    if workers == 1 or len(sizes) == 1:
        with torch.inference_mode():
            for n in sizes:
                merge(_chunk_log_sum_exp(log_weights, noise(n), autocast))
    else:
        intra_op = torch.get_num_threads()
        torch.set_num_threads(1)  # read by the pool's threads when they start; restored below
        try:
            with ThreadPoolExecutor(workers) as pool, torch.inference_mode():
                pending: deque[Future[Tensor]] = deque()
                for n in sizes:
                    pending.append(pool.submit(_chunk_log_sum_exp, log_weights, noise(n), autocast))
                    if len(pending) > 2 * workers:  # bounds the noise held in memory
                        merge(pending.popleft().result())
                while pending:
                    merge(pending.popleft().result())
        finally:
            torch.set_num_threads(intra_op)
    assert total is not None  # k >= 1 was checked above
    return total - math.log(k)
