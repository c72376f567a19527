"""Dataset registry and color conventions."""

import numpy as np
import pytest

from groupsc.data import DATASETS, get_dataset, image_paths, load_image, rgb_to_y
from groupsc.paths import DataMissingError, require_data

EXPECTED_COUNTS = {
    "BSD400": 400,
    "CBSD400": 400,
    "CBSD432": 432,
    "BSD68": 68,
    "Set12": 12,
    "CBSD68": 68,
    "Kodak24": 24,
    "McMaster": 18,
    "Classic5": 5,
    "LIVE1": 29,
}


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(KeyError, match="BSD68"):
        get_dataset("BSD6")


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_dataset_sizes(name, have_data):
    assert len(image_paths(name)) == EXPECTED_COUNTS[name]


def test_registry_covers_the_expected_names():
    assert set(DATASETS) == set(EXPECTED_COUNTS)


def test_cbsd432_excludes_cbsd68(have_data):
    test_ids = {p.stem for p in image_paths("CBSD68")}
    assert not test_ids & {p.stem for p in image_paths("CBSD432")}


def test_rgb_to_y_matches_matlab_rgb2ycbcr():
    # MATLAB: rgb2ycbcr(uint8([255 255 255])) -> Y 235; black -> 16; pure red -> 81
    rgb = np.array([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    np.testing.assert_allclose(rgb_to_y(rgb) * 255, [[235.0, 16.0, 81.481]], atol=1e-3)


def test_load_modes(have_data):
    path = image_paths("CBSD68")[0]
    rgb = load_image(path, "rgb")
    y = load_image(path, "y")
    gray = load_image(path, "gray")
    assert rgb.shape[2] == 3 and y.shape == rgb.shape[:2] == gray.shape
    assert rgb.dtype == y.dtype == np.float32
    assert 16 / 255 - 1e-6 <= y.min() and y.max() <= 235 / 255 + 1e-6
    with pytest.raises(ValueError, match="gray image"):
        load_image(image_paths("BSD68")[0], "rgb")
    with pytest.raises(ValueError, match="unknown mode"):
        load_image(path, "hsv")


def test_bsd68_is_the_gray_cbsd68(have_data):
    """DATA_SOURCES note 4: BSD68 test NNN is the gray NNN-th CBSD68 (names sorted as strings)."""
    gray = load_image(image_paths("BSD68")[0], "gray")
    from_rgb = load_image(image_paths("CBSD68")[0], "gray")
    assert np.abs(gray - from_rgb).mean() * 255 < 0.5


def test_missing_data_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("GROUPSC_ROOT", str(tmp_path))
    with pytest.raises(DataMissingError, match="dvc pull"):
        require_data("test/BSD68")
    with pytest.raises(DataMissingError, match="dvc pull"):
        image_paths("BSD68")
