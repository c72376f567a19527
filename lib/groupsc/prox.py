r"""Proximal operators used by the unrolled (LISTA-type) sparse coding models of GroupSC.

The proximal operator of a convex penalty :math:`\Psi` is (paper, Definition 1)

.. math:: \operatorname{Prox}_\Psi[x] = \arg\min_u \tfrac12 \|x - u\|_2^2 + \Psi(u).

Every class below stores the parameters of its penalty and exposes

- ``value(u)``: :math:`\Psi(u)`, summed over all entries (a 0-d tensor);
- ``prox(x)``: the closed form of :math:`\operatorname{Prox}_\Psi[x]`, same shape as ``x``.

The regularization weights are part of :math:`\Psi` (``value`` includes them), so ``prox(x)`` is
exactly the minimizer of ``0.5 * ((x - u) ** 2).sum() + value(u)``. Everything is plain torch
arithmetic: differentiable with autograd in ``x`` and in the parameters (almost everywhere).

Shapes follow the paper: codes are stored as *columns*, ``A = [alpha_1, ..., alpha_n]`` of
shape ``(..., p, n)`` (``p`` atoms = rows ``j``, ``n`` patches = columns ``i``; the layout of
``torch.nn.functional.unfold``), with optional leading batch dimensions. Similarity matrices
``sigma`` have shape ``(..., n, n)`` and nonnegative entries. Per-atom weights have shape
``(p, 1)`` (or anything broadcastable as documented per class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from groupsc.neighbors.graph import (
    SparseSimilarity,
    _csr,
    _csr_mm,
    _mass,
    _rows,
    weighted_sq_norms,
)

__all__ = [
    "CSR",
    "GroupLasso",
    "RelaxedGroupLasso",
    "SoftThreshold",
    "SparseRelaxedGroupLasso",
    "signed_soft_threshold",
    "similarity_average",
    "soft_threshold",
]


def _reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient ``g`` back to ``shape``."""
    while g.dim() > len(shape):
        g = g.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdim=True)
    return g


class _SoftThreshold(torch.autograd.Function):
    """Soft-thresholding with a hand-written backward: it keeps only the output (whose sign and
    support give both gradients), about 2x faster than autograd through ``clamp`` here."""

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor) -> Tensor:
        out = x - torch.clamp(x, -t, t)
        ctx.save_for_backward(out)
        ctx.t_shape = t.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None]:
        (out,) = ctx.saved_tensors
        gx = g * (out != 0) if ctx.needs_input_grad[0] else None
        gt = _reduce_to(-(g * torch.sign(out)), ctx.t_shape) if ctx.needs_input_grad[1] else None
        return gx, gt


def soft_threshold(x: Tensor, t: Tensor | float) -> Tensor:
    r"""Soft-thresholding :math:`S_t(x) = \operatorname{sign}(x)\max(|x| - t, 0)`, elementwise.

    Computed as ``x - clamp(x, -t, t)`` (same values and gradients as the sign/relu form, and
    faster on CPU), with a hand-written backward when gradients are needed. ``t >= 0`` must
    broadcast against ``x``.
    """
    if not isinstance(t, Tensor):
        return x - torch.clamp(x, -float(t), float(t))
    if torch.is_grad_enabled() and (x.requires_grad or t.requires_grad):
        return _SoftThreshold.apply(x, t.to(x.dtype))
    return x - torch.clamp(x, -t, t)


def signed_soft_threshold(x: Tensor, t: Tensor | float) -> Tensor:
    r"""``relu(x - t) - relu(-x - t)``: soft-thresholding for thresholds of either sign.

    For ``t >= 0`` it is :func:`soft_threshold` (same values, bit for bit). A negative ``t``
    (a learned threshold may cross 0) gives ``2x`` for ``|x| < |t|`` and ``x - t sign(x)``
    outside: the rule of the authors' code, which uses the learned thresholds as they are.
    """
    if bool((torch.as_tensor(t) >= 0).all()):
        return soft_threshold(x, t)
    return torch.relu(x - t) - torch.relu(-x - t)


