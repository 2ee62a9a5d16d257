"""Marginal likelihood estimates: log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), in memory-bounded chunks.

The chunks are independent given their noise, so on CPU they are evaluated by ``workers`` threads with one
intra-op thread each: every core then runs whole large matmuls and elementwise passes without the fork/join
barrier of intra-op parallelism, which on a shared 2-core machine made two intra-op threads slower than one.
The noise is drawn on the calling thread in chunk order and the chunks' log-sum-exps are merged in chunk order,
so the estimate does not depend on the number of workers.

The cost is the decoder's last matmul and the likelihood's elementwise passes over its output. :class:`EvalMatmuls`
sets the matmuls' precision (``eval_precision``): ``32`` keeps float32 (run by the library that
:mod:`genlab.cpu_matmul` chose: oneDNN on the AMD EPYC bench machine, where MKL's sgemm was 2.2-2.4x slower);
``bf16`` multiplies the decoder's layers in bfloat16 with float32 accumulation, bias and output, so everything
after the matmul (softplus, sums, log-sum-exp) stays float32.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from genlab.checks import one_of, positive_int

EVAL_PRECISIONS = ("32", "bf16")

ContextFactory = Callable[[], AbstractContextManager[Any]]


def checked_eval_precision(value: object) -> str:
    """``value`` as one of EVAL_PRECISIONS (YAML's ``32`` arrives as an int), else a ConfigError naming eval_precision."""
    return one_of("eval_precision", str(value) if isinstance(value, int) and not isinstance(value, bool) else value,
                  EVAL_PRECISIONS)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """sum_d x_d l_d - softplus(l_d) for logits (..., B, D) and binary x (B, D): shape (..., B).

    A broadcast product and two row sums: for (n, B, D) logits this took a third of the time of the einsum
    that :class:`~genlab.losses.likelihoods.DecoderLikelihood` uses (which needs a transposed batched gemv here).
    """
    return (logits * x).sum(-1) - F.softplus(logits).sum(-1)


class EvalMatmuls(TorchFunctionMode):
    """F.linear at the evaluation's precision: in bfloat16 for the weights in ``bf16_weights`` (their id -> a
    bfloat16 copy), unchanged otherwise. The bf16 path rounds the input to bfloat16 and multiplies; the product
    ``x W^T`` comes back in bfloat16 (rounded to 8 significant bits), and only then is it converted to float32 and
    the float32 bias added, so the bias is exact but each output carries one bfloat16 rounding of ``x W^T``.

    A torch function mode is thread-local: enter one in each thread that evaluates (``context`` of
    :func:`importance_weighted_log_likelihood`).
    """

    def __init__(self, bf16_weights: dict[int, Tensor] | None = None) -> None:
        super().__init__()
        self.bf16_weights = bf16_weights or {}

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.linear:
            return func(*args, **kwargs)
        x, weight, *rest = args
        bias = rest[0] if rest else kwargs.get("bias")
        low = self.bf16_weights.get(id(weight))
        if low is not None:
            y = F.linear(x.to(torch.bfloat16), low).float()
            # the bias added in float32 (in place: a mixed-dtype add was 2.8x slower than convert-then-add)
            return y if bias is None else y.add_(bias)
        return func(*args, **kwargs)


def eval_matmuls(precision: str, low_precision: Iterable[nn.Module] = ()) -> ContextFactory:
    """A factory of :class:`EvalMatmuls` for ``precision``: ``bf16`` puts the nn.Linear layers of the modules
    ``low_precision`` (the decoder) in bfloat16; their weights are converted once here, not per chunk."""
    precision = checked_eval_precision(precision)
    bf16: dict[int, Tensor] = {}
    if precision == "bf16":
        for module in low_precision:
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    bf16[id(layer.weight)] = layer.weight.detach().to(torch.bfloat16)
    return (lambda: EvalMatmuls(bf16)) if bf16 else nullcontext


@contextmanager
def without_tf32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in float32 inside (torch lets them use TF32, 10-bit mantissas, on Ampere+ GPUs by
    default); the setting is process-wide, so enter it once, in the thread that starts the estimate."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _chunk_log_sum_exp(
    log_weights: Callable[[Tensor], Tensor], eps: Tensor, autocast: tuple[bool, torch.dtype], context: ContextFactory
) -> Tensor:
    """log sum_i w_i over one chunk, (B,), under inference mode, the caller's CPU autocast (both thread-local) and
    ``context()``; the log-sum-exp in float32."""
    enabled, dtype = autocast
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=enabled), context():
        return torch.logsumexp(log_weights(eps).float(), dim=0)


def importance_weighted_log_likelihood(
    log_weights: Callable[[Tensor], Tensor],
    noise: Callable[[int], Tensor],
    k: int,
    chunk: int,
    workers: int = 1,
    context: ContextFactory = nullcontext,
) -> Tensor:
    """The k-sample importance-weighted estimate log (1/k) sum_i w_i per example, (B,), ``chunk`` samples at a time.

    ``noise(n)`` draws the randomness of n samples (n leading); ``log_weights(eps)`` maps it to log-weights
    (n, B). Chunk log-sum-exps are merged with logaddexp, so the result equals the one-shot log-mean-exp over
    all k samples. ``workers > 1`` evaluates chunks on that many threads (CPU tensors only). Each chunk runs
    inside a fresh ``context()`` in the thread that evaluates it (e.g. :func:`eval_matmuls`). Convolutions run in
    float32 on a GPU too (:func:`without_tf32_convolutions`).
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
        with torch.inference_mode(), without_tf32_convolutions():
            for n in sizes:
                merge(_chunk_log_sum_exp(log_weights, noise(n), autocast, context))
    else:
        intra_op = torch.get_num_threads()
        torch.set_num_threads(1)  # read by the pool's threads when they start; restored below
        try:
            with ThreadPoolExecutor(workers) as pool, torch.inference_mode(), without_tf32_convolutions():
                pending: deque[Future[Tensor]] = deque()
                for n in sizes:
                    pending.append(pool.submit(_chunk_log_sum_exp, log_weights, noise(n), autocast, context))
                    if len(pending) > 2 * workers:  # bounds the noise held in memory
                        merge(pending.popleft().result())
                while pending:
                    merge(pending.popleft().result())
        finally:
            torch.set_num_threads(intra_op)
    assert total is not None  # k >= 1 was checked above
    return total - math.log(k)
