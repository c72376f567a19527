r"""The search window of the k-NN similarities: learned distances (paper eq. 12) between each
patch and the patches whose corner lies within ``+-radius`` pixels, as shared-kernel
convolutions of pixel differences (see :mod:`groupsc.neighbors`).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor
from torch.nn import functional as F


# -- the search window ----------------------------------------------------------------------
def window_offsets(radius: int) -> Tensor:
    """The ``O = (2 radius + 1)^2`` offsets ``(dy, dx)`` of the window, ``(O, 2)`` int64.

    Row-major (``dy`` outer, both from ``-radius`` to ``radius``), so ``(0, 0)`` (the patch
    itself) is at index ``O // 2``.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return _offsets(radius).clone()


@lru_cache(maxsize=32)
def _offsets(radius: int) -> Tensor:
    r = torch.arange(-radius, radius + 1)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


@lru_cache(maxsize=32)
def _valid(grid: tuple[int, int], radius: int) -> Tensor:
    """``(L, O)`` bool: the neighbour ``i + offset`` lies in the ``H' x W'`` grid of corners
    (CPU, cached; not to be modified)."""
    hp, wp = grid
    offsets = _offsets(radius)
    a = torch.arange(hp)[:, None, None] + offsets[:, 0]
    b = torch.arange(wp)[None, :, None] + offsets[:, 1]
    return ((a >= 0) & (a < hp) & (b >= 0) & (b < wp)).reshape(hp * wp, -1)


class _SharedKernelConv(torch.autograd.Function):
    """``out[n, o] = sum_c conv(e[n, o, c], k[c])``: the same ``(C, p, p)`` kernel for all ``O``
    groups. Forward is a grouped convolution; the backward uses a transposed grouped convolution
    (input) and a depthwise convolution with the ``H' x W'`` output gradients as kernels
    (weights), both much faster on CPU than the generic convolution backward here."""

    @staticmethod
    def forward(ctx, e: Tensor, k: Tensor, groups: int) -> Tensor:  # e (N, O C, H, W), k (C,p,p)
        c = k.shape[0]
        weight = k.unsqueeze(0).expand(groups, c, *k.shape[1:]).contiguous()
        ctx.save_for_backward(e, weight)
        ctx.groups = groups
        return F.conv2d(e, weight, groups=groups)  # (N, O, H', W')

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        e, weight = ctx.saved_tensors
        groups = ctx.groups
        n, oc, h, w = e.shape
        c = oc // groups
        g = g.contiguous()
        ge = gk = None
        if ctx.needs_input_grad[0]:
            ge = F.conv_transpose2d(g, weight, groups=groups)
        if ctx.needs_input_grad[1]:
            # gk[c, u, v] = sum_{n, o, a, b} e[n, o, c, a + u, b + v] g[n, o, a, b]
            gexp = (
                g.unsqueeze(2).expand(n, groups, c, *g.shape[-2:]).reshape(n * oc, 1, *g.shape[-2:])
            )
            gk = F.conv2d(e.reshape(1, n * oc, h, w), gexp, groups=n * oc)
            gk = gk.view(n, groups, c, *gk.shape[-2:]).sum((0, 1))
        return ge, gk, None


