"""Restoring a large image tile by tile, so that memory is bounded by the tile, not the image.

The image is cut into ``tile x tile`` cores; each core is restored with at least ``margin``
pixels of context on every side (clipped at the image border; all windows have one shape, so
border windows reach further inside) and only its core is kept. A method whose
output at a pixel depends on the input within ``margin`` pixels gives exactly its whole-image
result (SC: a 9 x 9 patch model, so ``margin >= 8``); the non-local models look further (a
neighbour search, refreshed similarities), so their tiled result is close, not equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

Restore = Callable[[np.ndarray], np.ndarray]


def _cuts(size: int, tile: int, align: int = 1) -> list[int]:
    """Edges of ``ceil(size / tile)`` cores of nearly equal length (none is a sliver), inner
    edges on multiples of ``align``."""
    n = -(-size // tile)
    inner = [align * round(i * size / n / align) for i in range(1, n)]
    return sorted({0, *(e for e in inner if 0 < e < size), size})


def _windows(
    cores: list[tuple[int, int]], size: int, margin: int, align: int
) -> list[tuple[int, int]]:
    """Per core ``[c0, c1)``, the window ``[top, bottom)`` read around it: the core with
    ``margin`` on each side, all windows of one length (the longest core + 2 margins, at most
    ``size``), shifted inside the image at its borders (more context there, and one shape for
    every tile: the models cache index tensors per shape); tops on multiples of ``align``."""
    length = min(size, max(c1 - c0 for c0, c1 in cores) + 2 * margin)
    out = []
    for c0, c1 in cores:
        top = align * (max(0, min(c0 - margin, size - length)) // align)
        bottom = size if top + length > size - align else top + length
        out.append((top, max(bottom, min(c1 + margin, size))))
    return out


def tile_boxes(
    shape: tuple[int, int], tile: int, margin: int, align: int = 1
) -> Iterator[tuple[tuple, tuple]]:
    """Per tile, row-major: the window read ``(top, bottom, left, right)`` and the core kept
    ``(r0, r1, c0, c1)``, both in image coordinates; the cores cover the image once, each
    window holds its core and ``margin`` pixels around it (clipped at the image border), and the
    windows share one shape (to within ``align - 1`` pixels at the far borders). With
    ``align`` (2 for a Bayer mosaic) every window starts on a multiple of it."""
    h, w = shape
    margin = align * -(-margin // align)
    rows, cols = _cuts(h, tile, align), _cuts(w, tile, align)
    row_cores = list(zip(rows[:-1], rows[1:], strict=True))
    col_cores = list(zip(cols[:-1], cols[1:], strict=True))
    row_windows = _windows(row_cores, h, margin, align)
    col_windows = _windows(col_cores, w, margin, align)
    for (r0, r1), (top, bottom) in zip(row_cores, row_windows, strict=True):
        for (c0, c1), (left, right) in zip(col_cores, col_windows, strict=True):
            yield (top, bottom, left, right), (r0, r1, c0, c1)


def restore_tiled(
    restore: Restore,
    y: np.ndarray,
    tile: int = 256,
    margin: int = 32,
    progress: bool = True,
    desc: str = "tiles",
    align: int = 1,
) -> np.ndarray:
    """``restore`` applied to ``y`` ``(H, W)`` or ``(H, W, C)`` in tiles (module docstring);
    ``align``: see :func:`tile_boxes`.

    An image that fits in one tile (with its margin) is restored whole.
    """
    if tile < 1 or margin < 0:
        raise ValueError(f"tile must be >= 1 and margin >= 0, got tile {tile}, margin {margin}")
    h, w = y.shape[:2]
    if h <= tile + 2 * margin and w <= tile + 2 * margin:
        return restore(y)
    out = np.empty_like(y, dtype=np.float32)
    boxes = list(tile_boxes((h, w), tile, margin, align))
    for (t, b, l, r), (r0, r1, c0, c1) in tqdm(boxes, desc=desc, disable=not progress):
        est = restore(np.ascontiguousarray(y[t:b, l:r]))
        out[r0:r1, c0:c1] = est[r0 - t : r1 - t, c0 - l : c1 - l]
    return out
