"""Sparse kNN similarities (groupsc.neighbors) against the dense GroupSC computations."""

import pytest
import torch

from groupsc import neighbors as NB
from groupsc import patches as P
from groupsc import prox as PX
from groupsc import similarity as SIM

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.usefixtures("one_thread"),
]


def dense_dist(x: torch.Tensor, patch: int, kappa: torch.Tensor) -> torch.Tensor:
    """Brute-force ``(N, L, L)`` squared learned distances (eq. 12)."""
    z = P.extract(x, patch) * kappa[None, :, None]  # (N, m, L)
    return (z[:, :, :, None] - z[:, :, None, :]).square().sum(1)


def setup(shape=(2, 1, 9, 8), patch=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g, dtype=dtype)
    kappa = (0.5 + torch.rand(shape[1] * patch * patch, generator=g, dtype=dtype)) * 2
    grid = (shape[2] - patch + 1, shape[3] - patch + 1)
    return x, kappa, grid


def test_window_offsets_center_is_self():
    off = NB.window_offsets(2)
    assert off.shape == (25, 2)
    assert off[12].tolist() == [0, 0]
    assert off[0].tolist() == [-2, -2] and off[1].tolist() == [-2, -1]


@pytest.mark.parametrize("shape", [(2, 1, 9, 8), (1, 3, 7, 10)])
def test_local_distances_equal_dense_on_the_window(shape):
    x, kappa, (hp, wp) = setup(shape)
    radius = 2
    dist, off = NB.local_distances(x, 3, kappa, radius)
    ref = dense_dist(x, 3, kappa)
    assert dist.shape == (shape[0], hp * wp, 25)
    for i in range(hp * wp):
        a, b = divmod(i, wp)
        for o, (dy, dx) in enumerate(off.tolist()):
            if 0 <= a + dy < hp and 0 <= b + dx < wp:
                j = (a + dy) * wp + b + dx
                torch.testing.assert_close(dist[:, i, o], ref[:, i, j])
            else:
                assert torch.isinf(dist[:, i, o]).all()
    assert (dist[:, :, 12] == 0).all()  # the patch itself


def test_full_window_and_all_neighbours_is_the_dense_model():
    """radius covering the block and k = L: the dense Sigma and the dense prox, exactly."""
    from groupsc.models.sparse import SparseCoding

    x, kappa, (hp, wp) = setup((2, 1, 9, 8), dtype=torch.float32)
    length = hp * wp
    model = SparseCoding(
        patch=3, atoms=5, steps=1, prox="group", centered_similarity=False, dense_window="block"
    )
    with torch.no_grad():
        model.kappa.copy_(kappa)
    sigma = model.similarity(x).detach()  # (N, L, L)
    sim = NB.knn_similarity(x, 3, kappa, radius=max(hp, wp) - 1, k=length)
    assert sim.nnz == 2 * length * length
    torch.testing.assert_close(sim.to_dense(), sigma, atol=1e-5, rtol=1e-5)

    b = torch.randn(2, 5, length)
    torch.testing.assert_close(
        NB.weighted_sq_norms(b * b, sim), (b * b) @ sigma, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        NB.weighted_average(b, sim), PX.similarity_average(b, sigma), atol=1e-5, rtol=1e-4
    )
    lam = torch.rand(5, 1) * 0.5
    dense, sparse = PX.RelaxedGroupLasso(lam, sigma), PX.SparseRelaxedGroupLasso(lam, sim)
    torch.testing.assert_close(sparse.prox(b), dense.prox(b), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sparse.value(b), dense.value(b), atol=1e-4, rtol=1e-4)
    # the flat (atoms, N L) layout of SparseCoding
    flat = b.transpose(0, 1).reshape(5, -1)
    out = PX.SparseRelaxedGroupLasso(lam, sim).prox(flat)
    torch.testing.assert_close(
        out, dense.prox(b).transpose(0, 1).reshape(5, -1), atol=1e-5, rtol=1e-4
    )


def test_full_window_gradients_match_the_dense_model():
    x, kappa, (hp, wp) = setup((1, 1, 8, 8))
    b = torch.randn(1, 4, hp * wp, dtype=torch.float64)
    grads = []
    for use_sparse in (False, True):
        k = kappa.clone().requires_grad_()
        xx = x.clone().requires_grad_()
        if use_sparse:
            sim = NB.knn_similarity(xx, 3, k, radius=hp - 1, k=hp * wp)
            out = PX.SparseRelaxedGroupLasso(0.3, sim).prox(b)
        else:
            sigma = torch.exp(-dense_dist(xx, 3, k))
            out = PX.RelaxedGroupLasso(0.3, sigma).prox(b)
        grads.append(torch.autograd.grad(out.square().sum(), [k, xx]))
    for g_dense, g_sparse in zip(*grads, strict=True):
        torch.testing.assert_close(g_sparse, g_dense)


