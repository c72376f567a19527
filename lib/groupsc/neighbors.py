r"""Sparse k-nearest-neighbour similarities for GroupSC (a fast alternative to the dense Sigma).

The dense GroupSC core (:mod:`groupsc.models.sparse`) compares every pair of the ``L`` patches
of a block (``L = 2304`` for a 56 x 56 block and 9 x 9 patches) with the learned distance of the
paper's eq. (12), :math:`d_{ij} = \|\operatorname{diag}(\kappa)(x_i - x_j)\|_2^2`,
:math:`\Sigma_{ij} = e^{-d_{ij}}`, and every LISTA step of eq. (11) then pays the dense product
``(B * B) @ Sigma``: ``n L^2`` multiply-adds. Here the same quantities are computed on a sparse
graph:

1. **Search window** (:func:`local_distances`): patch ``i`` (top-left corner ``(a, b)``) is only
   compared with the patches whose corner lies within ``+-radius`` pixels,
   ``O = (2 radius + 1)^2`` candidates. For each offset ``o = (dy, dx)`` the distance of all
   patches at once is a convolution of the squared difference image
   ``(x - shift_o x)^2`` with the ``kappa^2`` kernel (one ``p x p`` kernel per channel); the
   offsets run as one grouped convolution with a hand-written backward (the generic one was
   about 10x slower here). The distance is symmetric, so only half the offsets are computed
   and the other half is read back shifted: ``O m L / 2`` multiply-adds instead of ``m L^2``.
2. **k nearest neighbours** (:func:`knn_select`): the ``k`` largest similarities of each row
   are kept; the patch itself is always one of them (its similarity is 1, ties included).
3. **Sparse aggregation** (:func:`aggregate`, :func:`weighted_sq_norms`,
   :func:`weighted_average`, :class:`SparseRelaxedGroupLasso`): a CSR matrix-dense product
   (``torch.sparse_csr_tensor``, int32 indices) whose backward is a product with the stored
   transpose (codes) and a sampled dense-dense product (``torch.sparse.sampled_addmm``,
   similarities). Measured on this project's 2-core CPU (``benchmarks/bench_neighbors.py``,
   n = 256, L = 2304, k = 16, one thread), forward / forward + backward: CSR 1.0 / 5 ms,
   COO 1.6 / 38 ms, ``index_select`` loop 3.5-11 / 24-31 ms, ``torch.gather`` 65 / 132 ms;
   dense ``(B*B) @ Sigma`` 28 / 85 ms. The prox of eq. (11) is one fused autograd function
   (the autograd chain of ``RelaxedGroupLasso`` spends more time in the backward of its
   broadcast division than in the sparse product).
4. **Online averaging** lives in :mod:`groupsc.similarity` (:class:`KnnSimilarity`, with the
   same ``start`` / ``update`` interface as the dense similarities).

Speed (``benchmarks/bench_neighbors.py``, one 56 x 56 block, 24 steps, one thread on a shared
2-core CPU): at ``radius = 7``, ``k = 16`` the similarity plus the prox, 37 ms per step dense,
become 4 ms; the two LISTA products (2 x 81 x 256 x L, 2.1 ms per step) are untouched, so a
whole forward goes from 930 ms to 151 ms (``window``, 6.2x) or 121 ms (``fixed``, 7.7x), and a
forward + backward 6.3x / 7.0x. SC, the same model with no similarities at all, takes 70 ms:
no variant of GroupSC can be more than 13x faster than the dense one on this CPU. The codes
are best kept as rows ``(N L, n)`` (see :func:`aggregate`).

Conventions. Patches are the columns of :func:`groupsc.patches.extract` (``F.unfold``):
patch ``i = a W' + b`` has its top-left corner at ``(a, b)``, ``H' = H - p + 1``,
``W' = W - p + 1``, ``L = H' W'``, ``m = C p^2`` values ordered (channel, row, column), the
order of ``kappa``. A :class:`SparseSimilarity` is a block-diagonal ``(N L) x (N L)`` matrix
``S`` whose row ``i`` holds the similarities of patch ``i`` to its neighbours,
``S_ij = e^{-d_ij}``. The aggregation ``out[:, i] = sum_j S_ij x[:, j]`` is ``x @ S^T``: for the
relaxed group lasso it is ``(B * B) @ Sigma`` with :math:`\Sigma = S^\top` (column ``i`` of
``Sigma`` holds the neighbours of ``i``, the convention of :class:`groupsc.prox.RelaxedGroupLasso`)
and for CSR it is ``alpha @ Sigma^T`` with :math:`\Sigma = S` (row ``i``, the convention of
:func:`groupsc.prox.similarity_average`). The kNN graph is not symmetric, so the two dense
conventions differ; both are the "neighbours of ``i``" of the paper. With a window covering the
block and ``k = L``, ``S`` is the dense, symmetric ``Sigma``.

Everything is differentiable (first order) in ``x``, ``kappa`` and the codes; the neighbour
selection itself is piecewise constant, as top-k is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import Tensor
from torch.nn import functional as F

from groupsc.patches import extract

__all__ = [
    "SparseRelaxedGroupLasso",
    "SparseSimilarity",
    "aggregate",
    "knn_select",
    "knn_similarity",
    "local_distances",
    "pair_distances",
    "weighted_average",
    "weighted_sq_norms",
    "window_offsets",
    "window_similarity",
]

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


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
    e = diff.square().transpose(1, 2).reshape(n, oh * c, h, w)
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


# -- the sparse similarity matrix -----------------------------------------------------------
@dataclass(frozen=True)
class SparseSimilarity:
    """Block-diagonal sparse similarities of ``N`` blocks of ``L`` patches, in CSR form.

    Rows and columns are global patch indices ``n L + i``. Row ``r`` holds the neighbours of
    patch ``r``: entries ``crow[r] : crow[r + 1]`` of ``col`` (sorted) and ``values``.
    The CSR indices are int32, the index type of the sparse kernels (no conversion per call).

    Attributes:
        batch, length: ``N`` and ``L``.
        crow: ``(N L + 1,)`` int32 row pointers.
        col: ``(nnz,)`` int32 neighbour indices.
        row: ``(nnz,)`` int64 row of each entry.
        values: ``(nnz,)`` similarities in [0, 1], differentiable.
        t_crow, t_col, t_perm: the transpose in CSR form (int32, int32, int64); its values are
            ``values[t_perm]``.
        slot: ``(nnz,)`` int64 index of each entry in the flattened ``(N, L, O)`` window
            tensor it was selected from (see :func:`knn_select`), or None.
    """

    batch: int
    length: int
    crow: Tensor
    col: Tensor
    row: Tensor
    values: Tensor
    t_crow: Tensor
    t_col: Tensor
    t_perm: Tensor
    slot: Tensor | None = None

    @classmethod
    def from_entries(
        cls,
        row: Tensor,
        col: Tensor,
        values: Tensor,
        batch: int,
        length: int,
        slot: Tensor | None = None,
    ) -> SparseSimilarity:
        """Build from entries sorted by ``row`` then ``col`` (global indices, no duplicates)."""
        size = batch * length
        if max(size, row.numel()) >= 2**31:
            raise ValueError("too many patches or pairs for int32 sparse indices")
        col = col.long()
        crow = torch.zeros(size + 1, dtype=torch.int32, device=row.device)
        crow[1:] = torch.cumsum(torch.bincount(row, minlength=size), 0)
        t_perm = torch.argsort(col, stable=True)  # stable: rows stay sorted within a column
        t_crow = torch.zeros_like(crow)
        t_crow[1:] = torch.cumsum(torch.bincount(col, minlength=size), 0)
        return cls(
            batch, length, crow, col.int(), row, values, t_crow, row[t_perm].int(), t_perm, slot
        )

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def with_values(self, values: Tensor) -> SparseSimilarity:
        """The same neighbours with new ``(nnz,)`` values."""
        return replace(self, values=values)

    def row_sums(self) -> Tensor:
        """``(N, L)``: ``sum_j S_ij``, the mass ``||Sigma_i||_1`` of each patch's neighbours."""
        out = self.values.new_zeros(self.batch * self.length).index_add(0, self.row, self.values)
        return out.view(self.batch, self.length)

    def to_dense(self) -> Tensor:
        """``(N, L, L)`` dense ``S`` (row ``i`` = neighbours of ``i``), for tests and checks."""
        size = self.batch * self.length
        flat = self.values.new_zeros(size * self.length)
        local = self.col.long() - (self.row // self.length) * self.length
        flat = flat.index_put((self.row * self.length + local,), self.values)
        return flat.view(self.batch, self.length, self.length)


def knn_select(window_sim: Tensor, grid: tuple[int, int], radius: int, k: int) -> SparseSimilarity:
    """Keep the ``k`` largest similarities of each patch's window; the patch itself always.

    Args:
        window_sim: ``(N, L, O)`` similarities over the window (:func:`window_similarity`, or an
            online average of them), in [0, 1].
        grid: ``(H', W')``, the grid of patch corners (``L = H' W'``).
        radius: the window radius the ``O`` offsets come from.
        k: neighbours per patch, self included. Patches near the border with fewer than ``k``
            candidates in the block keep them all. ``k >= O`` keeps the whole window.

    Returns:
        A :class:`SparseSimilarity` whose values are gathered from ``window_sim``
        (differentiable) and whose ``slot`` records where.
    """
    n, length, o = window_sim.shape
    hp, wp = grid
    if hp * wp != length:
        raise ValueError(f"grid {grid} does not have {length} patches")
    if radius < 0 or (2 * radius + 1) ** 2 != o:
        raise ValueError(f"window_sim has {o} offsets, not those of radius {radius}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    offsets = _offsets(radius).to(window_sim.device)
    valid = _valid(grid, radius).to(window_sim.device)  # (L, O)
    k = min(k, o)
    with torch.no_grad():
        score = window_sim.detach().masked_fill(~valid, -1.0)
        score[..., o // 2] = 2.0  # the patch itself first, whatever the ties
        idx = torch.topk(score, k, dim=-1, sorted=False).indices.sort(-1).values  # (N, L, k)
    values = window_sim.gather(-1, idx)
    lin = offsets[:, 0] * wp + offsets[:, 1]  # column shift of each offset
    base = torch.arange(n * length, device=idx.device).view(n, length, 1)
    row = base.expand(n, length, k)
    col = base + lin[idx]  # valid neighbours are sorted: row-major offsets, corners in the grid
    slot = base * o + idx
    keep = valid.expand(n, length, o).gather(-1, idx)
    if bool(keep.all()):
        row, col, values, slot = (t.reshape(-1) for t in (row, col, values, slot))
    else:
        row, col, values, slot = (t[keep] for t in (row, col, values, slot))
    return SparseSimilarity.from_entries(row, col, values, n, length, slot)


def knn_similarity(
    x: Tensor, patch: int, kappa: Tensor, radius: int, k: int, mu: Tensor | None = None
) -> SparseSimilarity:
    """kNN similarities of the patches of ``x`` ``(N, C, H, W)``: :func:`window_similarity`
    then :func:`knn_select`. See those for the arguments."""
    grid = (x.shape[-2] - patch + 1, x.shape[-1] - patch + 1)
    return knn_select(window_similarity(x, patch, kappa, radius, mu), grid, radius, k)


class _PairDistances(torch.autograd.Function):
    """``d_e = ||z_row(e) - z_col(e)||^2`` on the pairs of a :class:`SparseSimilarity`, as
    ``|z_r|^2 + |z_c|^2 - 2 <z_r, z_c>`` with a sampled product (no ``(nnz, m)`` gather); the
    backward is two sparse products."""

    @staticmethod
    def forward(ctx, z: Tensor, sim: SparseSimilarity) -> Tensor:  # z (N L, m) contiguous
        size = sim.batch * sim.length
        pattern = _csr(sim.crow, sim.col, sim.values.detach(), size)
        dots = torch.sparse.sampled_addmm(pattern, z, z.t(), beta=0.0).values()
        sq = (z * z).sum(1)
        d = sq.index_select(0, sim.row) + sq.index_select(0, sim.col) - 2 * dots
        ctx.save_for_backward(z, sim.crow, sim.col, sim.row, sim.t_crow, sim.t_col, sim.t_perm)
        return d.clamp_min_(0.0)  # rounding only: the gradient 2 (z_r - z_c) is ~0 there

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        z, crow, col, row, t_crow, t_col, t_perm = ctx.saved_tensors
        size = z.shape[0]
        deg = g.new_zeros(size).index_add_(0, row, g).index_add_(0, col, g)
        gz = _csr_mm(crow, col, g, z).add_(_csr_mm(t_crow, t_col, g[t_perm], z))
        return gz.mul_(-2.0).addcmul_(deg.unsqueeze(1), z, value=2.0), None


def pair_distances(
    x: Tensor, patch: int, kappa: Tensor, sim: SparseSimilarity, mu: Tensor | None = None
) -> Tensor:
    """Distances (eq. 12, squared) between the patches of ``x`` ``(N, C, H, W)`` on the pairs
    of ``sim``: ``(nnz,)``, in the order of ``sim.values``. ``O(nnz m)``: it refreshes the
    weights of fixed neighbours without a window search. ``mu``: ``(N, C, 1, L)`` per-channel
    means subtracted from the patches first (None: raw patches)."""
    z = extract(x, patch)  # (N, m, L)
    if mu is not None:
        n, m, length = z.shape
        z = (z.view(n, mu.shape[1], -1, length) - mu).view(n, m, length)
    z = z * kappa[None, :, None]
    return _PairDistances.apply(z.transpose(1, 2).reshape(-1, z.shape[1]).contiguous(), sim)


# -- aggregation ----------------------------------------------------------------------------
def _csr(crow: Tensor, col: Tensor, values: Tensor, size: int) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, (size, size), check_invariants=False)


def _csr_mm(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor) -> Tensor:
    """``S @ dense`` for the square CSR matrix ``(crow, col, values)``; ``dense`` ``(M, n)``."""
    size = dense.shape[0]
    return torch.sparse.mm(_csr(crow, col, values, size), dense)


class _CsrMatmul(torch.autograd.Function):
    """``S @ x`` for a CSR ``S`` with differentiable values; ``x`` ``(N L, n)`` contiguous."""

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, sim: SparseSimilarity) -> Tensor:
        ctx.save_for_backward(values, x, sim.crow, sim.col, sim.t_crow, sim.t_col, sim.t_perm)
        ctx.size = sim.batch * sim.length
        return _csr_mm(sim.crow, sim.col, values, x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        values, x, crow, col, t_crow, t_col, t_perm = ctx.saved_tensors
        g = g.contiguous()
        gv = gx = None
        if ctx.needs_input_grad[0]:  # gv[e] = <g[row_e], x[col_e]>: a sampled product
            pattern = _csr(crow, col, values, ctx.size)
            gv = torch.sparse.sampled_addmm(pattern, g, x.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            gx = _csr_mm(t_crow, t_col, values[t_perm], g)
        return gv, gx, None


def _rows(x: Tensor, sim: SparseSimilarity) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Codes as contiguous rows ``(N L, n)`` (one per patch), and the map back to ``x``'s
    layout (a view). No copy when the patch axis is already the slow one in memory."""
    size = sim.batch * sim.length
    if x.ndim == 3:
        if x.shape[0] != sim.batch or x.shape[2] != sim.length:
            raise ValueError(f"codes {tuple(x.shape)} do not match {sim.batch} x {sim.length}")
        rows = x.transpose(1, 2).reshape(size, x.shape[1]).contiguous()
        return rows, lambda r: r.view(sim.batch, sim.length, -1).transpose(1, 2)
    if x.ndim == 2:
        if x.shape[1] != size:
            raise ValueError(f"codes {tuple(x.shape)} do not have {size} columns")
        return x.t().contiguous(), lambda r: r.t()
    raise ValueError(f"expected (N, n, L) or (n, N L) codes, got {tuple(x.shape)}")


def aggregate(x: Tensor, sim: SparseSimilarity) -> Tensor:
    r"""``out[..., i] = sum_j S_ij x[..., j]``: what ``x @ S^T`` computes for a dense ``S``.

    Args:
        x: codes with patches as columns, ``(N, n, L)`` (one block per image, as in
            :mod:`groupsc.prox`) or the flat ``(n, N L)`` layout of ``SparseCoding``. The
            product runs on rows ``(N L, n)``: a tensor stored that way (e.g. ``rows.t()``)
            avoids a transposing copy in and out.
        sim: the similarities of the ``N`` blocks.

    Returns:
        The same shape as ``x``. Cost ``n nnz`` multiply-adds (``n N L k``), vs ``n N L^2``.
    """
    rows, back = _rows(x, sim)
    return back(_CsrMatmul.apply(sim.values, rows, sim))


def weighted_sq_norms(b2: Tensor, sim: SparseSimilarity) -> Tensor:
    r"""Squared weighted row norms of eq. (11),
    :math:`\|(B\operatorname{diag}(\Sigma_i)^{1/2})^j\|_2^2 = \sum_l \Sigma_{li} B_{jl}^2`:
    ``b2 @ Sigma`` for a dense ``Sigma`` (``Sigma = S^T``). ``b2 = B * B``, shapes as in
    :func:`aggregate`."""
    return aggregate(b2, sim)


def _mass(sim: SparseSimilarity, like: Tensor) -> Tensor:
    """Row sums shaped to broadcast against codes of ``like``'s layout."""
    mass = sim.row_sums()
    return mass.unsqueeze(1) if like.ndim == 3 else mass.reshape(1, -1)


def weighted_average(alpha: Tensor, sim: SparseSimilarity, eps: float = 1e-12) -> Tensor:
    r"""CSR targets :math:`\beta_i = \sum_j \Sigma_{ij}\alpha_j / \sum_l \Sigma_{il}`
    (:func:`groupsc.prox.similarity_average` with :math:`\Sigma = S`); shapes as in
    :func:`aggregate`. Row sums are floored at ``eps``."""
    return aggregate(alpha, sim) / _mass(sim, alpha).clamp_min(eps)


class _GroupProx(torch.autograd.Function):
    """The prox of eq. (11) on rows ``x`` ``(M, n)``, fused, with a hand-written backward.

    ``q = sqrt(mass_i) / sqrt(max(sum_l S_il x_l^2, eps^2))``, ``t = lam q``,
    ``out = max(1 - t, 0) x``. Autograd through the same formulas spends most of its time in
    the backward of the broadcast division and in allocating temporaries; this keeps a few
    in-place passes over ``(M, n)`` plus the sparse products. Saved: ``x``, ``q`` and
    ``shrink = max(1 - t, 0)`` (``t = 1 - shrink`` wherever the gradient through ``t`` is not 0).
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, values: Tensor, lam: Tensor, sim: SparseSimilarity, eps, added
    ) -> Tensor:  # x (M, n) contiguous, lam (1, n) or (1, 1)
        mass = values.new_zeros(sim.batch * sim.length).index_add_(0, sim.row, values)
        q = _csr_mm(sim.crow, sim.col, values, x * x)  # squared weighted norms
        if added is None:  # floor the norm; d t / d mass = t / (2 mass)
            rm = mass.sqrt().unsqueeze(1)  # (M, 1)
            q.clamp_min_(eps * eps).rsqrt_().mul_(rm)
            mass = mass.clamp_min(1e-30)
        else:  # the authors' guards: mass + e_mass, norm^2 + e_norm
            mass = mass + added[0]
            q.add_(added[1]).rsqrt_().mul_(mass.sqrt().unsqueeze(1))
        shrink = torch.addcmul(x.new_ones(()), q, lam, value=-1.0).clamp_min_(0.0)
        if not any(ctx.needs_input_grad[:3]):  # inference: no saved tensors, no extra buffer
            return shrink.mul_(x)
        ctx.save_for_backward(
            x,
            values,
            lam,
            mass,
            q,
            shrink,
            sim.crow,
            sim.col,
            sim.row,
            sim.t_crow,
            sim.t_col,
            sim.t_perm,
        )
        ctx.size = sim.batch * sim.length
        return shrink * x

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:
        x, values, lam, mass, q, shrink, crow, col, row, t_crow, t_col, t_perm = ctx.saved_tensors
        need_x, need_v, need_lam = ctx.needs_input_grad[:3]
        g = g.contiguous()
        # w = -(d loss / d t) q, with d out / d t = -x where t < 1 (shrink > 0), else 0
        w = (g * x).masked_fill_(shrink == 0, 0.0).mul_(q)
        gx = gv = glam = None
        if need_lam:  # t = lam q
            glam = -w.sum(0, keepdim=True)
            if lam.shape[1] == 1:
                glam = glam.sum(1, keepdim=True)
        # ``mass`` is the guarded mass (floored, or plus e_mass): q^2 = mass / guarded n2
        if need_v:  # q = sqrt(mass) / norm: d loss / d mass = -(w lam^T) / (2 mass)
            wl = w @ lam.t() if lam.shape[1] > 1 else w.sum(1, keepdim=True) * lam
            gmass = -(wl.squeeze(1) / (2 * mass))
        # d loss / d n2 = (d loss / d t)(-t / (2 n2)) = w q t / (2 mass); 0 where n2 was floored
        # (there every x_l of the row is 0, so w = 0)
        gn2 = w.mul_(q)
        gn2.addcmul_(gn2, shrink, value=-1.0).mul_((0.5 / mass).unsqueeze(1))
        if need_x:
            gx2 = _csr_mm(t_crow, t_col, values[t_perm], gn2)
            gx = torch.mul(shrink, g).addcmul_(gx2, x, value=2.0)
        if need_v:
            pattern = _csr(crow, col, values, ctx.size)
            gv = torch.sparse.sampled_addmm(pattern, gn2, (x * x).t(), beta=0.0).values()
            gv = gv.add_(gmass.index_select(0, row))
        return gx, gv, glam, None, None, None


@dataclass
class SparseRelaxedGroupLasso:
    r"""The relaxed group-lasso step of eq. (11) on a sparse ``Sigma`` (see
    :class:`groupsc.prox.RelaxedGroupLasso`, the same formulas):

    .. math::
        \operatorname{Prox}[A]_{ji} = \max\Big(1 - \frac{\lambda_j \sqrt{\|\Sigma_i\|_1}}
            {\sqrt{\sum_{l} S_{il} A_{jl}^2}}, 0\Big) A_{ji}.

    Args:
        lam: per-atom thresholds ``(n, 1)`` (or a scalar), as for the dense class.
        sim: the sparse similarities.
        eps: floor of the weighted norms.
        added: the authors' additive guards ``(e_mass, e_norm)`` instead of the floor (see
            :class:`groupsc.prox.RelaxedGroupLasso`).
    Codes: ``(N, n, L)`` or the flat ``(n, N L)``, see :func:`aggregate`.
    """

    lam: Tensor | float
    sim: SparseSimilarity
    eps: float = 1e-12
    added: tuple[float, float] | None = None

    def value(self, u: Tensor) -> Tensor:
        sq, mass = weighted_sq_norms(u.pow(2), self.sim), _mass(self.sim, u)
        if self.added is not None:
            return (self.lam * (sq + self.added[1]).sqrt() / (mass + self.added[0]).sqrt()).sum()
        norm = sq.clamp_min(self.eps * self.eps).sqrt()
        return (self.lam * norm / mass.sqrt()).sum()

    def prox(self, x: Tensor) -> Tensor:
        """Same shape as ``x``; fused forward and backward (:class:`_GroupProx`)."""
        rows, back = _rows(x, self.sim)
        lam = torch.as_tensor(self.lam, dtype=x.dtype, device=x.device)
        if lam.numel() not in (1, rows.shape[1]):
            raise ValueError(f"lam has {lam.numel()} entries for {rows.shape[1]} atoms")
        lam = lam.reshape(1, -1)
        out = _GroupProx.apply(rows, self.sim.values, lam, self.sim, self.eps, self.added)
        return back(out)
