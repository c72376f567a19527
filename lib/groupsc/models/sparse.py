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

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from groupsc import neighbors as NB
from groupsc import patches as P
from groupsc import prox as PX
from groupsc import similarity as SIM

PROXES = ("soft", "group", "csr")
PROX_EPS = ("authors", "floor")
MOSAIC_GUIDES = ("mosaic", "bilinear")

# The forward pass of the authors' code (bruno-31/groupsc; ../shared/UPSTREAM_GROUPSC.md), the
# default, and that of the checkpoints this project trained before these options existed
# (their model_config records none of them; groupsc.methods.trained fills these in).
AUTHORS_FORWARD = {
    "centered_similarity": True,
    "refresh_offset": 1,
    "dense_window": "authors",
    "prox_eps": "authors",
    "signed_thresholds": True,
}
LEGACY_FORWARD = {
    "centered_similarity": False,
    "refresh_offset": 0,
    "dense_window": "block",
    "prox_eps": "floor",
    "signed_thresholds": False,
}


def bilinear_fill(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of the unobserved samples of ``y`` ``(N, C, H, W)`` (``mask``:
    1 = observed, same shape), channel by channel: the normalised convolution
    ``(k * (M y)) / (k * M)`` with the tent ``k = [1 2 1]^T [1 2 1]``, observed samples kept.
    On a Bayer mosaic it is the classical bilinear demosaicking (the mean of the 2 or 4
    nearest samples of the channel)."""
    c = y.shape[1]
    tent = torch.tensor([1.0, 2.0, 1.0], dtype=y.dtype, device=y.device)
    kernel = (tent[:, None] * tent[None, :]).expand(c, 1, 3, 3)
    num = torch.nn.functional.conv2d(y * mask, kernel, padding=1, groups=c)
    den = torch.nn.functional.conv2d(mask, kernel, padding=1, groups=c)
    return torch.where(mask > 0, y, num / den.clamp_min(1e-12))


@dataclass
class Encoding:
    """The state of the unrolled algorithm on one block.

    ``alpha``: codes ``(atoms, N L)`` (patch ``l`` of image ``i`` in column ``i L + l``),
    stored as rows: the transposed view of a contiguous ``(N L, atoms)`` tensor;
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

    The forward pass (defaults: the authors' code, :data:`AUTHORS_FORWARD`; this project's
    first models: :data:`LEGACY_FORWARD`):

    - ``centered_similarity``: compare centred patches (the input's patch means subtracted,
      also from the estimate's patches at a refresh), else raw patches;
    - ``refresh_offset``: the similarities are refreshed before the steps ``k`` with
      ``k - refresh_offset`` a positive multiple of ``refresh`` (step 0 is the first prox):
      1 gives steps 7, 13, 19 for ``refresh = 6`` (the authors' loop), 0 gives 6, 12, 18;
    - ``dense_window``: ``"authors"``, the neighbours of a dense patch are those with corner
      offsets in ``-24 .. +23`` (:func:`groupsc.similarity.window_mask`, for a 56 x 56
      window), ``"block"``: every patch of the block;
    - ``prox_eps``: ``"authors"``, the group prox divides ``sqrt(mass + 1e-12)`` by
      ``sqrt(norm^2 + 1e-8)``; ``"floor"``: the norm is floored at 1e-12;
    - ``signed_thresholds``: the learned thresholds are used as they are (a negative one
      widens instead of shrinking, as in the authors' code), else clamped at 0.

    Demosaicking (a ``mask`` given to the forward pass): ``mosaic_guide`` is the image the first
    similarities are measured on. ``"mosaic"``: the observation as it is, zeros where a channel
    is not sampled (the authors' mosaic model also measures its first similarities on the
    mosaic, summed over channels); ``"bilinear"``: its bilinear interpolation
    (:func:`bilinear_fill`), so that two patches compare by content rather than by where
    their Bayer phases put the zeros. Without a mask it has no effect.

    Blind denoising (paper section 3.4): ``noise_bins``, the noise levels (0-255) of a set of
    thresholds each, ``(bins, K, atoms)``, over shared dictionaries; a forward pass takes the
    ``sigma`` of its batch (the true one in training, an estimate at inference) and uses the
    thresholds of the nearest bin.

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
        centered_similarity: bool = True,
        refresh_offset: int = 1,
        dense_window: str = "authors",
        prox_eps: str = "authors",
        signed_thresholds: bool = True,
        noise_bins: tuple[float, ...] | list[float] | None = None,
        mosaic_guide: str = "mosaic",
    ) -> None:
        super().__init__()
        if prox not in PROXES:
            raise ValueError(f"unknown prox {prox!r}; use one of {PROXES}")
        if dense_window not in SIM.WINDOWS:
            raise ValueError(f"unknown dense_window {dense_window!r}; use one of {SIM.WINDOWS}")
        if prox_eps not in PROX_EPS:
            raise ValueError(f"unknown prox_eps {prox_eps!r}; use one of {PROX_EPS}")
        if mosaic_guide not in MOSAIC_GUIDES:
            raise ValueError(f"unknown mosaic_guide {mosaic_guide!r}; use one of {MOSAIC_GUIDES}")
        m = channels * patch * patch
        init = torch.randn(m, atoms) / math.sqrt(m)
        init = init / torch.linalg.matrix_norm(init, ord=2)
        self.C = nn.Parameter(init.clone())
        self.D = nn.Parameter(init.clone())
        self.W = nn.Parameter(init.clone())
        self.noise_bins = tuple(float(b) for b in noise_bins) if noise_bins else None
        shape = (len(self.noise_bins), steps, atoms) if self.noise_bins else (steps, atoms)
        self.lam = nn.Parameter(torch.full(shape, 0.01))
        self.patch, self.atoms, self.steps, self.channels = patch, atoms, steps, channels
        self.prox, self.window, self.refresh = prox, window, refresh
        self.block_stride = block_stride
        self.knn = dict(knn) if knn else None
        self.centered_similarity, self.refresh_offset = bool(centered_similarity), refresh_offset
        self.dense_window, self.prox_eps = dense_window, prox_eps
        self.signed_thresholds = bool(signed_thresholds)
        self.mosaic_guide = mosaic_guide
        if prox != "soft":
            self.kappa = nn.Parameter(torch.ones(m))  # learned distance weights (eq. 12)
            # online averaging weight sigmoid(nu_logit), 0.73 at first as in the authors' code
            self.nu_logit = nn.Parameter(torch.ones(1))
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

    def forward_options(self) -> dict:
        """The options of the forward pass (see the class), as ``model_config`` records them."""
        return {key: getattr(self, key) for key in AUTHORS_FORWARD}

    def refresh_steps(self) -> list[int]:
        """The unrolled steps (0 = the first prox) that use a refreshed ``Sigma``."""
        if self.prox == "soft":
            return []
        off = self.refresh_offset
        return [k for k in range(self.steps) if k > off and (k - off) % self.refresh == 0]

    # -- the core --------------------------------------------------------------------------
    def make_similarity(self) -> SIM.OnlineSimilarity:
        """The similarity object of one forward pass (:mod:`groupsc.similarity`)."""
        centered = self.centered_similarity
        if self.knn is not None:
            knn = self.knn
            mode = knn.get("mode", "fixed")
            return SIM.KnnSimilarity(self.patch, knn["radius"], knn["k"], mode, centered)
        return self._dense_similarity()

    def _dense_similarity(self) -> SIM.DenseSimilarity:
        span = self.window - self.patch + 1
        return SIM.DenseSimilarity(self.patch, self.centered_similarity, self.dense_window, span)

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """``Sigma_ij = exp(-||diag(kappa)(x_i - x_j)||^2)`` between the patches of a block
        (dense, with this model's centring and window): ``(N, C, b, b) -> (N, L, L)``."""
        return self._dense_similarity().start(x, self.kappa)

    def noise_bin(self, sigma: float | None) -> int | None:
        """The threshold set of a noise level (0-255): the nearest of ``noise_bins``."""
        if self.noise_bins is None:
            return None
        if sigma is None:
            raise ValueError(
                "this blind model needs the noise level of its input (the true one in "
                "training, an estimate at inference: groupsc.noise_level)"
            )
        return min(range(len(self.noise_bins)), key=lambda i: abs(self.noise_bins[i] - sigma))

    def thresholds(self, sigma: float | None = None) -> torch.Tensor:
        """The thresholds ``(K, atoms)`` used at noise level ``sigma`` (blind models only)."""
        return self.lam if self.noise_bins is None else self.lam[self.noise_bin(sigma)]

    def _prox(
        self, b: torch.Tensor, lam: torch.Tensor, k: int, sim: torch.Tensor | None, n_img: int
    ) -> torch.Tensor:
        """Step ``k``'s prox with thresholds ``lam`` ``(atoms,)`` on codes ``b`` ``(atoms, N L)``
        (a view of rows), same layout out."""
        lam = lam if self.signed_thresholds else lam.clamp_min(0)
        lam = lam[:, None]  # (n, 1)
        added = PX.AUTHORS_EPS if self.prox_eps == "authors" else None
        if self.prox == "soft":
            if self.signed_thresholds:
                return PX.signed_soft_threshold(b, lam)
            return PX.soft_threshold(b, lam)
        if self.knn is not None:  # sparse k-NN similarities, codes stay flat (n, N L)
            if self.prox == "group":
                return PX.SparseRelaxedGroupLasso(lam, sim, added=added).prox(b)
            beta = NB.weighted_average(b, sim)
            return PX.CSR(lam, self.gamma[k].clamp_min(0), beta).prox(b)
        n = b.shape[0]
        bb = b.view(n, n_img, -1).transpose(0, 1)  # (N, n, L) views of the rows
        if self.prox == "group":
            out = PX.RelaxedGroupLasso(lam, sim, added=added).prox(bb)
        else:  # row i of sim^T holds the neighbours of i (the window is not symmetric)
            beta = PX.similarity_average(bb, sim.transpose(-1, -2))
            out = PX.CSR(lam, self.gamma[k].clamp_min(0), beta).prox(bb)
        return out.transpose(1, 2).reshape(-1, n).t()  # back to rows, seen as (n, N L)

    def encode(
        self, y: torch.Tensor, mask: torch.Tensor | None = None, sigma: float | None = None
    ) -> Encoding:
        """Run the K unrolled steps on one block (Algorithm 1); see :class:`Encoding`.

        ``y``: ``(N, C, h, w)`` with ``h, w <= window`` for non-local models.
        ``mask``: optional ``(N, C, h, w)`` measurement mask (1 = observed).
        ``sigma``: the batch's noise level, read by blind models only (:meth:`thresholds`).
        """
        lam = self.thresholds(sigma)
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
        # Every tensor of the loop is stored as rows, one per patch: codes (N L, atoms) (alpha
        # is their transposed view), residuals (N L, m). The sparse prox works on rows, and the
        # two GEMMs of a step read and write them without transposing copies.
        flat = yc.transpose(1, 2).reshape(n_img * length, m)  # (N L, m)
        mflat = None if mp is None else mp.transpose(1, 2).reshape(n_img * length, m)
        alpha = flat.new_zeros(n_img * length, self.atoms).t()
        enc = Encoding(alpha, mu, None, size, n_img)
        refresh = set(self.refresh_steps())
        if nonlocal_:
            nu = torch.sigmoid(self.nu_logit)
            tracker = self.make_similarity()
            guide = y if mask is None or self.mosaic_guide == "mosaic" else bilinear_fill(y, mask)
            enc.sim = tracker.start(guide, self.kappa, mu)
        for k in range(self.steps):
            if k in refresh:
                enc.sim = tracker.update(self.decode(enc), self.kappa, nu)
            # alpha + C^T (y - D alpha) as two fused GEMMs on rows: a third faster than
            # matmul + add (one pass less over the codes; same values to float rounding)
            resid = torch.addmm(flat, enc.alpha.t(), self.D.t(), alpha=-1)  # (N L, m)
            if mflat is not None:
                resid = resid * mflat
            b = torch.addmm(enc.alpha.t(), resid, self.C).t()  # (atoms, N L) view of rows
            enc.alpha = self._prox(b, lam[k], k, enc.sim, n_img)
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

    def sums(
        self, y: torch.Tensor, mask: torch.Tensor | None = None, sigma: float | None = None
    ) -> P.Sums:
        """Restore one block: the (sum, count) of its patch estimates, see :func:`P.fold_sums`."""
        return self.decode_sums(self.encode(y, mask, sigma))

    def forward(
        self, y: torch.Tensor, mask: torch.Tensor | None = None, sigma: float | None = None
    ) -> torch.Tensor:
        """Restore ``(N, C, H, W)``; images larger than the window go block by block.
        ``sigma``: the noise level, for blind models (:meth:`thresholds`)."""
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected (N, {self.channels}, H, W) input, got {tuple(y.shape)}")
        self.noise_bin(sigma)  # a blind model without sigma fails here, before any work
        if self.prox == "soft" or self.knn is not None or max(y.shape[-2:]) <= self.window:
            num, den = self.sums(y, mask, sigma)  # per patch or local: the whole image at once
            return num / den
        blocks = functools.partial(self.sums, sigma=sigma)
        return P.blockwise(blocks, y, self.window, self.block_stride, mask)
