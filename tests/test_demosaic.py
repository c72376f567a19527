"""The classical demosaicking references (``colour-demosaicing``) through the harness's Bayer
operator: the RGGB layouts agree and the methods rank as the literature has them."""

from __future__ import annotations

import numpy as np
import pytest

from groupsc import physics as PH
from groupsc.data import image_paths, load_image, quantize
from groupsc.methods import get_method
from groupsc.metrics import psnr

METHODS = ("bilinear", "malvar2004", "menon2007")


@pytest.mark.parametrize("method", METHODS)
def test_a_flat_color_comes_back(method):
    """Every method restores a constant color exactly away from the borders: the package's
    RGGB layout is the harness's (a mismatch would swap red and blue)."""
    x = np.broadcast_to(np.array([0.8, 0.5, 0.2], np.float32), (24, 24, 3)).copy()
    obs = PH.operator("demosaic", None).observe(x)
    est = get_method(method, "demosaic", 0)(obs)
    np.testing.assert_allclose(est[4:-4, 4:-4], x[4:-4, 4:-4], atol=1e-5)


def test_the_methods_rank_as_in_the_literature(have_data):
    path = image_paths("Kodak24")[0]
    x = load_image(path, "rgb")
    obs = PH.observe(x, "demosaic", None, dataset="Kodak24", image=path.stem)
    scores = [psnr(quantize(get_method(m, "demosaic", 0)(obs)), x) for m in METHODS]
    assert scores[0] < scores[1] < scores[2]  # bilinear < Malvar < Menon
    assert scores[0] > 20


def test_a_gray_image_is_refused():
    with pytest.raises(ValueError, match="takes an RGB mosaic"):
        get_method("bilinear", "demosaic", 0)(np.zeros((8, 8), np.float32))


def test_a_sparse_model_trains_and_restores_with_the_bayer_mask():
    """Training batches of the mosaic task carry the operator's mask to the model (the LISTA
    residual is masked), and the harness's restorer passes it on at inference."""
    import torch

    from groupsc.methods import TorchRestorer
    from groupsc.models.sparse import SparseCoding
    from groupsc.train import TrainConfig, loss_fn, make_batch

    rng = np.random.default_rng(0)
    images = [rng.random((32, 32, 3), dtype=np.float32) for _ in range(3)]
    cfg = TrainConfig(task="demosaic", mode="rgb", levels=[0], batch=2, crop=16)
    batch = make_batch(images, cfg, 0)
    assert batch.mask.shape == batch.obs.shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch.obs, batch.clean * batch.mask)
    model = SparseCoding(patch=5, atoms=16, steps=3, channels=3)
    seen = []
    sums = model.sums
    model.sums = lambda y, mask=None, sigma=None: seen.append(mask) or sums(y, mask, sigma)
    loss_fn(model, batch.clean, batch.obs, batch.levels, batch.mask).backward()
    assert seen[0] is batch.mask and torch.isfinite(model.C.grad).all()
    x = rng.random((20, 20, 3), dtype=np.float32)
    obs = PH.operator("demosaic", None).observe(x)
    forward, masks = model.forward, []
    model.forward = lambda y, mask=None, sigma=None: masks.append(mask) or forward(y, mask)
    TorchRestorer(model)(obs)
    torch.testing.assert_close(masks[0][0].permute(1, 2, 0), torch.from_numpy(obs.mask))


def test_bilinear_fill_is_the_classical_bilinear_demosaicking():
    """Away from the border (where the package mirrors and the fill renormalises) the first
    similarities' guide of a mosaic model is colour-demosaicing's bilinear method."""
    import torch
    from colour_demosaicing import demosaicing_CFA_Bayer_bilinear

    from groupsc.degradations import bayer
    from groupsc.models.sparse import bilinear_fill

    x = np.random.default_rng(1).random((20, 24, 3))
    y, mask = bayer(x)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]

    out = bilinear_fill(t(y), t(mask))[0].numpy().transpose(1, 2, 0)
    ref = demosaicing_CFA_Bayer_bilinear(y.sum(-1), "RGGB")
    np.testing.assert_allclose(out[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-6)  # float32
    np.testing.assert_array_equal(out[mask > 0], y[mask > 0])  # samples kept
    assert np.isfinite(out).all()


@pytest.mark.parametrize("knn", [None, {"radius": 3, "k": 4, "mode": "fixed"}])
def test_the_mosaic_guide_sets_the_first_similarities_only(knn):
    """``mosaic_guide="bilinear"`` measures the first similarities on the bilinear fill of the
    mosaic, ``"mosaic"`` on the mosaic itself; without a mask the two are one model."""
    import torch

    from groupsc.degradations import bayer
    from groupsc.models.sparse import SparseCoding, bilinear_fill

    torch.manual_seed(0)
    x = np.random.default_rng(2).random((16, 16, 3)).astype(np.float32)
    y, mask = (torch.from_numpy(a.transpose(2, 0, 1).copy())[None] for a in bayer(x))
    kw = dict(patch=5, atoms=16, steps=3, channels=3, prox="group", window=16, knn=knn)
    guided = SparseCoding(mosaic_guide="bilinear", **kw)
    plain = SparseCoding(mosaic_guide="mosaic", **kw)
    plain.load_state_dict(guided.state_dict())
    starts = []
    for model in (guided, plain):
        tracker = model.make_similarity()
        model.make_similarity = lambda t=tracker: t
        start = tracker.start
        tracker.start = lambda g, *a, s=start: starts.append(g) or s(g, *a)
        model.encode(y, mask)
    torch.testing.assert_close(starts[0], bilinear_fill(y, mask))
    torch.testing.assert_close(starts[1], y)
    assert not torch.equal(guided(y, mask), plain(y, mask))
    torch.testing.assert_close(guided(y), plain(y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown mosaic_guide"):
        SparseCoding(mosaic_guide="nearest")
