"""One measurement operator per task (:mod:`groupsc.physics`), shared by training and
evaluation: it reproduces the committed observations and carries what a restorer may know."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from groupsc import physics as PH
from groupsc.data import image_paths, load_image
from groupsc.evaluate import evaluate
from groupsc.methods import TorchRestorer
from groupsc.paths import results_dir


@pytest.mark.parametrize(
    ("task", "dataset", "level"),
    [("gray_denoise", "BSD68", 25), ("jpeg", "Classic5", 10), ("jpeg", "LIVE1", 40)],
)
def test_the_harness_observations_are_those_of_the_committed_results(
    have_data, task, dataset, level
):
    """The observation itself scored (method `input`) gives the committed per-image PSNR of
    every image: the operator draws exactly the inputs every committed result was measured on."""
    table, _ = evaluate("input", task, dataset, level, progress=False)
    committed = pd.read_csv(results_dir() / "per_image" / f"input__{task}__{dataset}__{level}.csv")
    assert list(table.name) == list(committed.name)
    np.testing.assert_allclose(table.psnr, committed.psnr, atol=1e-6, rtol=0)


def test_training_noise_is_the_harness_formula_on_the_batch_generator():
    """The same operator, fed the batch's generator, draws what the old training code drew
    (``c + n sigma/255`` in float32) up to float32 rounding of the sum."""
    x = np.random.default_rng(1).random((24, 24), dtype=np.float32)
    obs = PH.operator("gray_denoise", 25).observe(x, np.random.default_rng(7)).y
    old = x + np.random.default_rng(7).standard_normal(x.shape).astype(np.float32) * (25 / 255)
    assert obs.dtype == np.float32
    np.testing.assert_allclose(obs, old, atol=1e-6, rtol=0)


def test_what_each_operator_tells_the_restorer():
    rng = np.random.default_rng(0)
    gray, rgb = rng.random((16, 16)), rng.random((16, 16, 3))
    noisy = PH.operator("gray_denoise", 15).observe(gray, rng)
    assert noisy.sigma == 15 and noisy.mask is None and noisy.task == "gray_denoise"
    color = PH.operator("color_denoise", 25).observe(rgb, rng)
    assert color.sigma == 25 and color.y.shape == rgb.shape
    blind = PH.operator("blind_color_denoise", 25).observe(rgb, rng)
    assert blind.sigma is None  # a blind model is not told the level
    assert np.std(blind.y - rgb) == pytest.approx(25 / 255, rel=0.1)
    jpeg = PH.operator("jpeg", 20).observe(gray)
    assert jpeg.quality == 20 and jpeg.sigma is None
    mosaic = PH.operator("demosaic", None).observe(rgb)
    assert mosaic.mask.shape == rgb.shape and (mosaic.mask.sum(axis=2) == 1).all()
    np.testing.assert_array_equal(mosaic.y, (rgb * mosaic.mask).astype(np.float32))


def test_bad_levels_fail_in_one_line():
    with pytest.raises(ValueError, match="JPEG quality must be an integer"):
        PH.operator("jpeg", 10.5)
    with pytest.raises(ValueError, match="noise sigma must be a number"):
        PH.operator("gray_denoise", -1)
    with pytest.raises(ValueError, match="unknown task 'deblur'"):
        PH.operator("deblur", 1)


def test_restorers_take_the_observation_or_its_image(have_data):
    import torch

    x = load_image(image_paths("Set12")[0], "gray")[:40, :40]
    obs = PH.observe(x, "gray_denoise", 25, dataset="Set12", image="01")
    net = TorchRestorer(torch.nn.Conv2d(1, 1, 3, padding=1))
    np.testing.assert_array_equal(net(obs), net(obs.y))
