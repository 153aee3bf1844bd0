"""Input checks that fail early, name the argument, and say what was expected.

Bad input should never surface as a shape error from deep inside torch after work was done.
"""
from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """A tensor that must stay finite did not; the message names where it first happened."""


def check_shape(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    """shape entries may be None (any size)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    ok = tensor.dim() == len(shape) and all(s is None or s == t for s, t in zip(shape, tensor.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(tensor.shape)}")


def _check_index_kind(name: str, tensor: torch.Tensor, ndim: int, meaning: str) -> None:
    """An integer tensor of `ndim` dimensions (metadata only: nothing is read from the device)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must be an integer tensor ({meaning}), got dtype {tensor.dtype}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")


def check_index_tensor(name: str, tensor: torch.Tensor, ndim: int, low: int, high: int, meaning: str) -> None:
    """An integer tensor of `ndim` dimensions with every value in [low, high]."""
    _check_index_kind(name, tensor, ndim, meaning)
    if tensor.numel() == 0:
        return
    lo, hi = int(tensor.min()), int(tensor.max())
    if lo < low or hi > high:
        bad_value = lo if lo < low else hi
        where = (tensor == bad_value).nonzero()[0].tolist()
        raise ValueError(f"{name}[{', '.join(map(str, where))}] = {bad_value} is out of range: expected "
                         f"{meaning}, i.e. a value in [{low}, {high}]")


def assert_index_on_device(name: str, tensor: torch.Tensor, ndim: int, low: int, high: int, meaning: str) -> None:
    """`check_index_tensor` without reading values back to the host (for capturable steps): type and shape are
    checked at once, the range on the device (torch._assert_async), which fails at the next synchronisation with
    a message naming the tensor and the range, but not the offending index."""
    _check_index_kind(name, tensor, ndim, meaning)
    if tensor.numel():
        torch._assert_async((tensor.min() >= low) & (tensor.max() <= high),
                            f"{name} holds a value out of range: expected {meaning}, i.e. a value in [{low}, {high}]")


def raise_if_not_finite(name: str, tensor: torch.Tensor, hint: str = "") -> None:
    """One reduction when all is well; on failure, the first (batch, step) index that went bad."""
    if bool(torch.isfinite(tensor).all()):
        return
    bad = ~torch.isfinite(tensor)
    while bad.dim() > 2:
        bad = bad.any(-1)
    where = bad.nonzero()[0].tolist()
    finite = tensor.detach()[torch.isfinite(tensor)]
    peak = f"; the largest finite |value| was {float(finite.abs().max()):.3g}" if finite.numel() else ""
    raise NonFiniteError(f"{name} became non-finite at index {tuple(where)} (batch, step){peak}. {hint}".strip())
