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
   ``(x - shift_o x)^2`` with the ``kappa^2`` kernel (one ``p x p`` kernel per channel); all
   offsets run as one depthwise convolution, with a hand-written backward (the generic one is
   about 10x slower on CPU). ``O m L`` multiply-adds instead of ``m L^2``.
2. **k nearest neighbours** (:func:`knn_select`): the ``k`` largest similarities of each row
   are kept; the patch itself is always one of them (its similarity is 1).
3. **Sparse aggregation** (:func:`aggregate`, :func:`weighted_sq_norms`,
   :func:`weighted_average`): a CSR matrix-dense product (``torch.sparse_csr_tensor``), whose
   backward is a product with the stored transpose (codes) and a sampled dense-dense product
   (``torch.sparse.sampled_addmm``, similarities). On this project's CPU it beat a COO product,
   an ``index_select`` loop and ``torch.gather`` in both directions (see
   ``benchmarks/bench_neighbors.py``).
4. **Online averaging** (:class:`KnnTracker`): ``Sigma <- (1 - nu) Sigma + nu Sigma_new``
   (paper section 3.3). Default ``mode="window"``: the averaging is done exactly on the whole
   search window, an ``(N, L, O)`` tensor, and the ``k`` neighbours are re-selected from the
   averaged similarities at every refresh. Since a refresh must compute all the window
   distances anyway to search for neighbours, this costs only ``exp`` and a top-k on
   ``N L O`` numbers, and it equals "dense GroupSC restricted to the window, then top-k" (a
   union of the successive neighbour sets would approximate the same thing with more
   non-zeros). ``mode="fixed"`` keeps the neighbours found on the input and only updates their
   weights (distances on the ``N L k`` kept pairs, no window search after the first).

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
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.nn import functional as F

from groupsc.patches import extract