@pytest.mark.parametrize("k", [1, 4, 9, 30])
def test_partial_window_keeps_the_top_k_with_dense_values(k):
    x, kappa, (hp, wp) = setup((2, 1, 10, 9))
    radius = 2
    sim = NB.knn_similarity(x, 3, kappa, radius, k)
    sigma = torch.exp(-dense_dist(x, 3, kappa))
    s = sim.to_dense()
    kept = s > 0
    torch.testing.assert_close(s[kept], sigma[kept])  # kept pairs: the dense values
    ws = NB.window_similarity(x, 3, kappa, radius)
    counts = torch.diff(sim.crow).view(2, -1)
    n_valid = (ws > 0).sum(-1)
    assert torch.equal(counts, n_valid.clamp_max(k))  # k per row, fewer only at the border
    for n in range(2):
        for i in range(hp * wp):
            cols = sim.col[sim.crow[n * hp * wp + i] : sim.crow[n * hp * wp + i + 1]]
            assert i + n * hp * wp in cols.tolist()  # the patch itself
            assert torch.all(cols[1:] > cols[:-1])  # sorted, no duplicates
            others = sim.values[sim.crow[n * hp * wp + i] : sim.crow[n * hp * wp + i + 1]]
            if counts[n, i] < n_valid[n, i]:  # something was dropped: it was not larger
                dropped = ws[n, i].sort(descending=True).values[counts[n, i] :]
                assert dropped.max() <= others.min()


def test_patch_itself_is_kept_despite_ties():
    x = torch.full((1, 1, 8, 8), 0.5)  # every distance is 0: all similarities tie at 1
    sim = NB.knn_similarity(x, 3, torch.ones(9), radius=3, k=1)
    assert torch.equal(sim.col, torch.arange(36))
    sim = NB.knn_similarity(x, 3, torch.ones(9), radius=3, k=5)
    rows = [sim.col[sim.crow[i] : sim.crow[i + 1]].tolist() for i in range(36)]
    assert all(i in r and len(r) == 5 for i, r in enumerate(rows))


def test_gradcheck_distances_and_aggregation():
    x, kappa, (hp, wp) = setup((1, 2, 6, 5))
    xr, kr = x.clone().requires_grad_(), kappa.clone().requires_grad_()

    def dist(xx, kk):
        d = NB.local_distances(xx, 3, kk, radius=1)[0]
        return d.masked_fill(torch.isinf(d), 0.0)

    assert torch.autograd.gradcheck(dist, (xr, kr))

    sim = NB.knn_similarity(x, 3, kappa, radius=1, k=4)
    vals = sim.values.clone().requires_grad_()
    codes = torch.randn(1, 3, hp * wp, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, c: NB.aggregate(c, sim.with_values(v)), (vals, codes))
    flat = codes.detach()[0].clone().requires_grad_()  # (n, L): the flat layout
    assert torch.autograd.gradcheck(lambda c: NB.weighted_average(c, sim), (flat,))


def test_gradcheck_knn_prox_end_to_end():
    x, kappa, (hp, wp) = setup((1, 1, 6, 6))
    codes = torch.randn(1, 2, hp * wp, dtype=torch.float64)
    lam = torch.tensor([[0.1], [0.05]], dtype=torch.float64)

    def f(xx, kk, cc):
        sim = NB.knn_similarity(xx, 3, kk, radius=2, k=5)
        return PX.SparseRelaxedGroupLasso(lam, sim).prox(cc)

    args = (x.requires_grad_(), kappa.requires_grad_(), codes.requires_grad_())
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("per_atom", [True, False])
def test_gradcheck_fused_prox_in_codes_values_and_thresholds(per_atom):
    x, kappa, (hp, wp) = setup((1, 1, 7, 7))
    sim = NB.knn_similarity(x, 3, kappa, radius=2, k=6)
    g = torch.Generator().manual_seed(3)
    codes = torch.randn(1, 4, hp * wp, generator=g, dtype=torch.float64).requires_grad_()
    lam = (
        torch.rand(4, 1, generator=g, dtype=torch.float64)
        if per_atom
        else torch.tensor(0.4, dtype=torch.float64)
    ).requires_grad_()
    vals = sim.values.clone().requires_grad_()

    def f(c, v, t):
        return PX.SparseRelaxedGroupLasso(t, sim.with_values(v)).prox(c)

    out = f(codes, vals, lam)
    assert (out == 0).any() and (out != 0).any()  # both branches of the max are exercised
    assert torch.autograd.gradcheck(f, (codes, vals, lam))
    # and the fused step agrees with the formula through autograd
    norm = NB.weighted_sq_norms(codes.pow(2), sim.with_values(vals)).sqrt()
    ref = torch.relu(1 - lam * sim.with_values(vals).row_sums().sqrt()[:, None] / norm) * codes
    torch.testing.assert_close(out, ref)


def test_tracker_window_mode_is_top_k_of_the_dense_average():
    x, kappa, _ = setup((1, 1, 10, 10))
    x2, _, _ = setup((1, 1, 10, 10), seed=1)
    nu, radius, k = 0.3, 2, 6
    tracker = SIM.KnnSimilarity(3, radius, k, centered=False)
    tracker.start(x, kappa)
    sim = tracker.update(x2, kappa, nu)
    avg = (1 - nu) * torch.exp(-dense_dist(x, 3, kappa)) + nu * torch.exp(-dense_dist(x2, 3, kappa))
    s = sim.to_dense()
    torch.testing.assert_close(s[s > 0], avg[s > 0])
    ref = NB.knn_select(
        (1 - nu) * NB.window_similarity(x, 3, kappa, radius)
        + nu * NB.window_similarity(x2, 3, kappa, radius),
        (8, 8),
        radius,
        k,
    )
    assert torch.equal(ref.col, sim.col)


