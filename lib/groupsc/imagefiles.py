"""Writing restored images at the bit depth they were read with (reading: :mod:`groupsc.data`).

PNG goes through ``pypng`` (Pillow cannot write 16-bit color PNG), TIFF through ``tifffile``
and JPEG through Pillow (8 bits, quality 95).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG, TIFF, JPEG = (".png",), (".tif", ".tiff"), (".jpg", ".jpeg")
SUFFIXES = PNG + TIFF + JPEG


class ImageWriteError(ValueError):
    """An output that cannot be written: one line saying why and what to do."""


def check_output(path: str | Path) -> Path:
    """``path`` if an image can be written there (known suffix, existing folder), else one
    line: checked before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ImageWriteError(
            f"{path}: cannot write {path.suffix or 'a file without a suffix'}; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    if not path.parent.is_dir():
        raise ImageWriteError(f"{path}: the folder {path.parent} does not exist")
    return path


def write_image(path: str | Path, pixels: np.ndarray, bits: int = 8) -> str:
    """Write ``pixels`` (float in [0, 1], ``(H, W)`` or ``(H, W, 3)``; clipped, rounded) with
    ``bits`` (8 or 16) per sample; a JPEG is 8 bits. Returns a note on what the format changed
    ('' if nothing)."""
    path = check_output(path)
    suffix = path.suffix.lower()
    note = ""
    if suffix in JPEG and bits > 8:
        note = "JPEG holds 8 bits: the 16-bit result was reduced (write PNG or TIFF to keep 16)"
        bits = 8
    top = 2**bits - 1
    dtype = np.uint16 if bits > 8 else np.uint8
    data = np.clip(np.rint(np.asarray(pixels, np.float64) * top), 0, top).astype(dtype)
    if suffix in PNG:
        import png

        mode = ("L" if data.ndim == 2 else "RGB") + f";{bits}"
        png.from_array(data.reshape(data.shape[0], -1), mode).save(str(path))
    elif suffix in TIFF:
        import tifffile

        tifffile.imwrite(path, data, photometric="minisblack" if data.ndim == 2 else "rgb")
    else:
        from PIL import Image

        Image.fromarray(data).save(path, quality=95)
    return note
