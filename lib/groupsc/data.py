"""Dataset registry and image loading.

Every dataset is a name mapped to one or more folders of ``data/`` (see ``DATA_SOURCES.md`` in
the shared folder). Images load as ``float32`` arrays in [0, 1]:

- ``gray``: ``(H, W)``; RGB files are converted with ITU-R BT.601 luma (as MATLAB's
  ``rgb2gray``: 0.2989 R + 0.5870 G + 0.1140 B), rounded to the file's bit depth.
- ``rgb``: ``(H, W, 3)``; gray files are an error (no silent channel copies).
- ``y``: ``(H, W)``, the Y of MATLAB's ``rgb2ycbcr`` (studio range, 16..235 on 8 bits),
  rounded to the file's bit depth as MATLAB returns for integer input (8 bits: the
  convention of the JPEG deblocking literature, ARCNN, DnCNN, DCSC). Gray files are returned
  unchanged.

Files (:func:`load_image`): 8-bit samples are divided by 255 and 16-bit ones by 65535, for gray
and RGB PNG and TIFF alike (Pillow keeps only the high byte of 16-bit color samples, so those
are decoded at full precision here). Bilevel files read as 0/1 gray; palette files as RGB, or as
gray when every palette entry is gray; CMYK, YCbCr and other color modes convert to RGB. A fully
opaque alpha channel is dropped. Float gray TIFFs must already hold values in [0, 1]. Anything
else (transparent pixels, 16-bit gray+alpha PNGs, 32-bit integer or out-of-range float images,
files that are not images) raises :class:`ImageReadError` with a one-line message naming the file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from groupsc.paths import DataMissingError, require_data

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MODES = ("gray", "rgb", "y")


@dataclass(frozen=True)
class Dataset:
    """A named image set: folders below ``data/``, its native color and its role."""

    name: str
    folders: tuple[str, ...]
    color: str  # "gray" or "rgb": what the files hold
    role: str  # "train" or "test"
    exclude_from: str | None = None  # drop files whose stem appears in this dataset
    note: str = ""


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("BSD400", ("train/BSD400",), "gray", "train", note="Train400 gray 180x180 crops"),
        Dataset(
            "CBSD400",
            ("train/BSDS500/train", "train/BSDS500/test"),
            "rgb",
            "train",
            note="BSDS500 train + test (400 images)",
        ),
        Dataset(
            "CBSD432",
            ("train/BSDS500/train", "train/BSDS500/test", "train/BSDS500/val"),
            "rgb",
            "train",
            exclude_from="CBSD68",
            note="all 500 BSDS500 images minus the 68 CBSD68 ids",
        ),
        Dataset("BSD68", ("test/BSD68",), "gray", "test"),
        Dataset("Set12", ("test/Set12",), "gray", "test"),
        Dataset("CBSD68", ("test/CBSD68",), "rgb", "test"),
        Dataset("Kodak24", ("test/Kodak24",), "rgb", "test", note="FFDNet's 500x500 crops"),
        Dataset("McMaster", ("test/McMaster",), "rgb", "test"),
        Dataset("Classic5", ("test/Classic5",), "gray", "test"),
        Dataset("LIVE1", ("test/LIVE1",), "rgb", "test"),
    )
}


def get_dataset(name: str) -> Dataset:
    """Look up a dataset by name; unknown names list the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise KeyError(f"unknown dataset {name!r}; known datasets: {known}") from None


def image_paths(name: str) -> list[Path]:
    """Sorted image files of a dataset (sorted by file name within each folder)."""
    ds = get_dataset(name)
    paths: list[Path] = []
    for folder in ds.folders:
        root = require_data(folder)
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataMissingError(f"no images in {root}; run `dvc pull` to fetch the data")
        paths.extend(files)
    if ds.exclude_from is not None:
        drop = {p.stem for p in image_paths(ds.exclude_from)}
        paths = [p for p in paths if p.stem not in drop]
    return paths


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma for RGB in [0, 1]: ``(16 + 65.481 R + 128.553 G + 24.966 B)/255``.

    Args:
        rgb: ``(H, W, 3)`` float in [0, 1].
    Returns:
        ``(H, W)`` float64 in [16/255, 235/255] (not rounded).
    """
    _check_rgb(rgb)
    w = np.array([65.481, 128.553, 24.966])
    return (16.0 + rgb.astype(np.float64) @ w) / 255.0


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` for RGB in [0, 1]: ``0.2989 R + 0.5870 G + 0.1140 B``, ``(H, W)``."""
    _check_rgb(rgb)
    return rgb.astype(np.float64) @ np.array(
        [0.298936021293775, 0.587043074451121, 0.114020904255103]
    )


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {rgb.shape}")


