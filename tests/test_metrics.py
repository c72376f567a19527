"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from groupsc.metrics import blocking_effect_factor, mse, psnr, psnrb, ssim


def test_psnr_hand_computed():
    ref = np.zeros((4, 4))
    x = ref.copy()
    x[0, 0] = 0.4  # MSE = 0.16 / 16 = 0.01 -> PSNR = 20 dB
    assert mse(x, ref) == pytest.approx(0.01)
    assert psnr(x, ref) == pytest.approx(20.0)
    assert psnr(ref, ref) == math.inf


def test_psnr_color_averages_all_channels():
    ref = np.zeros((2, 2, 3))
    x = ref.copy()
    x[..., 0] = 0.1  # MSE = 0.01 / 3
    assert psnr(x, ref) == pytest.approx(10 * math.log10(300))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))


def test_ssim_identical_and_constant_offset():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32))
    assert ssim(x, x) == pytest.approx(1.0)
    # A constant offset c changes only the luminance term: with flat images of values a and b
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01)^2.
    a, b = 0.5, 0.6
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((32, 32), a), np.full((32, 32), b)) == pytest.approx(expected, rel=1e-6)


def test_bef_hand_computed():
    # 16x16 image made of two 8-column blocks with values 0 and 1: every horizontal pair across
    # the block boundary (column 7|8) differs by 1, every other pair by 0.
    x = np.zeros((16, 16))
    x[:, 8:] = 1.0
    # 16 rows x 1 boundary column pair + 16 columns x 1 boundary row pair
    n_boundary = 16 + 16
    d_b = 16 / n_boundary  # only the 16 horizontal boundary pairs differ
    d_bc = 0.0
    eta = math.log2(8) / math.log2(16)
    assert blocking_effect_factor(x) == pytest.approx(eta * (d_b - d_bc))
    # no blocking when the jump is inside a block
    y = np.zeros((16, 16))
    y[:, 4:] = 1.0
    assert blocking_effect_factor(y) == 0.0


def test_psnrb_adds_bef_to_mse():
    ref = np.zeros((16, 16))
    x = np.zeros((16, 16))
    x[:, 8:] = 0.1
    expected_mse = 0.01 * 0.5
    bef = (math.log2(8) / math.log2(16)) * (16 * 0.01 / 32)
    assert psnrb(x, ref) == pytest.approx(10 * math.log10(1 / (expected_mse + bef)))
    assert psnrb(x, ref) < psnr(x, ref)
