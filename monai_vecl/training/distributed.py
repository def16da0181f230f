"""All-gather with gradient, so the VECL loss sees the global batch (N_global × N_global targets).

Every rank computes the same loss on the gathered batch. The backward of the gather sums the
incoming gradients over ranks and keeps the local slice; DDP then averages parameter gradients
over ranks, which gives exactly the gradient of the single-process loss on the combined batch
(the full-gradient variant of the gather open_clip uses; written here from that description).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # A copy: autograd may hand the same gradient tensor to several inputs, so never reduce it in place.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) over ranks along dim 0, gradient flowing back to each rank."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over ranks along dim 0 (labels, indices)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in a nest of dataclasses, tuples, lists and dicts (other leaves kept)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: map_tensors(fn, getattr(obj, f.name)) for f in fields(obj) if f.init})
    if isinstance(obj, dict):
        return {k: map_tensors(fn, v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(fn, v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(fn, v) for v in obj)
    return obj


def pad_tokens_to_global_max(tokens: dict[str, torch.Tensor], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids``/``attention_mask`` to the longest sequence over all ranks.

    Token features can only be gathered when every rank has the same sequence length; padding is
    masked, so it does not change the masked text features.
    """
    if not is_distributed():
        return tokens
    length = torch.tensor([tokens["input_ids"].shape[1]], device=tokens["input_ids"].device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    extra = int(length) - tokens["input_ids"].shape[1]
    if extra == 0:
        return tokens
    return {
        "input_ids": torch.nn.functional.pad(tokens["input_ids"], (0, extra), value=pad_id),
        "attention_mask": torch.nn.functional.pad(tokens["attention_mask"], (0, extra), value=0),
    }
