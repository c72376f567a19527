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
   :func:`weighted_average`, and :class:`groupsc.prox.SparseRelaxedGroupLasso`): a CSR
   matrix-dense product
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

Layout: :mod:`groupsc.neighbors.window` (the search window and its distances),
:mod:`groupsc.neighbors.graph` (the sparse graph and its products); the sparse group prox is in
:mod:`groupsc.prox` beside the dense one, the online averaging in :mod:`groupsc.similarity`.

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

from groupsc.neighbors.graph import (
    SparseSimilarity,
    aggregate,
    knn_select,
    knn_similarity,
    pair_distances,
    weighted_average,
    weighted_sq_norms,
)
from groupsc.neighbors.window import local_distances, window_offsets, window_similarity

__all__ = [
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