@dataclass
class SoftThreshold:
    r"""Weighted :math:`\ell_1` norm and its prox, the soft-thresholding operator :math:`S_\Lambda`.

    .. math::
        \Psi(u) = \sum_k \lambda_k |u_k|, \qquad
        \operatorname{Prox}_\Psi[x]_k = \operatorname{sign}(x_k)\max(|x_k| - \lambda_k, 0).

    Args:
        lam: thresholds :math:`\lambda \ge 0`, broadcastable against ``x`` (a scalar, or per-atom
            ``(p, 1)`` for codes ``(..., p, n)``, as :math:`\Lambda_k` in the paper's eq. (3)).
    """

    lam: Tensor | float

    def value(self, u: Tensor) -> Tensor:
        return (self.lam * u.abs()).sum()

    def prox(self, x: Tensor) -> Tensor:
        return soft_threshold(x, self.lam)


AUTHORS_EPS = (1e-12, 1e-8)  # the guards of the group prox in the authors' code (mass, norm^2)


def _guarded_norm(sq: Tensor, eps: float) -> Tensor:
    """``sqrt(sq)`` with ``sq`` clamped at ``eps**2``: finite values and gradients at zero."""
    return sq.clamp_min(eps * eps).sqrt()


@dataclass
class GroupLasso:
    r"""Group Lasso :math:`\lambda\|U\|_{1,2}` (paper eq. (4)) and its prox (paper Lemma 1).

    ``U`` of shape ``(..., p, n)`` holds the ``n`` codes of one group as columns; the groups are
    its rows :math:`U^j` (atom ``j`` across the group), and leading dimensions index independent
    groups.

    .. math::
        \Psi(U) = \sum_{j=1}^p \lambda_j \|U^j\|_2, \qquad
        \operatorname{Prox}_\Psi[U]^j = \max\Big(1 - \frac{\lambda_j}{\|U^j\|_2}, 0\Big)\, U^j.

    Args:
        lam: :math:`\lambda \ge 0`, broadcastable against the row norms ``(..., p, 1)``.
        eps: norms are floored at ``eps`` so that zero rows give zero (not NaN) values and
            gradients; it only matters for rows with :math:`\|U^j\|_2 < \varepsilon`.
    """

    lam: Tensor | float
    eps: float = 1e-12

    def value(self, u: Tensor) -> Tensor:
        return (self.lam * u.pow(2).sum(dim=-1, keepdim=True).sqrt()).sum()

    def prox(self, x: Tensor) -> Tensor:
        norm = _guarded_norm(x.pow(2).sum(dim=-1, keepdim=True), self.eps)
        return torch.relu(1.0 - self.lam / norm) * x


