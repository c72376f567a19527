"""Degradations are deterministic per (dataset, image, level, seed) and follow their conventions."""

import numpy as np
import pytest

from groupsc.degradations import add_noise, bayer, bayer_mask, degrade, image_seed, jpeg, task_mode


def test_noise_is_seeded_per_image_and_not_clipped():
    x = np.full((64, 64), 0.98, dtype=np.float32)
    a = degrade(x, "gray_denoise", 25, dataset="BSD68", image="test001")
    b = degrade(x, "gray_denoise", 25, dataset="BSD68", image="test001")
    c = degrade(x, "gray_denoise", 25, dataset="BSD68", image="test002")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.max() > 1.0  # not clipped
    assert a.dtype == np.float32
    assert np.std(a - x) == pytest.approx(25 / 255, rel=0.05)


def test_seed_depends_on_every_field():
    base = image_seed("BSD68", "test001", 25, 0)
    assert base != image_seed("BSD68", "test001", 25, 1)
    assert base != image_seed("BSD68", "test001", 15, 0)
    assert base != image_seed("Set12", "test001", 25, 0)
    assert base == image_seed("BSD68", "test001", 25.0, 0)


def test_noise_rejects_negative_sigma():
    with pytest.raises(ValueError):
        add_noise(np.zeros((2, 2)), -1, 0)


def test_jpeg_quality_monotone_and_on_8bit_grid():
    rng = np.random.default_rng(0)
    x = np.clip(rng.random((64, 64)).cumsum(1) / 40, 0, 1).astype(np.float32)
    errs = [np.mean((jpeg(x, q) - x) ** 2) for q in (10, 40, 90)]
    assert errs[0] > errs[1] > errs[2]
    y = jpeg(x, 10)
    np.testing.assert_allclose(y * 255, np.round(y * 255), atol=1e-4)
    np.testing.assert_array_equal(y, jpeg(x, 10))


def test_jpeg_rejects_rgb_with_a_hint():
    with pytest.raises(ValueError, match="convert RGB to Y"):
        jpeg(np.zeros((8, 8, 3)), 10)


def test_bayer_rggb():
    m = bayer_mask((4, 4))
    assert (m.sum(2) == 1).all()
    assert m[0, 0, 0] == 1 and m[0, 1, 1] == 1 and m[1, 0, 1] == 1 and m[1, 1, 2] == 1
    x = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    mosaic, mask = bayer(x)
    np.testing.assert_array_equal(mosaic, x * mask)


def test_unknown_task():
    with pytest.raises(KeyError, match="known tasks"):
        task_mode("deblur")
