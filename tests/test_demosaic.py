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
