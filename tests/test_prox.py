"""Closed-form proximal operators (groupsc.prox) against generic convex solvers.

Separable scalar problems (soft-thresholding, CSR) are solved entry by entry with
``scipy.optimize.minimize_scalar``; the group problems with cvxpy. The penalties handed to the
solvers are written out here independently of ``groupsc.prox``.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from groupsc.prox import (
    CSR,
    GroupLasso,
    RelaxedGroupLasso,
    SoftThreshold,
    similarity_average,
    soft_threshold,
)

TOL = 1e-6  # |closed form - solver|; the solvers themselves reach ~1e-9
SEED = 0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def scalar_prox(penalty, x: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """argmin_u 0.5 (x - u)^2 + penalty(u), entry by entry (bounded Brent, xatol 1e-11).

    ``extra`` holds points that bound the minimizer together with x (0 and beta for CSR).
    """
    out = np.empty_like(x)
    for k in np.ndindex(x.shape):
        pts = [x[k], *(e[k] for e in extra)]
        lo, hi = min(pts) - 1.0, max(pts) + 1.0
        res = minimize_scalar(
            lambda u, k=k: 0.5 * (x[k] - u) ** 2 + penalty(u, k),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-11},
        )
        out[k] = res.x
    return out


def solve(problem: cp.Problem) -> None:
    """Clarabel with tolerances 1e-9: the defaults (1e-8 on the objective) only guarantee
    ~1e-4 on the minimizer near the kinks. Clarabel may then flag "optimal_inaccurate" (it met
    its reduced criteria); the comparison with the closed form is the check that matters."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Solution may be inaccurate")
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9)
    assert problem.status in ("optimal", "optimal_inaccurate"), problem.status


def hard_clustering(labels: np.ndarray) -> np.ndarray:
    return (labels[:, None] == labels[None, :]).astype(np.float64)


# ----------------------------------------------------------------------------- soft-thresholding


def test_soft_threshold_matches_solver(rng):
    p, n = 8, 25
    x = rng.normal(scale=1.5, size=(p, n))
    lam = rng.uniform(0.0, 2.0, size=(p, 1))
    lam[0] = 0.0
    lam_full = np.broadcast_to(lam, x.shape)
    ref = scalar_prox(lambda u, k: lam_full[k] * abs(u), x, [np.zeros_like(x)])
    out = SoftThreshold(t64(lam)).prox(t64(x)).numpy()
    assert np.abs(out - ref).max() < TOL
    assert (out == 0).mean() > 0.2 and (out != 0).mean() > 0.2  # both branches exercised
    assert np.isclose(SoftThreshold(t64(lam)).value(t64(x)).item(), (lam * np.abs(x)).sum())


def test_soft_threshold_float_and_tensor_threshold_agree():
    x = torch.linspace(-2, 2, 41)
    assert torch.equal(soft_threshold(x, 0.5), soft_threshold(x, torch.tensor(0.5)))
    assert torch.equal(soft_threshold(x, 0.5), torch.sign(x) * torch.relu(x.abs() - 0.5))


# ----------------------------------------------------------------------------- group lasso


def test_group_lasso_matches_cvxpy(rng):
    g, p, n = 6, 5, 4  # 6 independent groups of 4 codes with 5 atoms
    x = rng.normal(size=(g, p, n)) * rng.uniform(0.1, 2.0, size=(g, p, 1))
    x[0, 2] = 0.0  # a zero row
    x[1] = 0.0  # a zero group
    lam = rng.uniform(0.2, 1.5, size=(p, 1))
    u = [cp.Variable((p, n)) for _ in range(g)]
    obj = sum(
        0.5 * cp.sum_squares(x[b] - u[b]) + lam[:, 0] @ cp.norm(u[b], 2, axis=1) for b in range(g)
    )
    solve(cp.Problem(cp.Minimize(obj)))
    ref = np.stack([ub.value for ub in u])
    op = GroupLasso(t64(lam))
    out = op.prox(t64(x)).numpy()
    assert np.abs(out - ref).max() < TOL
    killed = np.all(out == 0, axis=-1)
    assert killed.mean() > 0.2 and (~killed).mean() > 0.2  # both branches of the max exercised
    assert np.isclose(
        op.value(t64(x)).item(), (lam * np.linalg.norm(x, axis=-1, keepdims=True)).sum()
    )