def test_tracker_fixed_mode_keeps_the_neighbours():
    x, kappa, _ = setup((2, 1, 10, 10))
    x2, _, _ = setup((2, 1, 10, 10), seed=1)
    tracker = SIM.KnnSimilarity(3, 2, 6, mode="fixed", centered=False)
    first = tracker.start(x, kappa)
    nu = torch.tensor([0.25], dtype=torch.float64)
    sim = tracker.update(x2, kappa, nu)
    assert torch.equal(sim.col, first.col) and torch.equal(sim.crow, first.crow)
    dist2 = NB.local_distances(x2, 3, kappa, 2)[0].reshape(-1)[first.slot]
    torch.testing.assert_close(sim.values, 0.75 * first.values + 0.25 * torch.exp(-dist2))
    with pytest.raises(ValueError):
        SIM.KnnSimilarity(3, 2, 6, mode="union")


def test_gradcheck_pair_distances():
    x, kappa, _ = setup((2, 1, 6, 6))
    sim = NB.knn_similarity(x, 3, kappa, radius=1, k=4)
    ref = NB.local_distances(x, 3, kappa, 1)[0].reshape(-1)[sim.slot]
    torch.testing.assert_close(NB.pair_distances(x, 3, kappa, sim), ref)
    args = (x.clone().requires_grad_(), kappa.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda xx, kk: NB.pair_distances(xx, 3, kk, sim), args)


def test_authors_guards_of_the_sparse_prox_match_the_dense_one_and_gradcheck():
    x, kappa, (hp, wp) = setup((1, 1, 8, 8))
    length = hp * wp
    sim = NB.knn_similarity(x, 3, kappa, radius=hp - 1, k=length)
    sigma = torch.exp(-dense_dist(x, 3, kappa))
    b = torch.randn(1, 4, length, dtype=torch.float64)
    b[:, 0] = 0.0  # an all-zero atom row: the guards keep it finite
    lam = torch.tensor([[0.3], [-0.1], [0.2], [0.05]], dtype=torch.float64)  # one negative
    dense = PX.RelaxedGroupLasso(lam, sigma, added=PX.AUTHORS_EPS).prox(b)
    sparse = PX.SparseRelaxedGroupLasso(lam, sim, added=PX.AUTHORS_EPS).prox(b)
    torch.testing.assert_close(sparse, dense)
    mass = sigma.sum(-2, keepdim=True)
    ref = torch.relu(1 - lam * (mass + 1e-12).sqrt() / ((b * b) @ sigma + 1e-8).sqrt()) * b
    torch.testing.assert_close(dense, ref)

    def f(v, c, t):
        return PX.SparseRelaxedGroupLasso(t, sim.with_values(v), added=(1e-3, 1e-2)).prox(c)

    args = (sim.values.clone().requires_grad_(), b.clone().requires_grad_(), lam.clone())
    args[2].requires_grad_()
    assert torch.autograd.gradcheck(f, args)


def test_centred_window_distances_are_those_of_centred_patches():
    """The convolution form with per-channel means (C = 3) equals brute force on centred
    patches, and at a refresh the means may come from another image (the noisy input)."""
    x, kappa, (hp, wp) = setup((1, 3, 9, 8))
    y, _, _ = setup((1, 3, 9, 8), seed=2)
    _, mu = P.center(P.extract(y, 3), 3)  # (1, 3, 1, L): the input's means
    dist, off = NB.local_distances(x, 3, kappa, 2, mu=mu.reshape(1, 3, hp, wp))
    z = P.extract(x, 3).view(1, 3, 9, -1) - mu
    z = z.reshape(1, 27, -1) * kappa[None, :, None]
    brute = (z[:, :, :, None] - z[:, :, None, :]).square().sum(1)  # (1, L, L)
    for i in range(hp * wp):
        a, c = divmod(i, wp)
        for o, (dy, dx) in enumerate(off.tolist()):
            if 0 <= a + dy < hp and 0 <= c + dx < wp:
                j = (a + dy) * wp + c + dx
                torch.testing.assert_close(dist[0, i, o], brute[0, i, j])
            else:
                assert dist[0, i, o] == float("inf")
    args = (x.clone().requires_grad_(), kappa.clone().requires_grad_())
    grid_mu = mu.reshape(1, 3, hp, wp)
    assert torch.autograd.gradcheck(
        lambda xx, kk: NB.window_similarity(xx, 3, kk, 1, grid_mu), args
    )
    sim = NB.knn_similarity(x, 3, kappa, radius=1, k=4)
    torch.testing.assert_close(
        NB.pair_distances(x, 3, kappa, sim, mu),
        brute.reshape(-1)[(sim.row % (hp * wp)) * hp * wp + sim.col.long() % (hp * wp)],
    )
