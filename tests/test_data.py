"""Dataset registry, color conventions and image files."""

import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from groupsc.data import (
    DATASETS,
    IMAGE_SUFFIXES,
    ImageReadError,
    get_dataset,
    image_paths,
    load_image,
    quantize,
    rgb_to_gray,
    rgb_to_y,
)
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


# --- Image files as a new user brings them (generated in tmp_path; data/ is not needed) ---

RNG = np.random.default_rng(0)
GRAY8 = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
# 16-bit values whose low byte matters: 1000 and 1001 share their high byte (3)
GRAY16 = np.array([[0, 1000, 1001], [32768, 65534, 65535]], dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
RGB16[0, 0] = (1000, 1001, 65535)


def write_png16(path, arr):
    """A 16-bit gray (H, W) or color (H, W, C) PNG, which Pillow cannot write; rows cycle through
    the None, Sub and Up filters so the decoder must undo them at the right pixel size."""
    arr = np.asarray(arr, dtype=">u2")
    arr = arr[..., None] if arr.ndim == 2 else arr
    height, width, channels = arr.shape
    rows = arr.reshape(height, -1).view(np.uint8)  # big-endian bytes of each row
    bpp = 2 * channels
    prev = np.zeros_like(rows[0])
    data = b""
    for i, row in enumerate(rows):
        kind = i % 3
        left = np.concatenate([np.zeros(bpp, np.uint8), row[:-bpp]])
        filtered = (row, row - left, row - prev)[kind]  # uint8 arithmetic wraps modulo 256
        data += bytes([kind]) + filtered.tobytes()
        prev = row

    def chunk(kind, body):
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )
    return path


def assert_refused(path, mode="gray", match=None):
    """One ImageReadError (a ValueError, so the CLIs print it) whose one-line message names
    the file and says it all (no chained Pillow error)."""
    with pytest.raises(ImageReadError, match=match) as info:
        load_image(path, mode)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert path.name in message and "\n" not in message
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return message


def opaque(channels):
    return np.concatenate([channels, np.full(channels.shape[:2] + (1,), 255, np.uint8)], -1)


def test_8bit_gray_png(tmp_path):
    path = tmp_path / "gray8.png"
    Image.fromarray(GRAY8).save(path)
    np.testing.assert_array_equal(load_image(path, "gray"), GRAY8 / np.float32(255))
    np.testing.assert_array_equal(load_image(path, "y"), load_image(path, "gray"))


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tif", "gray16.tiff"])
def test_16bit_gray_keeps_full_precision(tmp_path, name):
    path = tmp_path / name
    Image.fromarray(GRAY16).save(path)  # Pillow writes mode I;16 PNG and TIFF
    img = load_image(path, "gray")
    assert img.dtype == np.float32 and img.shape == GRAY16.shape
    assert img[0, 1] == np.float32(1000 / 65535) and img[0, 2] == np.float32(1001 / 65535)
    np.testing.assert_array_equal(img, (GRAY16 / 65535).astype(np.float32))
    np.testing.assert_array_equal(load_image(path, "y"), img)
    with pytest.raises(ValueError, match="gray image"):
        load_image(path, "rgb")


def test_tiff_and_webp_are_image_suffixes():
    assert {".tif", ".tiff", ".webp"} <= set(IMAGE_SUFFIXES)


@pytest.mark.parametrize("name", ["rgb8.png", "rgb8.tif", "rgb8.webp"])
def test_8bit_rgb(tmp_path, name):
    path = tmp_path / name
    Image.fromarray(RGB8).save(path, lossless=True)  # lossless: only WebP looks at it
    rgb = load_image(path, "rgb")
    np.testing.assert_array_equal(rgb, RGB8 / np.float32(255))
    np.testing.assert_array_equal(load_image(path, "gray"), quantize(rgb_to_gray(RGB8 / 255)))
    np.testing.assert_array_equal(load_image(path, "y"), quantize(rgb_to_y(RGB8 / 255)))


def check_rgb16(path):
    """Every 16-bit sample exact; gray and y rounded to the 16-bit grid (MATLAB on uint16)."""
    ref = RGB16 / 65535
    rgb = load_image(path, "rgb")
    assert rgb[0, 0, 0] == np.float32(1000 / 65535) and rgb[0, 0, 1] == np.float32(1001 / 65535)
    np.testing.assert_array_equal(rgb, ref.astype(np.float32))
    np.testing.assert_array_equal(load_image(path, "gray"), quantize(rgb_to_gray(ref), 65535))
    np.testing.assert_array_equal(load_image(path, "y"), quantize(rgb_to_y(ref), 65535))


