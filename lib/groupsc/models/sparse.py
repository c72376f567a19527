"""SC, CSR and GroupSC: one unrolled sparse-coding core with a pluggable proximal step.

Lecouat, Ponce & Mairal, "Fully Trainable and Interpretable Non-Local Sparse Models for Image
Restoration", ECCV 2020 (section 3, Algorithm 1; appendix for CSR).

Every overlapping ``p x p`` patch ``y_i`` is centered (eq. 5), encoded by K LISTA steps

.. math::

    \\alpha_i \\leftarrow \\mathrm{Prox}_{\\Sigma, \\Lambda_k}\\big[\\alpha_i
        + C^\\top \\big(M_i \\odot (y_i^c - D\\alpha_i)\\big)\\big],\\qquad \\alpha_i^{(0)} = 0,

decoded with a separate matrix ``W``, its mean added back, and the patch estimates averaged
(eq. 6). ``M`` is the measurement mask (all ones for denoising, the Bayer mask for
demosaicking, eq. 14). The three models differ only in the prox:

- ``soft`` (SC): soft-thresholding with per-step, per-atom thresholds ``Lambda_k``;
- ``group`` (GroupSC): the relaxed group-lasso prox of eq. 11, with similarities ``Sigma``
  between patches of the current estimate (learned distance of eq. 12, online averaging with
  a learned ``nu``, refreshed every ``refresh`` steps);
- ``csr`` (CSR): the prox of ``|u|_1 + gamma |u - beta|_1`` with ``beta`` the similarity-weighted
  average of the current codes (appendix eq. 2).

Reference settings (paper appendix Table 4, gray denoising): ``p = 9``, 256 atoms, ``K = 24``,
``f = 1/6`` (refresh every 6 steps, i.e. 4 similarity updates), window 56. Parameters:
``C, D, W`` (3 x 81 x 256) + ``Lambda`` (24 x 256) = 68,352 ("68k" in the paper's tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from groupsc import neighbors as NB
from groupsc import patches as P
from groupsc import prox as PX

PROXES = ("soft", "group", "csr")


@dataclass
class Encoding:
    """The state of the unrolled algorithm on one block.

    ``alpha``: codes ``(atoms, N L)`` (patch ``l`` of image ``i`` in column ``i L + l``);
    ``mu``: patch means ``(N, C, 1, L)``; ``sim``: the last similarity, ``(N, L, L)`` dense or a
    :class:`groupsc.neighbors.SparseSimilarity` with ``knn`` (non-local
    models, else None); ``size``: the block's ``(h, w)``; ``n_img``: N.
    """

    alpha: torch.Tensor
    mu: torch.Tensor
    sim: torch.Tensor | None
    size: tuple[int, int]
    n_img: int

    def codes(self) -> torch.Tensor:
        """Codes as ``(N, atoms, L)``."""
        return self.alpha.view(self.alpha.shape[0], self.n_img, -1).transpose(0, 1)


class SparseCoding(nn.Module):
    """The unrolled sparse-coding restorer (SC / CSR / GroupSC by ``prox``).

    Args:
        patch: patch side ``p``.
        atoms: dictionary size ``n``.
        steps: LISTA steps ``K``.
        channels: image channels ``C`` (patch dimension ``m = C p^2``).
        prox: ``"soft"``, ``"group"`` or ``"csr"``.
        window: side of the non-local window, also the block size for whole images.
        refresh: similarity refresh period in steps (``1/f``); non-local models only.
        block_stride: step between blocks for whole images (``window - overlap``).
        knn: the fast non-local variant, e.g. ``{"radius": 7, "k": 16, "mode": "fixed"}``:
            each patch keeps its ``k`` most similar patches within ``+-radius`` pixels
            (:mod:`groupsc.neighbors`), so similarities are sparse and whole images are
            processed at once (no blocks). ``None``: the paper's dense similarities.
    Input: ``(N, C, H, W)`` in [0, 1] (noisy or mosaicked); output the same shape.
    """

    def __init__(
        self,
        patch: int = 9,
        atoms: int = 256,
        steps: int = 24,
        channels: int = 1,
        prox: str = "soft",
        window: int = 56,
        refresh: int = 6,
        block_stride: int = 48,
        knn: dict | None = None,
    ) -> None:
        super().__init__()
        if prox not in PROXES:
            raise ValueError(f"unknown prox {prox!r}; use one of {PROXES}")
        m = channels * patch * patch
        init = torch.randn(m, atoms) / math.sqrt(m)
        init = init / torch.linalg.matrix_norm(init, ord=2)
        self.C = nn.Parameter(init.clone())
        self.D = nn.Parameter(init.clone())
        self.W = nn.Parameter(init.clone())
        self.lam = nn.Parameter(torch.full((steps, atoms), 0.01))
        self.patch, self.atoms, self.steps, self.channels = patch, atoms, steps, channels
        self.prox, self.window, self.refresh = prox, window, refresh
        self.block_stride = block_stride
        self.knn = dict(knn) if knn else None
        if prox != "soft":
            self.kappa = nn.Parameter(torch.ones(m))  # learned distance weights (eq. 12)
            self.nu_logit = nn.Parameter(torch.zeros(1))  # online averaging weight, sigmoid
        if prox == "csr":
            self.gamma = nn.Parameter(torch.ones(steps))  # one CSR weight per step (68k total)

    # -- initialization ---------------------------------------------------------------------
    @torch.no_grad()
    def set_dictionary(self, dictionary: torch.Tensor, lam: float | None = None) -> None:
        """Set ``C = D = W = dictionary / ||dictionary||_2`` (paper section 4, appendix B).

        ``dictionary``: ``(m, n)``, atoms as columns. Optionally reset every threshold to ``lam``.
        """
        if dictionary.shape != self.D.shape:
            raise ValueError(f"dictionary shape {tuple(dictionary.shape)} != {tuple(self.D.shape)}")
        d = dictionary / torch.linalg.matrix_norm(dictionary, ord=2)
        for param in (self.C, self.D, self.W):
            param.copy_(d)
        if lam is not None:
            self.lam.fill_(lam)

    # -- the core --------------------------------------------------------------------------
    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """``Sigma_ij = exp(-||diag(kappa)(x_i - x_j)||^2)`` between all patches of a block.

        ``x``: ``(N, C, b, b)`` current estimate; returns ``(N, L, L)``. The block is the
        semi-local window, so every pair in it is a candidate neighbour.
        """
        z = P.extract(x, self.patch) * self.kappa[None, :, None]  # (N, m, L)
        sq = (z * z).sum(1)  # (N, L)
        d = sq[:, :, None] + sq[:, None, :] - 2 * z.transpose(1, 2) @ z
        return torch.exp(-d.clamp_min(0))

    def _prox(self, b: torch.Tensor, k: int, sim: torch.Tensor | None, n_img: int) -> torch.Tensor:
        """Step ``k``'s prox on codes ``b`` of shape ``(atoms, N L)`` (all patches as columns)."""
        lam = self.lam[k].clamp_min(0)[:, None]  # (n, 1)
        if self.prox == "soft":
            return PX.soft_threshold(b, lam)
        if self.knn is not None:  # sparse k-NN similarities, codes stay flat (n, N L)
            if self.prox == "group":
                return NB.SparseRelaxedGroupLasso(lam, sim).prox(b)
            beta = NB.weighted_average(b, sim)
            return PX.CSR(lam, self.gamma[k].clamp_min(0), beta).prox(b)
        n = b.shape[0]
        bb = b.view(n, n_img, -1).transpose(0, 1)  # (N, n, L): one block per image
        if self.prox == "group":
            out = PX.RelaxedGroupLasso(lam, sim).prox(bb)
        else:
            beta = PX.similarity_average(bb, sim)
            out = PX.CSR(lam, self.gamma[k].clamp_min(0), beta).prox(bb)
        return out.transpose(0, 1).reshape(n, -1)

    def encode(self, y: torch.Tensor, mask: torch.Tensor | None = None) -> Encoding:
        """Run the K unrolled steps on one block (Algorithm 1); see :class:`Encoding`.

        ``y``: ``(N, C, h, w)`` with ``h, w <= window`` for non-local models.
        ``mask``: optional ``(N, C, h, w)`` measurement mask (1 = observed).
        """
        n_img, size = y.shape[0], tuple(y.shape[-2:])
        yp = P.extract(y, self.patch)  # (N, m, L)
        if mask is not None:
            mp = P.extract(mask, self.patch)
            yc, mu = P.center(yp, self.channels, mp)
        else:
            mp = None
            yc, mu = P.center(yp, self.channels)
        m, length = yc.shape[1], yc.shape[2]
        nonlocal_ = self.prox != "soft"
        # The k-NN prox works on codes stored as rows (N L, atoms); its models keep every
        # tensor of the loop in that layout (alpha is then a transposed view), which saves two
        # transposing copies of the codes per step.
        rows = nonlocal_ and self.knn is not None
        flat = yc.transpose(0, 1).reshape(m, n_img * length)  # (m, N L): one GEMM per product
        mflat = None if mp is None else mp.transpose(0, 1).reshape(m, n_img * length)
        if rows:
            flat = flat.t().contiguous()  # (N L, m)
            mflat = None if mflat is None else mflat.t().contiguous()
            alpha = flat.new_zeros(n_img * length, self.atoms).t()
        else:
            alpha = flat.new_zeros(self.atoms, n_img * length)
        enc = Encoding(alpha, mu, None, size, n_img)
        if nonlocal_:
            nu = torch.sigmoid(self.nu_logit)
            if self.knn is not None:
                knn = self.knn
                tracker = NB.KnnTracker(
                    self.patch, knn["radius"], knn["k"], knn.get("mode", "fixed")
                )
                enc.sim = tracker.start(y, self.kappa)
            else:
                enc.sim = self.similarity(y)
        ct = self.C.t()
        for k in range(self.steps):
            if nonlocal_ and k > 0 and k % self.refresh == 0:
                if self.knn is not None:
                    enc.sim = tracker.update(self.decode(enc), self.kappa, nu)
                else:
                    enc.sim = (1 - nu) * enc.sim + nu * self.similarity(self.decode(enc))
            # alpha + C^T (y - D alpha), as two fused GEMMs: a third faster than matmul + add
            # (one pass less over the (atoms, N L) codes; same values to float rounding)
            # (with rows, the same products transposed: (N L, m) residuals, (N L, atoms) codes)
            if rows:
                resid = torch.addmm(flat, enc.alpha.t(), self.D.t(), alpha=-1)
            else:
                resid = torch.addmm(flat, self.D, enc.alpha, alpha=-1)
            if mflat is not None:
                resid = resid * mflat
            if rows:
                b = torch.addmm(enc.alpha.t(), resid, self.C).t()
            else:
                b = torch.addmm(enc.alpha, ct, resid)
            enc.alpha = self._prox(b, k, enc.sim, n_img)
        return enc

    def decode_sums(self, enc: Encoding) -> P.Sums:
        """Patch estimates ``W alpha + mu`` put back: (sum, count) per pixel."""
        m = self.W.shape[0]
        est = (self.W @ enc.alpha).view(m, enc.n_img, -1).transpose(0, 1)
        return P.fold_sums(P.uncenter(est, enc.mu), enc.size, self.patch)

    def decode(self, enc: Encoding) -> torch.Tensor:
        """The image estimate of an encoding (eq. 6): ``(N, C, h, w)``."""
        num, den = self.decode_sums(enc)
        return num / den

    def sums(self, y: torch.Tensor, mask: torch.Tensor | None = None) -> P.Sums:
        """Restore one block: the (sum, count) of its patch estimates, see :func:`P.fold_sums`."""
        return self.decode_sums(self.encode(y, mask))

    def forward(self, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``(N, C, H, W)``; images larger than the window go block by block."""
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected (N, {self.channels}, H, W) input, got {tuple(y.shape)}")
        if self.prox == "soft" or self.knn is not None or max(y.shape[-2:]) <= self.window:
            num, den = self.sums(y, mask)  # per patch or local: the whole image at once
            return num / den
        return P.blockwise(self.sums, y, self.window, self.block_stride, mask)