def quantize(x: np.ndarray, levels: int = 255) -> np.ndarray:
    """Round to the grid of ``levels`` steps (8 bits by default): ``round(clip(x, 0, 1) * levels)
    / levels`` as float32."""
    return (np.round(np.clip(x, 0.0, 1.0) * float(levels)) / float(levels)).astype(np.float32)


class ImageReadError(ValueError):
    """A file that cannot be read as an image faithfully; the message is one line naming it."""


# Pillow's errors for files it cannot decode (tifffile's TiffFileError is a ValueError)
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
    Image.DecompressionBombError,
)  # fmt: skip
_U16_RAWMODES = ("I;16", "I;16B", "I;16L", "I;16N")  # mode "I" holding 16-bit samples
# the 8-bit layout each remaining Pillow mode is read in (anything else converts to RGB)
_PIL_TARGET = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "RGBA": "RGBA", "RGBa": "RGBA"}


def load_image(path: str | Path, mode: str = "gray") -> np.ndarray:
    """Load one image file as float32 in [0, 1] (see the module docstring for ``mode``).

    Raises:
        DataMissingError: ``path`` does not exist.
        ImageReadError: the file is not an image, or one that cannot be read faithfully.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    arr, white = read_image(path, missing="run `dvc pull` to fetch the data")
    is_rgb = arr.ndim == 3
    if mode == "rgb":
        if not is_rgb:
            raise ValueError(f"{path.name} is a gray image; load it with mode='gray'")
        return arr.astype(np.float32)
    if not is_rgb:
        return arr.astype(np.float32)
    if mode == "y":
        return quantize(rgb_to_y(arr), white)
    return quantize(rgb_to_gray(arr), white)


def read_image(path: str | Path, missing: str = "check the path") -> tuple[np.ndarray, float]:
    """The file's pixels as stored, float64 in [0, 1]: ``(H, W)`` gray or ``(H, W, 3)`` RGB
    (a fully opaque alpha dropped), and their white level (255, 65535, or 1.0 for float
    files). A missing file raises :class:`DataMissingError` ending with ``missing``; anything
    unreadable an :class:`ImageReadError` (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DataMissingError(f"{path} does not exist; {missing}")
    pixels, white = _read_pixels(path)
    return _drop_opaque_alpha(pixels, white, path).astype(np.float64) / white, white


def _read_pixels(path: Path) -> tuple[np.ndarray, float]:
    """The file's samples, ``(H, W)`` or ``(H, W, C)`` with C = 2 or 4 when it has alpha, and
    their white level (255, 65535 or 1.0 for float); every failure is an :class:`ImageReadError`.
    """
    try:
        with Image.open(path) as im:
            if _keeps_high_byte(im):
                return _read_16bit_color(path, im)
            return _pil_pixels(im, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        empty = path.is_file() and path.stat().st_size == 0
        reason = "the file is empty" if empty else "not an image, or a format Pillow cannot read"
    except _DECODE_ERRORS as err:
        reason = getattr(err, "strerror", None) or " ".join(str(err).split()) or repr(err)
    raise ImageReadError(f"{path}: cannot read the image: {reason}") from None


def _rawmode(im: Image.Image) -> str:
    """How the file stores its samples (e.g. ``"RGB;16B"``); empty once the image is loaded."""
    args = im.tile[0][3] if im.tile else ""
    return str(args[0] if isinstance(args, tuple) and args else args)


def _keeps_high_byte(im: Image.Image) -> bool:
    """True for 16-bit samples that Pillow decodes to an 8-bit mode (RGB, RGBA, ...)."""
    return not im.mode.startswith(("I", "F")) and ";16" in _rawmode(im)


def _pil_pixels(im: Image.Image, path: Path) -> tuple[np.ndarray, float]:
    if im.mode in ("P", "PA"):
        im = _depalette(im)
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _deep_gray(im, path)
    return np.asarray(im.convert(_PIL_TARGET.get(im.mode, "RGB"))), 255


def _depalette(im: Image.Image) -> Image.Image:
    """Palette files as L, LA, RGB or RGBA: gray when every entry has R = G = B, with alpha
    when the palette has transparency."""
    alpha = im.mode == "PA" or "transparency" in im.info
    entries = np.asarray(im.getpalette("RGB") or [0, 0, 0]).reshape(-1, 3)
    gray = bool((entries == entries[:, :1]).all())
    return im.convert(("LA" if alpha else "L") if gray else ("RGBA" if alpha else "RGB"))


def _deep_gray(im: Image.Image, path: Path) -> tuple[np.ndarray, float]:
    """16-bit gray as is; float gray only in [0, 1]; 32-bit integers have no known white."""
    if im.mode == "F":
        arr = np.asarray(im)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(arr).all() and 0.0 <= lo and hi <= 1.0):
            raise ImageReadError(
                f"{path}: float image with values in [{lo:g}, {hi:g}]; only [0, 1] is accepted: "
                "rescale it or save it as 8-bit or 16-bit"
            )
        return arr, 1.0
    if im.mode == "I" and _rawmode(im) not in _U16_RAWMODES:
        raise ImageReadError(
            f"{path}: Pillow reads it as 32-bit integers (mode I), whose white level is "
            "unknown; save it as 8-bit or 16-bit"
        )
    return np.asarray(im), 65535


def _read_16bit_color(path: Path, im: Image.Image) -> tuple[np.ndarray, float]:
    """16-bit color samples at full precision (Pillow would keep their high byte only)."""
    if im.format == "TIFF":
        return _tiff_16bit(path), 65535
    if im.format == "PNG" and _rawmode(im) in ("RGB;16B", "RGBA;16B"):
        return _png_16bit(path), 65535
    layout = {"LA": "gray+alpha"}.get(_rawmode(im).split(";")[0], _rawmode(im))
    raise ImageReadError(
        f"{path}: this 16-bit {layout} {im.format} cannot be read at full precision; "
        "convert it to 8-bit, or to 16-bit gray"
    )


def _png_16bit(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB(A) PNG twice: Pillow's big-endian rawmode gives the high bytes, its
    little-endian twin the low ones (the PNG filters are undone identically, 6 or 8 bytes
    per pixel)."""
    with Image.open(path) as im:
        high = np.asarray(im)
    with Image.open(path) as im:
        tile = im.tile[0]
        im.tile = [(*tile[:3], tile[3][:-1] + "L")]
        low = np.asarray(im)
    return high.astype(np.uint16) << 8 | low


def _tiff_16bit(path: Path) -> np.ndarray:
    """First page of a 16-bit RGB, RGBA or gray+alpha TIFF via tifffile, ``(H, W, C)`` uint16."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        arr = page.asarray()
        if "S" in page.axes:
            arr = np.moveaxis(arr, page.axes.index("S"), -1)
        photometric = getattr(page.photometric, "name", page.photometric)
    layout = (photometric, arr.shape[-1] if arr.ndim == 3 else 1)
    if arr.dtype != np.uint16 or layout not in (("RGB", 3), ("RGB", 4), ("MINISBLACK", 2)):
        raise ImageReadError(
            f"{path}: unsupported 16-bit TIFF ({photometric}, {arr.dtype}, shape {arr.shape}); "
            "save it as 8-bit or 16-bit RGB or gray"
        )
    return arr


def _drop_opaque_alpha(pixels: np.ndarray, white: float, path: Path) -> np.ndarray:
    """Gray+alpha or RGBA samples without their alpha, which must be fully opaque."""
    if pixels.ndim != 3 or pixels.shape[2] not in (2, 4):
        return pixels
    seen = int(np.count_nonzero(pixels[..., -1] < white))
    if seen:
        raise ImageReadError(
            f"{path}: {seen} of {pixels[..., 0].size} pixels are not fully opaque and restoring "
            "transparent pixels is undefined; flatten the image or remove its alpha channel"
        )
    rest = pixels[..., :-1]
    return rest[..., 0] if rest.shape[2] == 1 else rest


def iter_images(name: str, mode: str = "gray") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(stem, image)`` for every image of a dataset, in sorted order."""
    for path in image_paths(name):
        yield path.stem, load_image(path, mode)


def load_dataset(
    name: str, mode: str = "gray", limit: int | None = None
) -> list[tuple[str, np.ndarray]]:
    """All (or the first ``limit``) images of a dataset as ``(stem, image)`` pairs."""
    out = []
    for i, item in enumerate(iter_images(name, mode)):
        if limit is not None and i >= limit:
            break
        out.append(item)
    return out


def image_path(name: str, stem: str) -> Path:
    """The file of image ``stem`` in dataset ``name``; unknown stems list a few known ones."""
    paths = {p.stem: p for p in image_paths(name)}
    if stem not in paths:
        some = ", ".join(list(paths)[:5])
        raise KeyError(f"no image {stem!r} in {name}; its images are named like {some}, ...")
    return paths[stem]
