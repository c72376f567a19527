"""Dataset registry and image loading.

Every dataset is a name mapped to one or more folders of ``data/`` (see ``DATA_SOURCES.md`` in
the shared folder). Images load as ``float32`` arrays in [0, 1]:

- ``gray``: ``(H, W)``; RGB files are converted with ITU-R BT.601 luma (as MATLAB's
  ``rgb2gray``: 0.2989 R + 0.5870 G + 0.1140 B).
- ``rgb``: ``(H, W, 3)``; gray files are an error (no silent channel copies).
- ``y``: ``(H, W)``, the Y of MATLAB's ``rgb2ycbcr`` (studio range, 16..235 on 8 bits),
  rounded to 8 bits as MATLAB returns for ``uint8`` input: the convention of the JPEG
  deblocking literature (ARCNN, DnCNN, DCSC). Gray files are returned unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from groupsc.paths import DataMissingError, require_data

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif")
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


def quantize(x: np.ndarray) -> np.ndarray:
    """Round to the 8-bit grid: ``round(clip(x, 0, 1) * 255) / 255`` as float32."""
    return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def load_image(path: str | Path, mode: str = "gray") -> np.ndarray:
    """Load one image file as float32 in [0, 1] (see the module docstring for ``mode``)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    path = Path(path)
    if not path.exists():
        raise DataMissingError(f"{path} does not exist; run `dvc pull` to fetch the data")
    with Image.open(path) as im:
        is_rgb = im.mode not in ("L", "I;16", "I", "F", "1")
        arr = np.asarray(im.convert("RGB" if is_rgb else "L"), dtype=np.float64) / 255.0
    if mode == "rgb":
        if not is_rgb:
            raise ValueError(f"{path.name} is a gray image; load it with mode='gray'")
        return arr.astype(np.float32)
    if not is_rgb:
        return arr.astype(np.float32)
    if mode == "y":
        return quantize(rgb_to_y(arr))
    return quantize(rgb_to_gray(arr))


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