@lru_cache(maxsize=32)
def _mirror_index(grid: tuple[int, int], radius: int) -> tuple[Tensor, Tensor]:
    """Index tensors of the symmetric window (CPU, cached per grid and radius).

    The window's second half (row-major offsets after ``(0, 0)``) holds ``Oh = (O - 1) / 2``
    offsets ``o``; the first half holds ``-o`` in reverse order. ``d(i, i - o) = d(j, j + o)``
    with ``j = i - o``, so the first half is read from the second half's maps, padded by
    ``radius``: returns ``index`` ``(Oh L,)`` into the flattened padded maps
    ``(Oh, H' + 2r, W' + 2r)``, and ``valid`` ``(Oh, L)``, the second-half entries whose
    neighbour lies in the grid.
    """
    hp, wp = grid
    half = _offsets(radius)[(2 * radius + 1) ** 2 // 2 + 1 :]  # (Oh, 2)
    hq, wq = hp + 2 * radius, wp + 2 * radius
    a = torch.arange(hp).view(1, hp, 1)
    b = torch.arange(wp).view(1, 1, wp)
    dy, dx = half[:, 0].view(-1, 1, 1), half[:, 1].view(-1, 1, 1)
    oh = torch.arange(half.shape[0]).view(-1, 1, 1)
    index = oh * (hq * wq) + (a + radius - dy) * wq + (b + radius - dx)
    valid = (a + dy >= 0) & (a + dy < hp) & (b + dx >= 0) & (b + dx < wp)
    return index.reshape(-1), valid.reshape(half.shape[0], -1)


def _window(
    x: Tensor, patch: int, kappa: Tensor, radius: int, similarity: bool, mu: Tensor | None = None
) -> Tensor:
    """``(N, L, O)`` window distances (``similarity=False``, ``inf`` outside the block) or
    similarities ``exp(-d)`` (0 outside). Only the second half of the offsets is computed, the
    first half is its mirror image (see :func:`_mirror_index`). ``mu``: patch means to centre
    with (see :func:`local_distances`)."""
    n, c, h, w = x.shape
    if kappa.numel() != c * patch * patch:
        raise ValueError(f"kappa has {kappa.numel()} entries, expected {c * patch * patch}")
    hp, wp = h - patch + 1, w - patch + 1
    if hp < 1 or wp < 1:
        raise ValueError(f"block {(h, w)} is smaller than the patch size {patch}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    r, side = radius, 2 * radius + 1
    length, oh = hp * wp, (side * side - 1) // 2
    if oh == 0:  # radius 0: the patch itself only
        return x.new_full((n, length, 1), 1.0 if similarity else 0.0)
    # second-half offsets: dy in [0, r], dx in [-r, r], minus the first r + 1 (dy = 0, dx <= 0)
    xp = F.pad(x, (r, r, 0, r))
    win = F.unfold(xp, (r + 1, side)).view(n, c, (r + 1) * side, h, w)[:, :, r + 1 :]
    diff = win - x.unsqueeze(2)  # (N, C, Oh, h, w): neighbour minus patch, pixel by pixel
    sq = diff.square() if mu is not None else diff.square_()  # centring needs diff again
    e = sq.transpose(1, 2).reshape(n, oh * c, h, w)
    k2 = (kappa * kappa).view(c, patch, patch)
    half = _SharedKernelConv.apply(e, k2, oh)  # (N, Oh, H', W')
    if mu is not None:
        half = _centre(half, diff, mu, k2, r)
    half = half.view(n, oh, length)  # (N, Oh, L)
    index, valid = _mirror_index((hp, wp), r)
    index, valid = index.to(x.device), valid.to(x.device)
    if similarity:
        half = torch.exp(-half).masked_fill(~valid, 0.0)
        fill, center = 0.0, 1.0
    else:
        half = half.masked_fill(~valid, float("inf"))
        fill, center = float("inf"), 0.0
    padded = F.pad(half.view(n, oh, hp, wp), (r, r, r, r), value=fill).view(n, -1)
    mirror = padded.index_select(1, index).view(n, oh, length).flip(1)
    mid = half.new_full((n, 1, length), center)
    return torch.cat([mirror, mid, half], 1).transpose(1, 2).contiguous()


def _centre(half: Tensor, diff: Tensor, mu: Tensor, k2: Tensor, r: int) -> Tensor:
    r"""Distances between centred patches from those between raw ones.

    With ``e`` the pixel differences of a patch pair and ``dmu_c = mu_{i+o, c} - mu_{i, c}``
    the difference of their means in channel ``c``,
    :math:`\sum_u \kappa_u^2 (e_u - dmu_c)^2 = \sum_u \kappa_u^2 e_u^2
    - 2\, dmu_c \sum_u \kappa_u^2 e_u + dmu_c^2 \sum_u \kappa_u^2` per channel: ``half``
    holds the first sum ``(N, Oh, H', W')``; the second is one more shared-kernel convolution per
    channel, of ``diff`` ``(N, C, Oh, h, w)``; ``mu`` is ``(N, C, H', W')``.
    """
    n, c, oh = diff.shape[:3]
    side = 2 * r + 1
    hp, wp = mu.shape[-2:]
    mwin = F.unfold(F.pad(mu, (r, r, 0, r)), (r + 1, side)).view(n, c, (r + 1) * side, hp, wp)
    dmu = mwin[:, :, r + 1 :] - mu.unsqueeze(2)  # (N, C, Oh, H', W')
    for ch in range(c):
        cross = _SharedKernelConv.apply(diff[:, ch].contiguous(), k2[ch : ch + 1], oh)
        half = half + dmu[:, ch] * (dmu[:, ch] * k2[ch].sum() - 2 * cross)
    return half.clamp_min(0.0)  # rounding only


def local_distances(
    x: Tensor, patch: int, kappa: Tensor, radius: int, mu: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""Learned distances (eq. 12) between each patch and the patches of its search window.

    Args:
        x: ``(N, C, H, W)`` image block (the current estimate).
        patch: patch side ``p``.
        kappa: ``(C p^2,)`` distance weights :math:`\kappa`, in the order of
            :func:`groupsc.patches.extract`.
        radius: window half-width ``r`` in pixels (offsets of the top-left corners).
        mu: ``(N, C, H', W')`` means to subtract from each patch per channel before comparing
            (the authors' centred similarity: at a refresh, the means of the *input* patches),
            or None to compare the patches as they are.

    Returns:
        ``dist``: ``(N, L, O)`` with ``dist[n, i, o] = ||diag(kappa)(x_i - x_{i+o})||^2``
        (squared, as in ``SparseCoding.similarity``; units of ``x^2`` times ``kappa^2``), and
        ``+inf`` where the neighbour ``i + o`` falls outside the block; ``offsets``: ``(O, 2)``
        from :func:`window_offsets`. ``O = (2r + 1)^2``. Cost ``O m L / 2`` multiply-adds
        (the distance is symmetric: half the offsets are computed, the other half mirrored).
    """
    return _window(x, patch, kappa, radius, False, mu), window_offsets(radius).to(x.device)


def window_similarity(
    x: Tensor, patch: int, kappa: Tensor, radius: int, mu: Tensor | None = None
) -> Tensor:
    """``exp(-dist)`` of :func:`local_distances`: ``(N, L, O)`` in [0, 1], 0 outside the block,
    1 at the center offset (the patch itself)."""
    return _window(x, patch, kappa, radius, True, mu)