def test_group_lasso_zero_input_finite_gradient():
    x = torch.zeros(3, 4, 5, dtype=torch.float64, requires_grad=True)
    lam = torch.full((4, 1), 0.3, dtype=torch.float64, requires_grad=True)
    out = GroupLasso(lam).prox(x)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(lam.grad).all()


# ----------------------------------------------------------------------------- relaxed group lasso


@pytest.mark.parametrize("permuted", [False, True])
def test_relaxed_group_lasso_hard_clustering_is_lemma1_per_cluster(rng, permuted):
    p, sizes = 6, (1, 3, 5)
    labels = np.repeat(np.arange(len(sizes)), sizes)  # block-diagonal Sigma
    if permuted:
        labels = rng.permutation(labels)  # the same, up to a permutation of the patches
    sigma = hard_clustering(labels)
    x = rng.normal(size=(p, labels.size)) * rng.uniform(0.1, 3.0, size=(p, 1))
    lam = rng.uniform(0.1, 1.0, size=(p, 1))
    out = RelaxedGroupLasso(t64(lam), t64(sigma)).prox(t64(x))
    value = RelaxedGroupLasso(t64(lam), t64(sigma)).value(t64(x))
    ref = torch.empty_like(out)
    ref_value = 0.0
    for c, size in enumerate(sizes):
        cols = np.flatnonzero(labels == c)
        # eq. (9) sums lam/sqrt(|S_i|) ||A_i||_{1,2} over patches i: cluster S counted |S| times
        lemma1 = GroupLasso(t64(lam) * np.sqrt(size))
        ref[:, cols] = lemma1.prox(t64(x[:, cols]))
        ref_value += lemma1.value(t64(x[:, cols])).item()
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    assert np.isclose(value.item(), ref_value)
    assert (out == 0).float().mean() > 0.1 and (out != 0).float().mean() > 0.1  # both branches


def test_relaxed_group_lasso_is_eq11_for_a_soft_sigma(rng):
    """Literal transcription of eq. (11), Sigma_i = i-th column, on a non-symmetric Sigma."""
    p, n = 4, 6
    x = rng.normal(size=(p, n))
    sigma = np.exp(-rng.uniform(0, 3, size=(n, n)))
    lam = rng.uniform(0.1, 0.8, size=p)
    ref = np.empty_like(x)
    for i in range(n):
        weighted = x @ np.diag(np.sqrt(sigma[:, i]))  # B diag(Sigma_i)^{1/2}
        for j in range(p):
            scale = lam[j] * np.sqrt(np.abs(sigma[:, i]).sum()) / np.linalg.norm(weighted[j])
            ref[j, i] = max(1 - scale, 0) * x[j, i]
    out = RelaxedGroupLasso(t64(lam[:, None]), t64(sigma)).prox(t64(x)).numpy()
    assert np.abs(out - ref).max() < 1e-12
    assert (out == 0).any() and (out != 0).any()


def test_relaxed_group_lasso_batched(rng):
    b, p, n = 2, 3, 7
    x = t64(rng.normal(size=(b, p, n)))
    sigma = t64(np.exp(-rng.uniform(0, 3, size=(b, n, n))))
    out = RelaxedGroupLasso(0.2, sigma).prox(x)
    assert out.shape == x.shape
    for k in range(b):  # leading dims are independent problems
        assert torch.allclose(out[k], RelaxedGroupLasso(0.2, sigma[k]).prox(x[k]), atol=1e-14)


# ----------------------------------------------------------------------------- CSR


