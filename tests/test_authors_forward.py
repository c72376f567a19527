"""Our dense GroupSC against the authors' forward pass, written out step by step.

``authors_forward`` below follows the loop of the authors' ``model/gray_group.py``
(bruno-31/groupsc; read, not copied): patches centred by their means; the first code is the
group prox of ``C^T y``; 23 more steps ``prox(a + C^T (y - D a))``; before the loop indices
6, 12, 18 (unrolled steps 7, 13, 19) the similarity is recomputed on the patches of the
averaged estimate minus the *input's* patch means and averaged in with weight sigmoid(nu);
distances outside the window get +1e10; the prox is ``relu(1 - lam sqrt(mass + 1e-12) /
sqrt(sum Sigma a^2 + 1e-8)) a`` with the thresholds as they are. Same parameters, float64:
the library model (a pluggable core with a similarity object) must give the same output.
"""

import torch
from torch.nn import functional as F

from groupsc.models.sparse import LEGACY_FORWARD, SparseCoding


def _window_penalty(grid: int) -> torch.Tensor:
    """``(L, L)``: 0 where the row patch is within -g/2 .. g/2 - 1 of the column patch (both
    axes), 1e10 elsewhere (the authors' mask added to the distances)."""
    idx = torch.arange(grid)
    r, c = idx.repeat_interleave(grid), idx.repeat(grid)
    dr, dc = r[:, None] - r[None, :], c[:, None] - c[None, :]
    lo, hi = -(grid // 2), grid - 1 - grid // 2
    inside = (dr >= lo) & (dr <= hi) & (dc >= lo) & (dc <= hi)
    return torch.where(inside, 0.0, 1e10).double()


def _similarity(col: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    sq = col.pow(2).sum(1, keepdim=True)  # (b, 1, L)
    dist = (sq.transpose(1, 2) + sq - 2 * col.transpose(1, 2) @ col).clamp(0.0)
    return torch.exp(-(dist + penalty))


def _group_prox(a: torch.Tensor, lam: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    support = (sim.abs().sum(1, keepdim=True) + 1e-12) ** 0.5  # (b, 1, L): column sums
    norm = (a.pow(2) @ sim + 1e-8) ** 0.5  # (b, n, L)
    return torch.relu(1 - lam[:, None] * support / norm) * a


def _average(cols: torch.Tensor, size, p: int) -> torch.Tensor:
    ones = F.fold(torch.ones_like(cols), size, p)
    return F.fold(cols, size, p) / ones


def authors_forward(model: SparseCoding, y: torch.Tensor) -> torch.Tensor:
    p, size = model.patch, y.shape[-2:]
    cols = F.unfold(y, p)
    mean = cols.mean(1, keepdim=True)
    cols = cols - mean
    grid = size[0] - p + 1
    penalty = _window_penalty(grid)
    std = model.kappa[None, :, None]
    sim = _similarity(cols * std, penalty)
    a = _group_prox(model.C.t() @ cols, model.lam[0], sim)
    for k in range(model.steps - 1):
        if k % model.refresh == 0 and k != 0:
            estimate = _average(model.W @ a + mean, size, p)
            new = _similarity((F.unfold(estimate, p) - mean) * std, penalty)
            nu = torch.sigmoid(model.nu_logit)
            sim = (1 - nu) * sim + nu * new
        a = _group_prox(a + model.C.t() @ (cols - model.D @ a), model.lam[k + 1], sim)
    return _average(model.W @ a + mean, size, p)


def _model(**options) -> SparseCoding:
    torch.manual_seed(0)
    model = SparseCoding(prox="group", window=56, **options).double()
    with torch.no_grad():  # parameters away from their first values, some thresholds negative
        for w in (model.C, model.D, model.W):
            w.add_(0.02 * torch.randn_like(w))
        model.lam.copy_(0.02 + 0.01 * torch.randn_like(model.lam))
        model.kappa.copy_(0.8 + 0.4 * torch.rand_like(model.kappa))
        model.nu_logit.fill_(0.3)
    assert (model.lam < 0).any()
    return model


def test_the_dense_groupsc_is_the_authors_forward_pass():
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(1, 1, 56, 56, generator=g, dtype=torch.float64)
    y = clean + 25 / 255 * torch.randn(1, 1, 56, 56, generator=g, dtype=torch.float64)
    model = _model()
    with torch.no_grad():
        ours, theirs = model(y), authors_forward(model, y)
        assert (ours - theirs).abs().max() < 1e-12
        legacy = _model(**LEGACY_FORWARD)
        assert (legacy(y) - theirs).abs().max() > 1e-4  # the first models differed
