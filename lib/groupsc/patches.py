"""Patch machinery: overlapping patches, centering, averaging, and block-wise processing.

Notation (GroupSC paper, section 3.1): an image ``y`` of ``(N, C, H, W)`` gives
``L = (H - p + 1)(W - p + 1)`` overlapping ``p x p`` patches of ``m = C p^2`` values each, stored
as columns of ``(N, m, L)``. Restored patches are put back and averaged (eq. 6): every pixel gets
the mean of the estimates of the patches that cover it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

Sums = tuple[torch.Tensor, torch.Tensor]  # (sum of estimates, number of estimates) per pixel


def extract(y: torch.Tensor, p: int) -> torch.Tensor:
    """All overlapping ``p x p`` patches (stride 1): ``(N, C, H, W) -> (N, C p^2, L)``."""
    if y.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(y.shape)}")
    if min(y.shape[-2:]) < p:
        raise ValueError(f"image {tuple(y.shape[-2:])} is smaller than the patch size {p}")
    return F.unfold(y, p)


def center(
    patches: torch.Tensor, channels: int = 1, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract each patch's mean per channel (eq. 5): returns ``(centered, means)``.

    ``patches``: ``(N, C p^2, L)``; ``means``: ``(N, C, 1, L)``. With a ``mask`` of the same
    shape (1 = observed), the mean is over observed values and unobserved entries stay 0.
    """
    n, m, length = patches.shape
    per = patches.view(n, channels, m // channels, length)
    if mask is None:
        mu = per.mean(dim=2, keepdim=True)
        return (per - mu).view(n, m, length), mu
    pm = mask.view(n, channels, m // channels, length)
    mu = (per * pm).sum(2, keepdim=True) / pm.sum(2, keepdim=True).clamp_min(1)
    return ((per - mu) * pm).view(n, m, length), mu


def uncenter(patches: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Add the means recorded by :func:`center` back."""
    n, m, length = patches.shape
    channels = mu.shape[1]
    return (patches.view(n, channels, m // channels, length) + mu).view(n, m, length)


def subtract_means(patches: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``patches`` ``(N, C p^2, L)`` minus per-channel means ``mu`` ``(N, C, 1, L)``, which
    may be another image's (the inverse of :func:`uncenter`)."""
    n, m, length = patches.shape
    channels = mu.shape[1]
    return (patches.view(n, channels, m // channels, length) - mu).view(n, m, length)


def fold_sums(patches: torch.Tensor, size: tuple[int, int], p: int) -> Sums:
    """Sum the patch estimates back onto the image and count them: two ``(N, C, H, W)``."""
    num = F.fold(patches, size, p)
    ones = torch.ones_like(patches[:1, :, :])
    den = F.fold(ones, size, p).expand_as(num)
    return num, den


def average(patches: torch.Tensor, size: tuple[int, int], p: int) -> torch.Tensor:
    """Average the overlapping patch estimates (eq. 6): ``(N, C p^2, L) -> (N, C, H, W)``."""
    num, den = fold_sums(patches, size, p)
    return num / den


def block_starts(length: int, block: int, stride: int) -> list[int]:
    """Start offsets of blocks of size ``block`` with step ``stride`` covering ``[0, length)``."""
    if block >= length:
        return [0]
    starts = list(range(0, length - block + 1, stride))
    if starts[-1] != length - block:
        starts.append(length - block)
    return starts


def blockwise(
    fn: Callable[[torch.Tensor, torch.Tensor | None], Sums],
    y: torch.Tensor,
    block: int,
    stride: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Restore a whole image block by block, weighting each pixel by its number of estimates.

    ``fn(block, mask_block)`` maps a block ``(N, C, b, b)`` (and the matching block of ``mask``,
    or None) to the (sum, count) pair of its patch estimates (see :func:`fold_sums`). Summing
    both over the overlapping blocks and dividing once gives every pixel the average over *all*
    its patch estimates, so pixels at block borders are not under-weighted, and memory is
    bounded by the block size.
    """
    if stride <= 0 or stride > block:
        raise ValueError(f"need 0 < stride <= block, got stride {stride}, block {block}")
    h, w = y.shape[-2:]
    num = torch.zeros_like(y)
    den = torch.zeros_like(y)
    for i in block_starts(h, block, stride):
        for j in block_starts(w, block, stride):
            window = (..., slice(i, i + block), slice(j, j + block))
            s, c = fn(y[window], None if mask is None else mask[window])
            num[window] += s
            den[window] += c
    return num / den