def test_16bit_rgb_png_keeps_full_precision(tmp_path):
    check_rgb16(write_png16(tmp_path / "rgb16.png", RGB16))


def test_16bit_rgb_tiff_keeps_full_precision(tmp_path):
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, RGB16, photometric="rgb")
    check_rgb16(path)


def test_16bit_opaque_rgba_png_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB16, np.full((5, 7, 1), 65535, np.uint16)], -1)
    check_rgb16(write_png16(tmp_path / "rgba16.png", rgba))


def test_16bit_transparent_rgba_tiff_is_refused(tmp_path):
    rgba = np.concatenate([RGB16, np.full((5, 7, 1), 65534, np.uint16)], -1)
    path = tmp_path / "rgba16.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert_refused(path, "rgb", match="not fully opaque")


def test_16bit_gray_alpha_png_is_refused(tmp_path):
    path = write_png16(tmp_path / "la16.png", np.stack([GRAY16, np.full_like(GRAY16, 65535)], -1))
    assert_refused(path, match="16-bit gray")


def test_palette_color_reads_as_rgb(tmp_path):
    path = tmp_path / "palette.png"
    quantized = Image.fromarray(RGB8).quantize(8)
    quantized.save(path)
    expected = np.asarray(quantized.convert("RGB")) / np.float32(255)
    np.testing.assert_array_equal(load_image(path, "rgb"), expected)
    assert load_image(path, "gray").shape == RGB8.shape[:2]


def test_palette_gray_reads_as_gray(tmp_path):
    path = tmp_path / "palette_gray.png"
    Image.fromarray(GRAY8).convert("P").save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(load_image(path, "gray"), GRAY8 / np.float32(255))
    with pytest.raises(ValueError, match="gray image"):
        load_image(path, "rgb")


def test_palette_transparency_is_refused(tmp_path):
    path = tmp_path / "palette_alpha.png"
    Image.fromarray(RGB8).quantize(8).save(path, transparency=0)
    assert_refused(path, "rgb", match="not fully opaque")


def test_opaque_gray_alpha_drops_alpha(tmp_path):
    path = tmp_path / "gray_alpha.png"
    Image.fromarray(opaque(GRAY8[..., None]), "LA").save(path)
    np.testing.assert_array_equal(load_image(path, "gray"), GRAY8 / np.float32(255))


def test_transparent_gray_alpha_is_refused(tmp_path):
    la = opaque(GRAY8[..., None])
    la[1, 2, 1] = 128
    path = tmp_path / "gray_alpha_transparent.png"
    Image.fromarray(la, "LA").save(path)
    assert "1 of 6 pixels" in assert_refused(path, match="not fully opaque")


def test_opaque_rgba_drops_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    Image.fromarray(opaque(RGB8), "RGBA").save(path)
    np.testing.assert_array_equal(load_image(path, "rgb"), RGB8 / np.float32(255))


def test_transparent_rgba_is_refused(tmp_path):
    rgba = opaque(RGB8)
    rgba[..., 3] = 0
    path = tmp_path / "rgba_transparent.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert_refused(path, "gray", match="not fully opaque")


def test_bilevel_reads_as_gray_0_1(tmp_path):
    path = tmp_path / "bilevel.png"
    Image.fromarray(GRAY8 > 127).save(path)
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(load_image(path, "gray"), (GRAY8 > 127).astype(np.float32))


def test_cmyk_converts_to_rgb(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.fromarray(RGB8).convert("CMYK").save(path)
    rgb = load_image(path, "rgb")
    np.testing.assert_array_equal(rgb, RGB8 / np.float32(255))  # Pillow's CMYK round trip


def test_float_gray_tiff_in_unit_range(tmp_path):
    values = (GRAY16 / 65535).astype(np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    np.testing.assert_array_equal(load_image(path, "gray"), values)
    Image.fromarray(values * 255, "F").save(path)
    assert_refused(path, match=r"float image with values in \[0, 255\]")


def test_32bit_integer_tiff_is_refused(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(GRAY16.astype(np.int32), "I").save(path)
    assert_refused(path, match="32-bit integers")


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    assert_refused(path, match="not an image")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    assert_refused(path, match="empty")


@pytest.mark.parametrize("bits", [8, 16])
def test_truncated_png_is_refused(tmp_path, bits):
    path = tmp_path / f"truncated{bits}.png"
    noise = RNG.integers(0, 2**bits, (64, 64, 3)).astype(np.uint8 if bits == 8 else np.uint16)
    if bits == 8:
        Image.fromarray(noise).save(path)
    else:
        write_png16(path, noise)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_refused(path, "rgb", match="cannot read")
