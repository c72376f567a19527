"""The noise-level estimator of the GroupSC paper's reference [29] (Liu, Tanaka & Okutomi 2013,
:mod:`groupsc.noise_level`) on images of known sigma."""

from __future__ import annotations

import numpy as np
import pytest

from groupsc.data import image_paths, load_image
from groupsc.noise_level import (
    channel_noise_level,
    derivative_operator,
    estimate_noise_level,
    texture_threshold,
)


def test_the_derivative_operator_of_a_patch():
    """70 central differences of weight 1/2 on a 7 x 7 patch: tr(D'D) = 70 x 2 x 1/4 = 35; its
    null space holds the constant patch (and the period-2 patterns central differences miss)."""
    dd = derivative_operator(7)
    assert dd.shape == (49, 49) and np.allclose(dd, dd.T)
    assert np.trace(dd) == pytest.approx(35.0)
    assert np.allclose(dd @ np.ones(49), 0)
    assert np.linalg.eigvalsh(dd).min() > -1e-12
    # the threshold is a high quantile of the noise patches' texture strength / sigma^2, whose
    # mean is tr(D'D) = 35
    assert 35 < texture_threshold(7, 1 - 1e-6) < 4 * 35


def test_pure_noise_gives_its_sigma():
    """Up to the known bias of a sample covariance's smallest eigenvalue: about
    (1 - sqrt(49 / n)) sigma from n patches of 49 pixels, 3.6 % for the 37,636 patches here."""
    rng = np.random.default_rng(0)
    flat = np.full((200, 200), 0.5) + rng.standard_normal((200, 200)) * 10 / 255
    bias = 1 - np.sqrt(49 / 194**2)
    assert estimate_noise_level(flat) == pytest.approx(10 * bias, rel=0.01)
    assert channel_noise_level(flat * 255) == pytest.approx(10 * bias, rel=0.01)  # any units


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_natural_images_of_known_sigma(have_data, sigma):
    """On BSD68 images the estimate is within 0.1 sigma + 0.5 of the truth, and up to sigma 25
    closer on average than scikit-image's wavelet estimate (which texture inflates at low
    sigma; at 50 both are within half a level)."""
    from skimage.restoration import estimate_sigma

    rng = np.random.default_rng(sigma)
    ours, theirs = [], []
    for path in image_paths("BSD68")[:4]:
        x = load_image(path, "gray")
        y = x + rng.standard_normal(x.shape) * sigma / 255
        ours.append(estimate_noise_level(y))
        theirs.append(255 * estimate_sigma(y))
    errors = np.abs(np.array(ours) - sigma)
    assert errors.max() < 0.1 * sigma + 0.5, ours
    if sigma <= 25:
        assert errors.mean() <= np.abs(np.array(theirs) - sigma).mean()


def test_a_color_image_is_estimated_per_channel(have_data):
    x = load_image(image_paths("CBSD68")[0], "rgb")
    y = x + np.random.default_rng(3).standard_normal(x.shape) * 20 / 255
    assert estimate_noise_level(y) == pytest.approx(20, abs=2.0)


def test_too_small_an_image_is_refused():
    with pytest.raises(ValueError, match="too small for 7x7 patches"):
        estimate_noise_level(np.zeros((8, 8)))


def test_the_error_table_has_bias_and_mean_absolute_error_per_level():
    import pandas as pd

    from groupsc.noise_level import error_table

    table = pd.DataFrame(
        {"image": ["a", "b", "a", "b"], "sigma": [5.0, 5.0, 25.0, 25.0],
         "liu2013": [5.5, 4.5, 26.0, 25.0], "skimage": [6.0, 7.0, 24.0, 24.0]}
    )  # fmt: skip
    err = error_table(table)
    assert err.loc[5.0, ("liu2013", "bias")] == 0
    assert err.loc[5.0, ("liu2013", "mean |error|")] == 0.5
    assert err.loc[25.0, ("skimage", "bias")] == -1 and err.loc[25.0, ("liu2013", "bias")] == 0.5
