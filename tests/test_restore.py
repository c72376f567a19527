"""Restoring one's own image (:mod:`groupsc.restore`, :mod:`groupsc.tiles`,
:mod:`groupsc.imagefiles`): real files of each kind, tiles, conversions and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from groupsc import restore as R
from groupsc.data import read_image, rgb_to_y
from groupsc.imagefiles import write_image
from groupsc.tiles import restore_tiled, tile_boxes

SIGMA = 25


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    """A 70 x 90 gray image with structure (a ramp and a disc) and sigma-25 noise, in [0, 1]."""
    rr, cc = np.mgrid[:70, :90]
    clean = 0.2 + 0.5 * cc / 90 + 0.25 * ((rr - 35) ** 2 + (cc - 45) ** 2 < 400)
    rng = np.random.default_rng(0)
    return np.clip(clean + rng.normal(0, SIGMA / 255, clean.shape), 0, 1).astype(np.float32)


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "groupsc.restore", *args, "--threads", "1", "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True)


# -- tiles ------------------------------------------------------------------------------------
@pytest.mark.parametrize("align", [1, 2])
def test_tile_cores_cover_the_image_once(align):
    cover = np.zeros((301, 517), int)
    heights, widths = set(), set()
    for (t, b, l, r), (r0, r1, c0, c1) in tile_boxes(cover.shape, 128, 21, align):
        assert t <= max(r0 - 21, 0) and b >= min(r1 + 21, 301)  # the margin around the core
        assert l <= max(c0 - 21, 0) and r >= min(c1 + 21, 517)
        assert r1 - r0 >= 100 and c1 - c0 >= 100  # no sliver cores
        assert t % align == 0 and l % align == 0  # a Bayer mosaic keeps its phase
        cover[r0:r1, c0:c1] += 1
        heights.add(b - t)
        widths.add(r - l)
    assert (cover == 1).all()
    # one window shape (to within align - 1 px at the far border): the models cache index
    # tensors per shape, and a cache entry per border shape grew the peak memory with the image
    assert max(heights) - min(heights) < align and max(widths) - min(widths) < align


def test_tiles_give_the_whole_image_result_of_a_local_model(noisy, have_data):
    """SC's estimate of a pixel depends on the input within 8 pixels (its 9 x 9 patches):
    with a margin of 8 the tiled result is the whole-image one."""
    model = R.load_model("sc", sigma=SIGMA)
    whole = model.restore(noisy)
    tiled = restore_tiled(model.restore, noisy, tile=32, margin=8, progress=False)
    np.testing.assert_allclose(tiled, whole, atol=2e-5)
    cut = restore_tiled(model.restore, noisy, tile=32, margin=0, progress=False)
    assert np.abs(cut - whole).max() > 1e-3  # without context the seams show


# -- files ------------------------------------------------------------------------------------
def _save(path, data: np.ndarray) -> None:
    if path.suffix == ".tif":
        tifffile.imwrite(path, data, photometric="rgb" if data.ndim == 3 else "minisblack")
    elif data.dtype == np.uint16 and data.ndim == 3:
        write_image(path, data / 65535.0, bits=16)  # Pillow cannot write it
    else:
        Image.fromarray(data).save(path, quality=95)


KINDS = [
    ("gray8.png", np.uint8, False),
    ("gray16.png", np.uint16, False),
    ("rgb8.png", np.uint8, True),
    ("rgb16.png", np.uint16, True),
    ("rgb8.jpg", np.uint8, True),
    ("gray8.jpg", np.uint8, False),
    ("gray16.tif", np.uint16, False),
    ("rgb16.tif", np.uint16, True),
]


@pytest.mark.parametrize(("name", "dtype", "color"), KINDS, ids=[k[0] for k in KINDS])
def test_restores_each_kind_of_file_at_its_depth(tmp_path, noisy, have_data, name, dtype, color):
    top = np.iinfo(dtype).max
    pixels = np.dstack([noisy, noisy[::-1], noisy[:, ::-1]]) if color else noisy
    src = tmp_path / name
    _save(src, np.rint(pixels * top).astype(dtype))
    out = tmp_path / f"out_{src.stem}.png"
    done = _run(str(src), str(out), "--model", "sc", "--sigma", str(SIGMA))
    assert done.returncode == 0, done.stderr
    # sc has a color model at SIGMA (sc_color_25): a color image goes to it whole
    assert ("color_denoise" in done.stdout) == color and "gray model" not in done.stderr
    est, white = read_image(out)
    read, _ = read_image(src)
    assert white == (255 if name.endswith(".jpg") else top) and est.shape == read.shape
    noise = np.std(read - est)  # the model removed about sigma of noise
    assert 0.6 * SIGMA / 255 < noise < 1.4 * SIGMA / 255


def _without_color_model(key: str, candidates) -> float:
    """A level of ``candidates`` with no color model of ``key`` (more are trained over time)."""
    color = set(R.trained_levels(key, "color_denoise") or ())
    free = [level for level in candidates if float(level) not in color]
    assert free, f"every level of {candidates} has a {key} color model"
    return float(free[0])


def _gray_only_level() -> tuple[str, float]:
    """A (model, level) with a gray model but no color one and no blind color model: the
    k-NN or the dense GroupSC, whichever still has such a level (more are trained over time)."""
    for key in ("groupsc-knn", "groupsc", "csr"):
        if R.trained_levels(key, "blind_color_denoise") is None:
            continue  # a blind color model serves every level
        color = set(R.trained_levels(key, "color_denoise") or ())
        free = [lv for lv in R.trained_levels(key, "gray_denoise") or () if lv not in color]
        if free:
            return key, float(free[0])
    raise AssertionError("every gray GroupSC/CSR level has a color model: pick another case")


def test_a_color_image_without_a_color_model_at_its_sigma_is_restored_per_channel(
    tmp_path, noisy, have_data
):
    key, sigma = _gray_only_level()
    src = tmp_path / "rgb.png"
    _save(src, np.rint(np.dstack([noisy, noisy[::-1], noisy[:, ::-1]]) * 255).astype(np.uint8))
    done = _run(str(src), str(tmp_path / "out.png"), "--model", key, "--sigma", f"{sigma:g}")
    assert done.returncode == 0, done.stderr
    assert "gray model: R, G and B restored one by one" in done.stderr
    assert f"gray_denoise, sigma {sigma:g}" in done.stdout


def test_sc_restores_a_color_image_at_any_sigma_with_its_blind_model_told_the_sigma(noisy):
    """SC has color models at some levels and one blind color model (a threshold set per
    noise bin): at a bin's sigma without a color model a color image goes to the blind model,
    which uses the given sigma's bin instead of estimating it; where a color model exists, it
    is used."""
    sigma = _without_color_model("sc", (5, 10, 15, 20, 25))
    model = R.load_model("sc", sigma, color=True)
    assert (model.task, model.level) == ("blind_color_denoise", sigma)
    assert R.load_model("sc", 25, color=True).task == "color_denoise"
    rgb = np.dstack([noisy, noisy[::-1], noisy[:, ::-1]])
    R.restore_pixels(model, rgb, progress=False)
    assert model.restore.last_sigma == sigma


def test_sigma_auto_estimates_and_takes_the_nearest_trained_level(tmp_path, noisy, have_data):
    src = tmp_path / "noisy.png"
    _save(src, np.rint(noisy * 255).astype(np.uint8))
    done = _run(str(src), str(tmp_path / "out.png"), "--model", "sc", "--sigma", "auto")
    assert done.returncode == 0, done.stderr
    estimate = float(done.stderr.split("estimated sigma: ")[1].split()[0])
    assert abs(estimate - SIGMA) < 5
    assert "sigma 25" in done.stdout


def test_a_jpeg_model_restores_the_luma_of_a_color_image(noisy, have_data):
    model = R.load_model("dncnn-3", quality=10)
    rgb = np.dstack([noisy, 0.5 * noisy, np.full_like(noisy, 0.3)])
    est, notes = R.restore_pixels(model, rgb, progress=False)
    luma = rgb_to_y(rgb)
    np.testing.assert_allclose(rgb_to_y(est) - luma, model.restore(luma.astype(np.float32)) - luma,
                               atol=1e-5)  # fmt: skip
    chroma = est - est.mean(axis=2, keepdims=True)  # R, G, B moved together: chroma kept
    np.testing.assert_allclose(chroma, rgb - rgb.mean(axis=2, keepdims=True), atol=1e-5)
    assert "luma" in notes[0]


def test_a_color_model_refuses_a_gray_image(noisy, have_data):
    """Three equal channels carry equal noise, which CDnCNN-B leaves (it removed 0.004 of
    0.098 here): a gray image goes to a gray model."""
    with pytest.raises(R.RestoreError, match="for a gray image use a gray model: .*dncnn-b"):
        R.restore_pixels(R.load_model("cdncnn-b"), noisy, progress=False)


# -- the model list and the errors ----------------------------------------------------------
def test_list_names_every_model_with_its_weights_and_psnr(have_data):
    cards = R.model_cards()
    assert set(cards.model) == set(R.model_names())
    sc25 = cards[(cards.model == "sc") & (cards.level == "25")].iloc[0]
    assert len(sc25.sha256) == 64 and "steps" in sc25.budget and sc25.psnr.startswith("BSD68 25")
    assert (cards[cards.model == "dncnn-s"].level.tolist()) == ["15", "25", "50"]


def test_a_model_measured_on_a_stated_subset_only_lists_that_figure():
    import pandas as pd

    row = {"method": "GroupSC", "source": "trained", "task": "color_denoise", "level": 25.0,
           "metric": "psnr"}  # fmt: skip
    summary = pd.DataFrame([row | {"dataset": "CBSD68 (first 10)", "value": 30.81}])
    info = R.method_info("groupsc")
    assert R._measured_psnr(summary, info, "color_denoise", 25.0) == "CBSD68 (first 10) 25: 30.81"
    both = pd.concat([summary, pd.DataFrame([row | {"dataset": "CBSD68", "value": 30.9}])])
    assert R._measured_psnr(both, info, "color_denoise", 25.0) == "CBSD68 25: 30.90"
    assert R._measured_psnr(summary, info, "color_denoise", 15.0) == "-"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "--sigma", "25"], "unknown model 'nope'; known:"),
        (["--model", "sc"], "sc needs the noise level: --sigma S"),
        (["--model", "sc", "--sigma", "20"], "sc has models for sigma 5, 15, 25, 50 only"),
        (["--model", "sc", "--sigma", "300"], "noise sigma must be a number in (0, 255]"),
        (["--model", "csr", "--quality", "10"], "csr does not do JPEG deblocking; models that do:"),
        (["--model", "dcsc-updated"], "dcsc-updated is a JPEG model: give --quality Q"),
        (["--model", "dcsc-updated", "--quality", "0"], "JPEG quality must be an integer"),
    ],
)
def test_bad_requests_fail_in_one_line(tmp_path, noisy, have_data, args, message):
    src = tmp_path / "noisy.png"
    _save(src, np.rint(noisy * 255).astype(np.uint8))
    done = _run(str(src), str(tmp_path / "out.png"), *args)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out.png").exists()


def test_bad_files_fail_in_one_line_before_any_work(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [
        ((str(tmp_path / "missing.png"), str(tmp_path / "o.png")), "does not exist"),
        ((str(text), str(tmp_path / "o.png")), "cannot read the image"),
        ((str(text), str(tmp_path / "o.bmp")), "cannot write .bmp"),
        ((str(text), str(tmp_path / "no" / "o.png")), "does not exist"),
    ]
    for files, message in cases:
        done = _run(*files, "--model", "sc", "--sigma", "25")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert done.stderr.strip().count("\n") == 0


def test_a_raw_mosaic_is_demosaicked_in_tiles_that_keep_the_bayer_phase(have_data):
    """A one-channel RGGB mosaic in tiles starting on even pixels (odd tile sizes asked)
    gives the whole-image result of a classical demosaicker."""
    from groupsc.data import image_paths, load_image
    from groupsc.degradations import bayer

    x = load_image(image_paths("Kodak24")[0], "rgb")[:90, :110]
    cfa = bayer(x)[0].sum(axis=2)
    model = R.load_model("malvar2004")
    assert model.task == "demosaic" and "RGGB" in model.describe()
    whole, _ = R.restore_pixels(model, cfa, tile=1000, progress=False)
    tiled, notes = R.restore_pixels(model, cfa, tile=37, margin=7, progress=False)
    assert whole.shape == x.shape and "RGGB mosaic" in notes[0]
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    with pytest.raises(R.RestoreError, match="give it as a one-channel image"):
        R.restore_pixels(model, x, progress=False)
