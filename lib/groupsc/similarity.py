r"""The similarities Sigma of GroupSC and CSR, and their online averaging (paper section 3.3).

Two objects with one interface: :class:`DenseSimilarity` (every pair of patches of a block,
the paper's model) and :class:`KnnSimilarity` (each patch's ``k`` most similar patches within
``+-radius`` pixels, :mod:`groupsc.neighbors`). The unrolled algorithm calls

- ``start(y, kappa, mu)`` once, on the input block ``y`` ``(N, C, h, w)``;
- ``update(x, kappa, nu)`` at each refresh, on the current image estimate ``x``:
  :math:`\Sigma \leftarrow (1 - \nu)\Sigma + \nu\,\Sigma(x)`, the averaging written once
  (:meth:`OnlineSimilarity.update`).

The learned distance is eq. (12), :math:`\Sigma_{ij} = \exp(-\|\operatorname{diag}(\kappa)
(x_i - x_j)\|_2^2)`. With ``centered=True`` (the authors' code, the default of the models) the
patches are centred first: ``y``'s patches minus their means at the start, and at each refresh
the patches of the estimate minus the means ``mu`` of the *input's* patches. A constant added
to a patch then leaves its similarities unchanged. ``centered=False`` compares raw patches (this
project's first models).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from groupsc import neighbors as NB
from groupsc import patches as P

WINDOWS = ("authors", "block")
KNN_MODES = ("window", "fixed")


def _centred(x: Tensor, patch: int, mu: Tensor | None) -> Tensor:
    """Patches of ``x`` ``(N, m, L)``, minus ``mu`` ``(N, C, 1, L)`` per channel if given."""
    z = P.extract(x, patch)
    return z if mu is None else P.subtract_means(z, mu)


@lru_cache(maxsize=16)
def _window_mask(grid: tuple[int, int], span: int) -> Tensor:
    """``(L, L)`` bool, ``[l, i]`` true when patch ``l`` is in the window of patch ``i``: its
    corner offset ``l - i`` lies in ``[-(span // 2), span - 1 - span // 2]`` along both axes
    (CPU, cached; not to be modified)."""
    hp, wp = grid
    lo, hi = -(span // 2), span - 1 - span // 2
    rows = torch.arange(hp).repeat_interleave(wp)
    cols = torch.arange(wp).repeat(hp)
    dr = rows[:, None] - rows[None, :]
    dc = cols[:, None] - cols[None, :]
    return (dr >= lo) & (dr <= hi) & (dc >= lo) & (dc <= hi)


def window_mask(grid: tuple[int, int], span: int) -> Tensor:
    """The authors' neighbour window on a block whose patch corners form ``grid`` ``(H', W')``.

    ``span`` is the side of the grid of the model's window (``window - patch + 1``: 48 for
    56 x 56 blocks and 9 x 9 patches). Patch ``l`` is a neighbour of patch ``i`` when
    ``l - i`` is within ``-(span // 2) .. span - 1 - span // 2`` in rows and in columns
    (``-24 .. +23``): a corner patch of a 56 x 56 block has 576 neighbours (top left) or 625
    (bottom right), a central one all 2304. Returns ``(L, L)`` bool, ``[l, i]``: column ``i``
    holds the neighbours of ``i`` (the convention of :class:`groupsc.prox.RelaxedGroupLasso`).
    """
    return _window_mask(tuple(grid), int(span)).clone()


class OnlineSimilarity:
    """Similarities refreshed with the online average :math:`(1 - \\nu)\\Sigma + \\nu\\Sigma_{new}`.

    Subclasses define ``_measure(x, kappa)`` (the state from an image, e.g. all pairwise
    similarities) and ``_current()`` (what the prox uses, from the averaged state).
    """

    def __init__(self, patch: int, centered: bool = True) -> None:
        self.patch, self.centered = patch, centered
        self.mu: Tensor | None = None
        self.state: Tensor | None = None

    def start(self, y: Tensor, kappa: Tensor, mu: Tensor | None = None):
        """Similarities of the input block ``y`` ``(N, C, h, w)``; ``mu``: its patch means
        ``(N, C, 1, L)`` (from :func:`groupsc.patches.center`; computed here if None)."""
        if self.centered:
            self.mu = mu if mu is not None else P.center(P.extract(y, self.patch), y.shape[1])[1]
        self.state = self._first(y, kappa)
        return self._current()

    def update(self, x: Tensor, kappa: Tensor, nu: Tensor | float):
        """Blend in the similarities of the current estimate ``x`` with weight ``nu``."""
        if self.state is None:
            raise RuntimeError("call start() first")
        self.state = (1 - nu) * self.state + nu * self._measure(x, kappa)
        return self._current()

    def _first(self, y: Tensor, kappa: Tensor) -> Tensor:
        return self._measure(y, kappa)

    def _measure(self, x: Tensor, kappa: Tensor) -> Tensor:
        raise NotImplementedError

    def _current(self):
        return self.state


class DenseSimilarity(OnlineSimilarity):
    """All pairs of the block's ``L`` patches: ``(N, L, L)``, symmetric before the window.

    ``window``: ``"authors"`` keeps the neighbours of :func:`window_mask` (``span``: the side
    of the model's patch grid) and sets the others to 0; ``"block"`` keeps every pair.
    """

    def __init__(
        self, patch: int, centered: bool = True, window: str = "authors", span: int = 48
    ) -> None:
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; use one of {WINDOWS}")
        super().__init__(patch, centered)
        self.window, self.span = window, span

    def _measure(self, x: Tensor, kappa: Tensor) -> Tensor:
        z = _centred(x, self.patch, self.mu) * kappa[None, :, None]  # (N, m, L)
        sq = (z * z).sum(1)  # (N, L)
        d = (sq[:, :, None] + sq[:, None, :] - 2 * z.transpose(1, 2) @ z).clamp_min(0)
        if self.window == "authors":
            grid = (x.shape[-2] - self.patch + 1, x.shape[-1] - self.patch + 1)
            mask = window_mask(grid, self.span).to(x.device)
            d = d.masked_fill(~mask, float("inf"))
        return torch.exp(-d)


class KnnSimilarity(OnlineSimilarity):
    """The ``k`` most similar patches within ``+-radius`` pixels, as a
    :class:`groupsc.neighbors.SparseSimilarity`.

    ``mode="window"`` averages the similarities over the whole search window ``(N, L, O)``
    and re-selects the ``k`` neighbours from the average at each refresh (the top-k of the
    dense average restricted to the window). ``mode="fixed"`` keeps the neighbours found at
    :meth:`start` and averages their weights only (no window search after the first).
    """

    def __init__(
        self, patch: int, radius: int, k: int, mode: str = "window", centered: bool = True
    ) -> None:
        if mode not in KNN_MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {KNN_MODES}")
        super().__init__(patch, centered)
        self.radius, self.k, self.mode = radius, k, mode
        self.sim: NB.SparseSimilarity | None = None
        self.grid: tuple[int, int] | None = None

    def _grid_mu(self) -> Tensor | None:
        """``mu`` as ``(N, C, H', W')`` maps for the window distances."""
        if self.mu is None:
            return None
        n, c = self.mu.shape[:2]
        return self.mu.reshape(n, c, *self.grid)

    def _window(self, x: Tensor, kappa: Tensor) -> Tensor:
        return NB.window_similarity(x, self.patch, kappa, self.radius, self._grid_mu())

    def _first(self, y: Tensor, kappa: Tensor) -> Tensor:
        self.grid = (y.shape[-2] - self.patch + 1, y.shape[-1] - self.patch + 1)
        window = self._window(y, kappa)
        self.sim = NB.knn_select(window, self.grid, self.radius, self.k)
        return window if self.mode == "window" else self.sim.values

    def _measure(self, x: Tensor, kappa: Tensor) -> Tensor:
        if self.mode == "window":
            return self._window(x, kappa)
        return torch.exp(-NB.pair_distances(x, self.patch, kappa, self.sim, self.mu))

    def _current(self) -> NB.SparseSimilarity:
        if self.mode == "window":
            self.sim = NB.knn_select(self.state, self.grid, self.radius, self.k)
        else:
            self.sim = self.sim.with_values(self.state)
        return self.sim


def neighbour_mass(sim) -> float:
    r"""How open the groups are: :math:`\sum_{j \ne i} \Sigma_{ji}` averaged over the patches
    ``i`` (0: every group is its patch alone, i.e. SC; 1 is the patch's own weight).

    ``sim``: a dense ``(N, L, L)`` similarity (column ``i`` holds the neighbours of ``i``, as
    the group prox reads it) or a :class:`groupsc.neighbors.SparseSimilarity` (row ``i``).
    """
    if isinstance(sim, torch.Tensor):
        own = sim.diagonal(dim1=-2, dim2=-1)
        return float((sim.sum(-2) - own).mean())
    dense_self = sim.row == sim.col.long()
    own = sim.values[dense_self].sum()
    return float((sim.values.sum() - own) / (sim.batch * sim.length))