__all__ = [
    "KnnTracker",
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

MODES = ("window", "fixed")


# -- the search window ----------------------------------------------------------------------
def window_offsets(radius: int) -> Tensor:
    """The ``O = (2 radius + 1)^2`` offsets ``(dy, dx)`` of the window, ``(O, 2)`` int64.

    Row-major (``dy`` outer, both from ``-radius`` to ``radius``), so ``(0, 0)`` (the patch
    itself) is at index ``O // 2``.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    r = torch.arange(-radius, radius + 1)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


def _valid(grid: tuple[int, int], offsets: Tensor) -> Tensor:
    """``(L, O)`` bool: the neighbour ``i + offset`` lies in the ``H' x W'`` grid of corners."""
    hp, wp = grid
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
            gexp = g.unsqueeze(2).expand(n, groups, c, *g.shape[-2:]).reshape(n * oc, 1,
                                                                              *g.shape[-2:])
            gk = F.conv2d(e.reshape(1, n * oc, h, w), gexp, groups=n * oc)
            gk = gk.view(n, groups, c, *gk.shape[-2:]).sum((0, 1))
        return ge, gk, None


def local_distances(x: Tensor, patch: int, kappa: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    r"""Learned distances (eq. 12) between each patch and the patches of its search window.

    Args:
        x: ``(N, C, H, W)`` image block (the current estimate).
        patch: patch side ``p``.
        kappa: ``(C p^2,)`` distance weights :math:`\kappa`, in the order of
            :func:`groupsc.patches.extract`.
        radius: window half-width ``r`` in pixels (offsets of the top-left corners).

    Returns:
        ``dist``: ``(N, L, O)`` with ``dist[n, i, o] = ||diag(kappa)(x_i - x_{i+o})||^2``
        (squared, as in ``SparseCoding.similarity``; units of ``x^2`` times ``kappa^2``), and
        ``+inf`` where the neighbour ``i + o`` falls outside the block; ``offsets``: ``(O, 2)``
        from :func:`window_offsets`. ``O = (2r + 1)^2``. Cost ``O m L`` multiply-adds.
    """
    n, c, h, w = x.shape
    if kappa.numel() != c * patch * patch:
        raise ValueError(f"kappa has {kappa.numel()} entries, expected {c * patch * patch}")
    hp, wp = h - patch + 1, w - patch + 1
    if hp < 1 or wp < 1:
        raise ValueError(f"block {(h, w)} is smaller than the patch size {patch}")
    offsets = window_offsets(radius)
    side = 2 * radius + 1
    o = side * side
    xp = F.pad(x, (radius, radius, radius, radius))
    win = F.unfold(xp, side).view(n, c, o, h, w)  # win[n, c, o, a, b] = x[n, c, (a, b) + o]
    e = (win - x.unsqueeze(2)).square().transpose(1, 2).reshape(n, o * c, h, w)
    k2 = (kappa * kappa).view(c, patch, patch)
    dist = _SharedKernelConv.apply(e, k2, o).view(n, o, hp * wp).transpose(1, 2)
    valid = _valid((hp, wp), offsets).to(x.device)
    return dist.masked_fill(~valid, float("inf")), offsets.to(x.device)


def window_similarity(x: Tensor, patch: int, kappa: Tensor, radius: int) -> Tensor:
    """``exp(-dist)`` of :func:`local_distances`: ``(N, L, O)`` in [0, 1], 0 outside the block,
    1 at the center offset (the patch itself)."""
    dist, _ = local_distances(x, patch, kappa, radius)
    return torch.exp(-dist)


# -- the sparse similarity matrix -----------------------------------------------------------
@dataclass(frozen=True)
class SparseSimilarity:
    """Block-diagonal sparse similarities of ``N`` blocks of ``L`` patches, in CSR form.

    Rows and columns are global patch indices ``n L + i``. Row ``r`` holds the neighbours of
    patch ``r``: entries ``crow[r] : crow[r + 1]`` of ``col`` (sorted) and ``values``.

    Attributes:
        batch, length: ``N`` and ``L``.
        crow: ``(N L + 1,)`` int64 row pointers.
        col: ``(nnz,)`` int64 neighbour indices.
        row: ``(nnz,)`` int64 row of each entry.
        values: ``(nnz,)`` similarities in [0, 1], differentiable.
        t_crow, t_col, t_perm: the transpose in CSR form; its values are ``values[t_perm]``.
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
        counts = torch.bincount(row, minlength=size)
        crow = torch.zeros(size + 1, dtype=torch.long, device=row.device)
        crow[1:] = torch.cumsum(counts, 0)
        t_perm = torch.argsort(col, stable=True)  # stable: rows stay sorted within a column
        t_crow = torch.zeros_like(crow)
        t_crow[1:] = torch.cumsum(torch.bincount(col, minlength=size), 0)
        return cls(batch, length, crow, col, row, values, t_crow, row[t_perm], t_perm, slot)

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
        local = self.col - (self.row // self.length) * self.length
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
    offsets = window_offsets(radius).to(window_sim.device)
    if offsets.shape[0] != o:
        raise ValueError(f"window_sim has {o} offsets, radius {radius} gives {offsets.shape[0]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    valid = _valid(grid, offsets).to(window_sim.device)  # (L, O)
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


def knn_similarity(x: Tensor, patch: int, kappa: Tensor, radius: int, k: int) -> SparseSimilarity:
    """kNN similarities of the patches of ``x`` ``(N, C, H, W)``: :func:`window_similarity`
    then :func:`knn_select`. See those for the arguments."""
    grid = (x.shape[-2] - patch + 1, x.shape[-1] - patch + 1)
    return knn_select(window_similarity(x, patch, kappa, radius), grid, radius, k)


def pair_distances(x: Tensor, patch: int, kappa: Tensor, sim: SparseSimilarity) -> Tensor:
    """Distances (eq. 12, squared) between the patches of ``x`` on the pairs of ``sim``:
    ``(nnz,)``. ``O(nnz m)``: refreshes the weights of fixed neighbours without a search."""
    z = extract(x, patch) * kappa[None, :, None]  # (N, m, L)
    zt = z.transpose(1, 2).reshape(-1, z.shape[1])
    return (zt.index_select(0, sim.row) - zt.index_select(0, sim.col)).square().sum(-1)


# -- aggregation ----------------------------------------------------------------------------
def _csr(crow: Tensor, col: Tensor, values: Tensor, size: int) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, (size, size), check_invariants=False)


class _CsrMatmul(torch.autograd.Function):
    """``S @ x`` for a CSR ``S`` with differentiable values; ``x`` ``(N L, n)`` contiguous."""

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, sim: SparseSimilarity) -> Tensor:
        size = sim.batch * sim.length
        ctx.save_for_backward(values, x, sim.crow, sim.col, sim.t_crow, sim.t_col, sim.t_perm)
        ctx.size = size
        return _csr(sim.crow, sim.col, values, size) @ x

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        values, x, crow, col, t_crow, t_col, t_perm = ctx.saved_tensors
        g = g.contiguous()
        gv = gx = None
        if ctx.needs_input_grad[0]:  # gv[e] = <g[row_e], x[col_e]>: a sampled product
            pattern = _csr(crow, col, values, ctx.size)
            gv = torch.sparse.sampled_addmm(pattern, g, x.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            gx = _csr(t_crow, t_col, values[t_perm], ctx.size) @ g
        return gv, gx, None


def aggregate(x: Tensor, sim: SparseSimilarity) -> Tensor:
    r"""``out[..., i] = sum_j S_ij x[..., j]``: what ``x @ S^T`` computes for a dense ``S``.

    Args:
        x: codes with patches as columns, ``(N, n, L)`` (one block per image, as in
            :mod:`groupsc.prox`) or the flat ``(n, N L)`` layout of ``SparseCoding``.
            A layout whose patch axis is the slow one in memory (e.g. the ``(N, L, n)`` rows of
            a contiguous tensor, transposed) avoids a copy.
        sim: the similarities of the ``N`` blocks.

    Returns:
        The same shape as ``x``. Cost ``n nnz`` multiply-adds (``n N L k``), vs ``n N L^2``.
    """
    size = sim.batch * sim.length
    if x.ndim == 3:
        if x.shape[0] != sim.batch or x.shape[2] != sim.length:
            raise ValueError(f"codes {tuple(x.shape)} do not match {sim.batch} x {sim.length}")
        rows = x.transpose(1, 2).reshape(size, x.shape[1]).contiguous()
        out = _CsrMatmul.apply(sim.values, rows, sim)
        return out.view(sim.batch, sim.length, -1).transpose(1, 2)
    if x.ndim == 2:
        if x.shape[1] != size:
            raise ValueError(f"codes {tuple(x.shape)} do not have {size} columns")
        return _CsrMatmul.apply(sim.values, x.t().contiguous(), sim).t()
    raise ValueError(f"expected (N, n, L) or (n, N L) codes, got {tuple(x.shape)}")


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


@dataclass
class SparseRelaxedGroupLasso:
    r"""The relaxed group-lasso step of eq. (11) on a sparse ``Sigma`` (see
    :class:`groupsc.prox.RelaxedGroupLasso`, the same formulas):

    .. math::
        \operatorname{Prox}[A]_{ji} = \max\Big(1 - \frac{\lambda_j \sqrt{\|\Sigma_i\|_1}}
            {\sqrt{\sum_{l} S_{il} A_{jl}^2}}, 0\Big) A_{ji}.

    Args:
        lam: per-atom thresholds, ``(n, 1)`` (broadcast against ``(N, n, L)`` or ``(n, N L)``).
        sim: the sparse similarities.
        eps: floor of the weighted norms.
    """

    lam: Tensor | float
    sim: SparseSimilarity
    eps: float = 1e-12

    def _norms(self, a: Tensor) -> tuple[Tensor, Tensor]:
        norm = weighted_sq_norms(a.pow(2), self.sim).clamp_min(self.eps * self.eps).sqrt()
        return norm, _mass(self.sim, a).sqrt()

    def value(self, u: Tensor) -> Tensor:
        norm, root_mass = self._norms(u)
        return (self.lam * norm / root_mass).sum()

    def prox(self, x: Tensor) -> Tensor:
        norm, root_mass = self._norms(x)
        return torch.relu(1.0 - self.lam * root_mass / norm) * x


# -- online averaging -------------------------------------------------------------------------
class KnnTracker:
    r"""kNN similarities with the online averaging of section 3.3,
    :math:`\Sigma \leftarrow (1 - \nu)\Sigma + \nu \Sigma_{new}`.

    ``mode="window"`` (default) averages the similarities over the whole search window,
    ``(N, L, O)``, and re-selects the ``k`` neighbours from the average at each refresh: the
    top-k of the dense average restricted to the window. ``mode="fixed"`` keeps the neighbours
    of :meth:`start` and averages their weights only (no window search after the first).

    Usage::

        tracker = KnnTracker(patch=9, radius=7, k=16)
        sim = tracker.start(y, kappa)
        ...
        sim = tracker.update(estimate, kappa, nu)
    """

    def __init__(self, patch: int, radius: int, k: int, mode: str = "window") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
        self.patch, self.radius, self.k, self.mode = patch, radius, k, mode
        self.window: Tensor | None = None
        self.sim: SparseSimilarity | None = None
        self.grid: tuple[int, int] | None = None

    def start(self, x: Tensor, kappa: Tensor) -> SparseSimilarity:
        """Similarities of the patches of ``x`` ``(N, C, H, W)`` (the input block)."""
        self.grid = (x.shape[-2] - self.patch + 1, x.shape[-1] - self.patch + 1)
        window = window_similarity(x, self.patch, kappa, self.radius)
        self.sim = knn_select(window, self.grid, self.radius, self.k)
        self.window = window if self.mode == "window" else None
        return self.sim

    def update(self, x: Tensor, kappa: Tensor, nu: Tensor | float) -> SparseSimilarity:
        """Blend in the similarities of the current estimate ``x`` with weight ``nu``."""
        if self.sim is None:
            raise RuntimeError("call start() first")
        if self.mode == "window":
            new = window_similarity(x, self.patch, kappa, self.radius)
            self.window = (1 - nu) * self.window + nu * new
            self.sim = knn_select(self.window, self.grid, self.radius, self.k)
        else:
            new = torch.exp(-pair_distances(x, self.patch, kappa, self.sim))
            self.sim = self.sim.with_values((1 - nu) * self.sim.values + nu * new)
        return self.sim
