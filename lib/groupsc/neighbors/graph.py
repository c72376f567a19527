r"""The sparse k-NN similarity graph (:class:`SparseSimilarity`, CSR form) and its products:
neighbour selection, distances on the kept pairs, aggregation (see :mod:`groupsc.neighbors`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from groupsc.neighbors.window import _offsets, _valid, window_similarity
from groupsc.patches import extract, subtract_means

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


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
        z = subtract_means(z, mu)
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