def csr_random(rng, shape):
    lam = rng.uniform(0.05, 1.0, size=shape)
    gamma = rng.uniform(0.0, 3.0, size=shape) * (rng.random(shape) > 0.1)  # 10% gamma = 0
    beta = rng.normal(size=shape) * (rng.random(shape) > 0.2)  # 20% beta = 0
    x = rng.normal(scale=2.0, size=shape)
    return x, lam, gamma, beta


def csr_reference(x, lam, gamma, beta):
    return scalar_prox(
        lambda u, k: lam[k] * (abs(u) + gamma[k] * abs(u - beta[k])),
        x,
        [np.zeros_like(x), beta],
    )


def test_csr_matches_solver(rng):
    x, lam, gamma, beta = csr_random(rng, (20, 20))
    ref = csr_reference(x, lam, gamma, beta)
    out = CSR(t64(lam), t64(gamma), t64(beta)).prox(t64(x)).numpy()
    assert np.abs(out - ref).max() < TOL
    # every piece of the piecewise-linear map is exercised: 0, beta, strictly between, beyond
    nz = beta != 0
    ratio = np.divide(out, beta, out=np.zeros_like(out), where=nz)
    assert ((out == 0) & nz).sum() > 5
    assert (np.isclose(ratio, 1.0, rtol=0, atol=1e-12) & nz).sum() > 5
    assert ((ratio > 1e-9) & (ratio < 1 - 1e-9)).sum() > 5
    assert ((ratio > 1 + 1e-9) | (ratio < -1e-9)).sum() > 5


def test_csr_without_sign_shift_fails_the_solver_check(rng):
    """Negative control: the check above has the power to reject a plausible wrong formula."""
    x, lam, gamma, beta = csr_random(rng, (10, 10))
    ref = csr_reference(x, lam, gamma, beta)
    wrong = soft_threshold(soft_threshold(t64(x - beta), t64(lam * gamma)) + t64(beta), t64(lam))
    assert np.abs(wrong.numpy() - ref).max() > 0.1


def test_csr_value(rng):
    x, lam, gamma, beta = csr_random(rng, (4, 6))
    val = CSR(t64(lam), t64(gamma), t64(beta)).value(t64(x)).item()
    assert np.isclose(val, (lam * (np.abs(x) + gamma * np.abs(x - beta))).sum())


def test_csr_beta_zero_and_gamma_zero_are_soft_thresholding(rng):
    x = t64(rng.normal(scale=2.0, size=(5, 8)))
    lam, gamma = t64(rng.uniform(0.1, 1.0, size=(5, 1))), 0.7
    beta = t64(rng.normal(size=(5, 8)))
    out0 = CSR(lam, gamma, torch.zeros_like(x)).prox(x)
    assert torch.allclose(out0, soft_threshold(x, lam * (1 + gamma)), rtol=0, atol=1e-14)
    assert torch.allclose(CSR(lam, 0.0, beta).prox(x), soft_threshold(x, lam), rtol=0, atol=1e-14)


def test_csr_large_gamma_gives_beta(rng):
    x = t64(rng.normal(scale=3.0, size=(6, 6)))
    beta = t64(rng.normal(size=(6, 6)) * (rng.random((6, 6)) > 0.3))
    out = CSR(0.4, 1e6, beta).prox(x)  # lam * gamma >> |x - beta - lam sign(beta)|
    assert torch.allclose(out, beta, rtol=0, atol=1e-12)


def test_similarity_average(rng):
    p, n = 3, 6
    alpha = rng.normal(size=(p, n))
    sigma = rng.uniform(0.0, 1.0, size=(n, n))  # not symmetric: row i weights the neighbours
    loops = np.stack(
        [sum(sigma[i, j] * alpha[:, j] for j in range(n)) / sigma[i].sum() for i in range(n)],
        axis=1,
    )
    out = similarity_average(t64(alpha), t64(sigma)).numpy()
    assert np.abs(out - loops).max() < 1e-12
    labels = np.array([0, 1, 0, 1, 1, 2])  # hard clustering: the cluster means
    means = similarity_average(t64(alpha), t64(hard_clustering(labels))).numpy()
    for c in range(3):
        cols = labels == c
        assert np.allclose(means[:, cols], alpha[:, cols].mean(axis=1, keepdims=True), atol=1e-14)


