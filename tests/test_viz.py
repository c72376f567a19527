"""The notebooks' plotting helpers: shapes, orders and errors (figures drawn off-screen)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from groupsc import viz

matplotlib.use("Agg")


def test_atom_grid_tiles_atoms_with_gaps():
    d = torch.arange(2 * 9, dtype=torch.float32).view(9, 2)  # two 3x3 atoms
    grid = viz.atom_grid(d, patch=3, cols=2)
    assert grid.shape == (3, 7)
    assert (grid[:, 3] == 1).all()  # the white gap between the atoms
    assert grid[0, 0] == 0 and grid[2, 2] == 1  # each atom stretched to [0, 1]
    with pytest.raises(ValueError, match="expected 1 x 4"):
        viz.atom_grid(d, patch=4)


def test_nearest_patches_puts_the_reference_first():
    x = np.zeros((12, 12), dtype=np.float32)
    x[2:5, 2:5] = 1.0  # two identical bright squares
    x[7:10, 7:10] = 1.0
    idx = viz.nearest_patches(x, patch=3, center=(3, 3), count=2)
    width = 12 - 3 + 1
    assert idx[0] == 2 * width + 2  # the reference patch (top-left corner (2, 2))
    assert idx[1] == 7 * width + 7  # its exact copy


@pytest.mark.parametrize("loss, label", [("l2", "PSNR"), ("l1", "gray levels")])
def test_training_curve_scales_the_loss(loss, label):
    log = pd.DataFrame(
        {
            "step": [1, 2, 3],
            "loss": [0.01, 0.001, 0.001],
            "lr": [1e-3] * 3,
            "check_loss": [0.01, None, 0.001],
        }
    )
    fig = viz.training_curve(log, loss=loss)
    ax = fig.axes[0]
    assert label in ax.get_ylabel()
    first = ax.lines[0].get_ydata()
    expected = [20.0, 30.0, 30.0] if loss == "l2" else [2.55, 0.255, 0.255]
    assert np.allclose(first, expected)
    assert len(ax.lines[2].get_xdata()) == 2  # the check batch, where it was measured
    with pytest.raises(ValueError, match="'l2' or 'l1'"):
        viz.training_curve(log, loss="mse")


def test_worst_crop_finds_the_error_and_stays_inside():
    err = np.zeros((40, 50))
    err[30:34, 5:9] = 1.0  # the error blob
    rows, cols = viz.worst_crop(err, 8)
    assert rows.stop - rows.start == cols.stop - cols.start == 8
    assert rows.start <= 30 and rows.stop >= 34 and cols.start <= 5 and cols.stop >= 9
    err[:] = 0
    err[-1, -1] = 1.0  # in the corner: the window is clipped to the image
    rows, cols = viz.worst_crop(err, 8)
    assert (rows.stop, cols.stop) == (40, 50)


@pytest.mark.parametrize("shape", [(24, 30), (24, 30, 3)])
def test_crop_panels_draws_crops_errors_and_the_outline(shape):
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    panels = [(x, "clean"), (x + 0.1, "a"), (x - 0.2, "b")]
    crop = (slice(4, 12), slice(10, 18))
    fig = viz.crop_panels(x, panels, crop, errors_from=1)
    top, bottom = fig.axes[:3], fig.axes[3:]
    assert [a.get_title() for a in top] == ["clean", "a", "b"]
    assert [len(a.images) for a in bottom] == [1, 1, 1]
    assert bottom[0].images[0].get_array().shape[:2] == shape[:2]  # the whole clean image
    assert bottom[0].get_title() == "crop at row 4, column 10"
    assert len(bottom[0].patches) == 1
    errors = [a.images[0].get_array() for a in bottom[1:]]
    assert errors[0].shape == (8, 8) and np.allclose(errors[1], 0.2 * (shape + (1,))[2])
    assert bottom[2].images[0].get_clim() == (0, pytest.approx(errors[1].max()))