@dataclass
class RelaxedGroupLasso:
    r"""Group Lasso relaxed with a similarity matrix :math:`\Sigma` (paper eq. (11)).

    Codes ``A`` of shape ``(..., p, n)``, similarities ``sigma`` of shape ``(..., n, n)``,
    :math:`\Sigma \ge 0`, with :math:`\Sigma_i` its ``i``-th column (the neighbours of patch
    ``i``). Each code :math:`\alpha_i` is shrunk row-wise with the :math:`\Sigma_i`-weighted norm
    of the codes of its neighbours:

    .. math::
        \operatorname{Prox}[A]_{ji} = \max\Big(1 - \frac{\lambda_j \sqrt{\|\Sigma_i\|_1}}
            {\|(A \operatorname{diag}(\Sigma_i)^{1/2})^j\|_2}, 0\Big) A_{ji},
        \qquad
        \|(A \operatorname{diag}(\Sigma_i)^{1/2})^j\|_2^2 = \sum_l \Sigma_{li} A_{jl}^2.

    ``value`` is the penalty this formula is the exact prox of when :math:`\Sigma` is a hard 0/1
    clustering (:math:`\Sigma_{li} = 1` iff ``l`` and ``i`` are in the same cluster):

    .. math::
        \Psi_\Sigma(A) = \sum_{i=1}^n \sum_{j=1}^p \lambda_j
            \frac{\|(A \operatorname{diag}(\Sigma_i)^{1/2})^j\|_2}{\sqrt{\|\Sigma_i\|_1}},

    i.e. the LSSC penalty of eq. (9), :math:`\sum_i \lambda/\sqrt{|S_i|}\, \|A_i\|_{1,2}`. The sum
    runs over patches ``i``, so a cluster ``S`` is counted :math:`|S|` times: it is Lemma 1 with
    threshold :math:`\lambda_j\sqrt{|S|}` on each cluster. For a soft :math:`\Sigma` the update
    is the paper's relaxation, *not* the exact prox of :math:`\Psi_\Sigma`.

    Args:
        lam: :math:`\lambda \ge 0`, broadcastable against ``(..., p, 1)`` (per-atom).
        sigma: :math:`\Sigma`, ``(..., n, n)``, nonnegative, with nonzero columns (the paper's
            :math:`\Sigma_{ii} = e^{0} = 1`).
        eps: floor of the weighted norms (see :class:`GroupLasso`).
        added: ``(e_mass, e_norm)`` to use the authors' guards instead of the floor:
            :math:`\sqrt{\|\Sigma_i\|_1 + e_{mass}}` and
            :math:`\sqrt{\sum_l \Sigma_{li} A_{jl}^2 + e_{norm}}` (their code: ``(1e-12, 1e-8)``,
            :data:`AUTHORS_EPS`). ``None``: the floor ``eps``.
    """

    lam: Tensor | float
    sigma: Tensor
    eps: float = 1e-12
    added: tuple[float, float] | None = None

    def _norms(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted row norms ``(..., p, n)`` and ``sqrt(||Sigma_i||_1)`` ``(..., 1, n)``."""
        sq, mass = a.pow(2) @ self.sigma, self.sigma.sum(dim=-2, keepdim=True)
        if self.added is not None:
            return (sq + self.added[1]).sqrt(), (mass + self.added[0]).sqrt()
        return _guarded_norm(sq, self.eps), mass.sqrt()

    def value(self, u: Tensor) -> Tensor:
        norm, root_mass = self._norms(u)
        return (self.lam * norm / root_mass).sum()

    def prox(self, x: Tensor) -> Tensor:
        norm, root_mass = self._norms(x)
        return torch.relu(1.0 - self.lam * root_mass / norm) * x


@dataclass
class CSR:
    r"""Centralised sparse representation penalty (appendix eq. (1)) and its prox (Prop. 1).

    Elementwise, with :math:`\lambda, \gamma \ge 0` and the target codes :math:`\beta`:

    .. math::
        \Psi(u) = \sum_k \lambda_k \big(|u_k| + \gamma_k |u_k - \beta_k|\big),

        \operatorname{Prox}_\Psi[x] = S_\lambda\big(S_{\lambda\gamma}(x - \beta - \lambda
            \operatorname{sign}\beta) + \beta + \lambda \operatorname{sign}\beta\big).

    The prox pulls each entry to 0 or to :math:`\beta` (piecewise linear, continuous, slopes
    0 or 1). With :math:`\beta = 0` it is :math:`S_{\lambda(1+\gamma)}`.

    Args:
        lam: :math:`\lambda`, broadcastable against ``x`` (scalar or per-atom ``(p, 1)``).
        gamma: :math:`\gamma`, broadcastable against ``x``.
        beta: :math:`\beta`, broadcastable against ``x`` (typically ``x.shape``, from
            :func:`similarity_average`).
    """

    lam: Tensor | float
    gamma: Tensor | float
    beta: Tensor | float

    def value(self, u: Tensor) -> Tensor:
        return (self.lam * (u.abs() + self.gamma * (u - self.beta).abs())).sum()

    def prox(self, x: Tensor) -> Tensor:
        beta = torch.as_tensor(self.beta, dtype=x.dtype, device=x.device)
        shift = beta + self.lam * torch.sign(beta)
        inner = signed_soft_threshold(x - shift, self.lam * self.gamma)
        return signed_soft_threshold(inner + shift, self.lam)


def similarity_average(alpha: Tensor, sigma: Tensor, eps: float = 1e-12) -> Tensor:
    r"""CSR targets :math:`\beta_i = \sum_j \Sigma_{ij}\alpha_j / \sum_l \Sigma_{il}` (appendix
    eq. (2)).

    Args:
        alpha: codes as columns, ``(..., p, n)``.
        sigma: similarities ``(..., n, n)``, nonnegative; row ``i`` weights the neighbours of
            ``i`` (for a symmetric :math:`\Sigma`, rows and columns agree).
        eps: floor of the row sums (an all-zero row gives :math:`\beta_i = 0`).

    Returns:
        :math:`B = [\beta_1, \dots, \beta_n]`, ``(..., p, n)``: ``alpha @ sigma^T / row sums``.
    """
    return (alpha @ sigma.transpose(-1, -2)) / sigma.sum(dim=-1).clamp_min(eps).unsqueeze(-2)


# -- the relaxed group lasso on a sparse k-NN Sigma (groupsc.neighbors) ----------------------
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