# ----------------------------------------------------------------------------- all operators


def make_ops(lam: torch.Tensor | float, p: int, n: int, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(1)
    sigma = torch.exp(-3 * torch.rand(n, n, generator=gen, dtype=dtype))
    beta = torch.randn(p, n, generator=gen, dtype=dtype)
    return {
        "soft": SoftThreshold(lam),
        "group": GroupLasso(lam),
        "relaxed": RelaxedGroupLasso(lam, sigma),
        "csr": CSR(lam, 1.5, beta),
    }


@pytest.mark.parametrize("name", ["soft", "group", "relaxed", "csr"])
def test_prox_tends_to_identity_when_lambda_vanishes(rng, name):
    x = t64(rng.normal(size=(4, 5)))
    assert torch.allclose(make_ops(0.0, 4, 5)[name].prox(x), x, rtol=0, atol=1e-15)
    err = (make_ops(1e-9, 4, 5)[name].prox(x) - x).abs().max().item()
    assert 0 < err < 1e-7  # moves, but by O(lambda)


@pytest.mark.parametrize("name", ["soft", "group", "relaxed", "csr"])
def test_prox_keeps_float32(name):
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    out = make_ops(0.3, 4, 5, torch.float32)[name].prox(x)
    assert out.dtype == torch.float32 and out.shape == x.shape


def test_gradcheck_soft_threshold():
    x = t64([[-2.0, -0.3, 0.2, 1.5], [0.9, -1.1, 0.05, 3.0]]).requires_grad_()
    lam = t64([[0.5], [0.7]]).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, lam: SoftThreshold(lam).prox(x), (x, lam))


def test_gradcheck_group_lasso():
    x = t64([[[1.0, -2.0, 0.5], [0.1, 0.2, -0.1], [3.0, 0.0, -1.0]]]).requires_grad_()
    lam = t64([[0.5], [0.5], [1.0]]).requires_grad_()  # row 2 killed, rows 1 and 3 shrunk
    assert torch.autograd.gradcheck(lambda x, lam: GroupLasso(lam).prox(x), (x, lam))


def test_gradcheck_relaxed_group_lasso():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    sigma = torch.exp(-2 * torch.rand(5, 5, generator=gen, dtype=torch.float64))
    lam = t64([[0.1], [0.2], [0.15]])
    margin = 1 - lam * sigma.sum(0).sqrt() / (x**2 @ sigma).sqrt()
    assert margin.abs().min() > 0.05, "test input too close to a kink of max(., 0)"
    args = (x.requires_grad_(), lam.requires_grad_(), sigma.requires_grad_())
    assert torch.autograd.gradcheck(lambda x, l, s: RelaxedGroupLasso(l, s).prox(x), args)


# lam = 0.5, gamma = 1: for beta = 1 the pieces in x are (<-1), (-1, 0), (0, 1), (1, 2), (>2);
# mirrored for beta = -1; for beta = 0 the prox is S_1. One point inside each piece.
X_CSR = [[-1.7, -0.4, 0.6, 1.3, 2.8], [1.7, 0.4, -0.6, -1.3, -2.8], [-2.1, -0.5, 0.3, 0.9, 2.6]]


def test_gradcheck_csr():
    x, lam, gamma = t64(X_CSR), t64(0.5), t64(1.0)
    beta = t64([[1.0], [-1.0], [0.0]]).expand(3, 5).clone()
    args = (x.requires_grad_(), lam.requires_grad_(), gamma.requires_grad_())
    assert torch.autograd.gradcheck(lambda x, l, g: CSR(l, g, beta).prox(x), args)
    # in beta too, away from beta = 0 (a kink in beta: prox = max(beta, 0) near 0 for small x)
    beta_nz = beta[:2].clone().requires_grad_()
    args = (x[:2].detach().requires_grad_(), lam, gamma, beta_nz)
    assert torch.autograd.gradcheck(lambda x, l, g, b: CSR(l, g, b).prox(x), args)
