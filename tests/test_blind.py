"""Blind denoising (paper section 3.4): shared dictionaries, one threshold set per noise bin,
the bin from the true level in training and from the paper's estimate at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groupsc import physics as PH
from groupsc.methods.base import BlindRestorer
from groupsc.models.sparse import SparseCoding
from groupsc.noise_level import estimate_noise_level
from groupsc.train import TrainConfig, _Estimate, make_batch

BINS = (5.0, 15.0, 25.0)


def _blind(prox: str = "soft", **kw) -> SparseCoding:
    torch.manual_seed(0)
    return SparseCoding(patch=5, atoms=16, steps=3, channels=3, prox=prox, noise_bins=BINS, **kw)


def test_each_level_uses_the_thresholds_of_its_nearest_bin():
    model = _blind()
    assert model.lam.shape == (3, 3, 16)
    assert [model.noise_bin(s) for s in (1, 9.9, 10.1, 24, 60)] == [0, 0, 1, 2, 2]
    with torch.no_grad():
        model.lam[0].fill_(100.0)  # bin 5: every code thresholded away
    y = torch.rand(1, 3, 12, 12)
    flat = model(y, sigma=5)  # zero codes: each patch is its mean, averaged back
    assert not torch.allclose(model(y, sigma=25), flat)
    assert torch.allclose(model(y, sigma=4), flat)
    with pytest.raises(ValueError, match="needs the noise level of its input"):
        model(y)


def test_blind_training_batches_share_a_level_and_train_that_bin_only():
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32, 3), dtype=np.float32) for _ in range(4)]
    cfg = TrainConfig(task="color_denoise", mode="rgb", levels=[5, 15, 25], batch=4, crop=16,
                      level_per="batch")  # fmt: skip
    model = _blind()
    clean, obs, levels, _ = make_batch(images, cfg, 3)
    assert (levels == levels[0]).all()
    est, _ = _Estimate(model)(obs, levels)
    ((est - clean) ** 2).mean().backward()
    trained = model.noise_bin(float(levels[0]))
    grads = model.lam.grad.abs().sum(dim=(1, 2))
    assert grads[trained] > 0 and grads.sum() == grads[trained]
    mixed = make_batch(images, TrainConfig(**{**cfg.__dict__, "level_per": "crop"}), 5)
    assert len(set(mixed[2].tolist())) > 1
    with pytest.raises(ValueError, match="set level_per: batch"):
        _Estimate(model)(mixed[1], mixed[2])


# SC, and GroupSC with k-NN groups (the blind groupsc-knn_cblind)
BLIND_KINDS = {
    "sc": {},
    "groupsc-knn": dict(prox="group", window=24, refresh=2, block_stride=20,
                        knn={"radius": 3, "k": 4, "mode": "fixed"}),
}  # fmt: skip


@pytest.mark.parametrize("kind", BLIND_KINDS)
def test_the_blind_method_never_receives_the_true_sigma(kind):
    """The blind task's observation carries no sigma; the restorer estimates it from the noisy
    image alone (Liu et al. 2013) and the model is given that estimate."""
    rng = np.random.default_rng(1)
    rr, cc = np.mgrid[:160, :160] / 160.0
    clean = np.stack([rr, cc, (rr + cc) / 2], axis=-1)
    obs = PH.operator("blind_color_denoise", 20).observe(clean, rng)
    assert obs.sigma is None
    model = _blind(**BLIND_KINDS[kind])
    seen = []
    forward = model.forward
    model.forward = lambda y, sigma=None: seen.append(sigma) or forward(y, sigma=sigma)
    restorer = BlindRestorer(model)
    restorer(obs)
    assert seen == [restorer.last_sigma] == [estimate_noise_level(obs.y)]
    assert seen[0] != 20 and abs(seen[0] - 20) < 2
    told = PH.operator("color_denoise", 20).observe(clean, rng)  # a non-blind task tells it
    restorer(told)
    assert seen[-1] == 20


def test_a_blind_model_starts_from_a_non_blind_one_with_thresholds_scaled_per_bin():
    from groupsc.fit import per_bin

    lam = torch.rand(3, 16)
    out = per_bin(lam, {"train_config": {"levels": [25.0]}}, BINS)
    assert out.shape == (3, 3, 16)
    assert torch.allclose(out[2], lam) and torch.allclose(out[0], lam / 5)


def test_cbm3d_on_the_blind_task_is_given_the_estimated_sigma():
    """The paper's Table 1 runs CBM3D with the estimated noise level: on the blind task BM3D
    is given the estimate from the noisy image, on the non-blind one the true sigma."""
    from groupsc.methods import get_method

    rng = np.random.default_rng(2)
    rr, cc = np.mgrid[:64, :64] / 64.0
    clean = np.stack([rr, cc, (rr + cc) / 2], axis=-1)
    blind = PH.operator("blind_color_denoise", 20).observe(clean, rng)
    restorer = get_method("bm3d", "blind_color_denoise", 20)
    restorer(blind)
    assert restorer.last_sigma == estimate_noise_level(blind.y) != 20
    restorer(PH.operator("color_denoise", 20).observe(clean, rng))
    assert restorer.last_sigma == 20
