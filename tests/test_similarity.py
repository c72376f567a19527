"""The authors' forward pass, pinned by its properties (groupsc.similarity, SparseCoding)."""

import pytest
import torch

from groupsc import patches as P
from groupsc import prox as PX
from groupsc import similarity as SIM
from groupsc.models.sparse import AUTHORS_FORWARD, LEGACY_FORWARD, SparseCoding

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.usefixtures("one_thread"),
]


def _tracker(kind: str, centered: bool, patch: int = 3):
    if kind == "dense":
        return SIM.DenseSimilarity(patch, centered, window="block")
    return SIM.KnnSimilarity(patch, radius=20, k=10_000, mode="window", centered=centered)


def _dense(sim) -> torch.Tensor:
    return sim if isinstance(sim, torch.Tensor) else sim.to_dense()


@pytest.mark.parametrize("kind", ["dense", "knn"])
def test_a_constant_added_to_a_patch_leaves_its_similarities_unchanged(kind):
    """Adding c to the pixels of patch j shifts that patch by c and only partly changes the
    patches overlapping it: with centring, the similarities of j to every patch that does not
    overlap it stay the same; without, they change."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 12, 12, generator=g, dtype=torch.float64)
    kappa = torch.full((9,), 0.7, dtype=torch.float64)
    a, b, wp = 4, 5, 10  # patch j's corner; grid 10 x 10
    x2 = x.clone()
    x2[..., a : a + 3, b : b + 3] += 0.3
    j = a * wp + b
    rows, cols = torch.arange(100) // wp, torch.arange(100) % wp
    apart = ((rows - a).abs() >= 3) | ((cols - b).abs() >= 3)  # no pixel in common with j
    for centered in (True, False):
        s1 = _dense(_tracker(kind, centered).start(x, kappa))[0]
        s2 = _dense(_tracker(kind, centered).start(x2, kappa))[0]
        same = torch.allclose(s1[j, apart], s2[j, apart], rtol=1e-9, atol=1e-12)
        assert same == centered


def test_the_window_of_a_56_block_keeps_offsets_minus_24_to_23():
    mask = SIM.window_mask((48, 48), 48)  # [l, i]: l is a neighbour of i
    counts = mask.sum(0).view(48, 48)
    assert counts[0, 0] == 576 and counts[24, 24] == 2304 and counts[47, 47] == 625
    assert counts[0, 47] == 24 * 25
    i = 24 * 48 + 24  # a central patch: l - i spans -24..+23 in rows and columns
    assert mask[0, i] and not mask[i, 0]  # offset -24 kept, +24 (the other way) not
    # on a 56 x 56 block with kappa = 0 every neighbour has similarity 1: the mass is the count
    model = SparseCoding(patch=9, atoms=4, steps=1, prox="group", window=56)
    with torch.no_grad():
        model.kappa.zero_()
        mass = model.similarity(torch.rand(1, 1, 56, 56)).sum(1)[0].view(48, 48)
    assert mass[0, 0] == 576 and mass[24, 24] == 2304
    assert SparseCoding(patch=9, atoms=4, steps=1, prox="group").dense_window == "authors"


def _sims_seen_by_step(model: SparseCoding, y: torch.Tensor) -> list:
    seen = []
    original = model._prox

    def spy(b, lam, k, sim, n_img):
        seen.append(sim)
        return original(b, lam, k, sim, n_img)

    model._prox = spy
    with torch.no_grad():
        model(y)
    return seen


@pytest.mark.parametrize("knn", [None, {"radius": 3, "k": 5}])
def test_refreshed_sigma_is_first_used_by_steps_7_13_19(knn):
    torch.manual_seed(0)
    y = torch.rand(1, 1, 16, 16)
    for offset, expected in ((1, [7, 13, 19]), (0, [6, 12, 18])):
        model = SparseCoding(
            patch=3, atoms=8, steps=24, prox="group", window=16, knn=knn, refresh_offset=offset
        )
        assert model.refresh_steps() == expected
        seen = _sims_seen_by_step(model, y)
        changes = [k for k in range(1, 24) if seen[k] is not seen[k - 1]]
        assert changes == expected
    assert SparseCoding(prox="group", steps=12).refresh_steps() == [7]


def test_signed_thresholds_follow_the_authors_rule():
    x = torch.linspace(-1, 1, 41)
    t = torch.tensor(-0.2)
    signed = PX.signed_soft_threshold(x, t)
    torch.testing.assert_close(signed, torch.relu(x - t) - torch.relu(-x - t))
    inside = x.abs() < 0.2
    torch.testing.assert_close(signed[inside], 2 * x[inside])
    pos = torch.rand(5, 7) * 0.3
    codes = torch.randn(5, 7)
    assert torch.equal(PX.signed_soft_threshold(codes, pos), PX.soft_threshold(codes, pos))
    torch.manual_seed(0)
    y = torch.rand(1, 1, 12, 12)
    for prox in ("soft", "group"):
        signed_model = SparseCoding(patch=3, atoms=8, steps=3, prox=prox, window=12)
        clamped = SparseCoding(
            patch=3, atoms=8, steps=3, prox=prox, window=12, signed_thresholds=False
        )
        clamped.load_state_dict(signed_model.state_dict())
        with torch.no_grad():
            assert torch.equal(signed_model(y), clamped(y))  # thresholds >= 0: the same
            for m in (signed_model, clamped):
                m.lam[1, :3] = -0.05
            assert not torch.allclose(signed_model(y), clamped(y))


def test_defaults_are_the_authors_and_the_legacy_options_reproduce_the_old_forward():
    model = SparseCoding(prox="group")
    assert model.forward_options() == AUTHORS_FORWARD
    torch.testing.assert_close(torch.sigmoid(model.nu_logit), torch.sigmoid(torch.ones(1)))
    legacy = SparseCoding(prox="group", **LEGACY_FORWARD)
    assert legacy.refresh_steps() == [6, 12, 18]
    # the legacy forward: raw patches, every pair, floored norms, clamped thresholds
    torch.manual_seed(0)
    kw = dict(patch=3, atoms=6, steps=4, prox="group", window=10, refresh=2)
    old = SparseCoding(**kw, **LEGACY_FORWARD)
    y = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        old.lam.uniform_(-0.05, 0.1)
        z = P.extract(y, 3) * old.kappa[None, :, None]
        sigma = torch.exp(-(z[:, :, :, None] - z[:, :, None, :]).square().sum(1))
        lam = old.lam[0].clamp_min(0)[:, None]
        first = PX.RelaxedGroupLasso(lam, sigma).prox(old.C.t() @ P.center(P.extract(y, 3))[0])
        enc_first = SparseCoding(**{**kw, "steps": 1}, **LEGACY_FORWARD)
        enc_first.load_state_dict({**old.state_dict(), "lam": old.lam[:1]})
        torch.testing.assert_close(enc_first.encode(y).codes(), first, atol=1e-5, rtol=1e-4)


def test_open_groups_of_equal_codes_threshold_as_sc_whatever_the_mass():
    """The threshold rule when groups open: if a patch's neighbours carry its code, the group
    prox is SC's soft-thresholding with the same thresholds, for any neighbour mass. So a
    GroupSC started from a trained SC keeps SC's thresholds (``lam_scale: 1``)."""
    g = torch.Generator().manual_seed(0)
    code = torch.randn(6, 1, generator=g, dtype=torch.float64)
    lam = torch.rand(6, 1, generator=g, dtype=torch.float64) * 0.8
    codes = code.expand(6, 5).clone()  # five patches, one code
    for scale in (0.01, 1.0, 40.0):
        sigma = scale * torch.rand(5, 5, generator=g, dtype=torch.float64) + torch.eye(5)
        out = PX.RelaxedGroupLasso(lam, sigma, added=None).prox(codes)
        torch.testing.assert_close(out, PX.soft_threshold(codes, lam))
