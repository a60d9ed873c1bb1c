"""Masked reductions over ``(B, T)`` token tensors.

Conventions shared by every function here:

* ``mask`` has the same shape as ``x`` (or broadcasts to it) and may be ``bool``, integer or
  floating. Any non-zero entry marks a *valid* element; zero marks padding/ignored.
* Values at masked positions are never read: they may be arbitrary, even ``nan`` or ``inf``
  (selection is done with :func:`torch.where`, not by multiplying by the mask).
* No function synchronises with the device (no ``.item()``, no data-dependent Python branches):
  degenerate counts are handled with clamps, and the documented result is returned instead of an
  error.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_mean", "masked_sum", "masked_var", "masked_whiten"]

Dim = int | tuple[int, ...] | None


def _valid(x: Tensor, mask: Tensor) -> Tensor:
    """Boolean validity mask broadcast to ``x``'s shape."""
    return torch.broadcast_to(mask != 0, x.shape)


def masked_sum(x: Tensor, mask: Tensor, dim: Dim = None) -> Tensor:
    """Sum of ``x`` over valid elements.

    Args:
        x: any shape, floating.
        mask: same shape as ``x`` (or broadcastable to it); non-zero means valid.
        dim: dimension(s) to reduce; ``None`` reduces everything to a 0-d tensor.

    Returns:
        ``x`` summed over ``dim`` with masked elements counted as zero. Differentiable in ``x``.
    """
    kept = torch.where(_valid(x, mask), x, torch.zeros_like(x))
    if dim is None:
        return kept.sum()
    return kept.sum(dim=dim)


def _count(x: Tensor, mask: Tensor, dim: Dim) -> Tensor:
    """Number of valid elements of ``x`` along ``dim`` (``x``'s dtype)."""
    valid = _valid(x, mask).to(x.dtype)
    return valid.sum() if dim is None else valid.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: Dim = None) -> Tensor:
    """Mean of ``x`` over valid elements.

    Args:
        x: any shape, floating.
        mask: same shape as ``x`` (or broadcastable); non-zero means valid.
        dim: dimension(s) to reduce; ``None`` reduces everything to a 0-d tensor.

    Returns:
        ``masked_sum / number of valid elements`` along ``dim``. Where a slice has no valid
        element the result is ``0`` (not ``nan``).
    """
    return masked_sum(x, mask, dim) / _count(x, mask, dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of all valid elements of ``x`` (one scalar over the whole tensor).

    Args:
        x: any shape, floating.
        mask: same shape as ``x`` (or broadcastable); non-zero means valid.
        unbiased: divide by ``n - 1`` (Bessel's correction) instead of ``n``.

    Returns:
        A 0-d tensor. With no valid element, or a single one when ``unbiased``, the variance is
        undefined and ``0`` is returned (whitening then maps the lone value to ``0``).
    """
    n = _count(x, mask, None)
    centered = x - masked_mean(x, mask)
    sum_sq = masked_sum(centered * centered, mask)
    denom = n - 1.0 if unbiased else n
    return sum_sq / denom.clamp(min=1.0)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise ``x`` to zero mean and unit variance over its valid elements.

    ``(x - mean) / sqrt(var + eps)`` with the mean and (unbiased) variance of
    :func:`masked_mean` / :func:`masked_var` taken over *all* valid elements (a single scalar
    statistic, e.g. over every valid token of a batch).

    Args:
        x: any shape, floating.
        mask: same shape as ``x`` (or broadcastable); non-zero means valid.
        shift_mean: if ``False`` the mean is added back (only the scale is normalised).
        eps: added to the variance before the square root.

    Returns:
        Same shape as ``x``; exactly ``0`` at masked positions.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(_valid(x, mask), whitened, torch.zeros_like(whitened))
