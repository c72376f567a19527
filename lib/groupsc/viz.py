"""Small plotting helpers shared by the notebooks (matplotlib only)."""

from __future__ import annotations

import math

import numpy as np
import torch


def atom_grid(
    dictionary: torch.Tensor | np.ndarray, patch: int, channels: int = 1, cols: int | None = None
) -> np.ndarray:
    """Tile the atoms (columns of ``(C p^2, n)``) into one image, each atom contrast-stretched.

    Returns ``(rows (p+1) - 1, cols (p+1) - 1)`` for gray or with a trailing 3 for color; a
    one-pixel white gap separates atoms. Atoms are ordered as given.
    """
    d = dictionary.detach().cpu().numpy() if isinstance(dictionary, torch.Tensor) else dictionary
    m, n = d.shape
    if m != channels * patch * patch:
        raise ValueError(f"dictionary has {m} rows, expected {channels} x {patch}^2")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    step = patch + 1
    shape = (rows * step - 1, cols * step - 1) + ((3,) if channels == 3 else ())
    grid = np.ones(shape, dtype=np.float32)
    for k in range(n):
        atom = d[:, k].reshape(channels, patch, patch).transpose(1, 2, 0)
        lo, hi = atom.min(), atom.max()
        atom = (atom - lo) / (hi - lo) if hi > lo else np.full_like(atom, 0.5)
        r, c = divmod(k, cols)
        block = atom[..., 0] if channels == 1 else atom
        grid[r * step : r * step + patch, c * step : c * step + patch] = block
    return grid


def show_row(images: list[tuple[np.ndarray, str]], size: float = 4.0, crop=None):
    """Show images side by side with titles; ``crop`` is an optional (slice, slice)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size))
    for ax, (img, title) in zip(np.atleast_1d(axes), images, strict=True):
        img = np.clip(img, 0, 1)
        if crop is not None:
            img = img[crop]
        ax.imshow(
            img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
        )
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


def worst_crop(err: np.ndarray, zoom: int) -> tuple[slice, slice]:
    """The ``zoom x zoom`` window (``(rows, cols)`` slices, inside the image) where the error
    map ``err`` ``(H, W)`` (e.g. a squared error summed over channels) has the largest mean."""
    from scipy.ndimage import uniform_filter

    local = uniform_filter(np.asarray(err, dtype=np.float64), zoom, mode="constant")
    r, c = np.unravel_index(np.argmax(local), local.shape)
    r0 = int(np.clip(r - zoom // 2, 0, err.shape[0] - zoom))
    c0 = int(np.clip(c - zoom // 2, 0, err.shape[1] - zoom))
    return slice(r0, r0 + zoom), slice(c0, c0 + zoom)


def crop_panels(
    x: np.ndarray,
    panels: list[tuple[np.ndarray, str]],
    crop: tuple[slice, slice],
    errors_from: int = 1,
    width: float = 2.9,
):
    """Zoomed crops side by side over their error maps.

    ``x``: the clean image ``(H, W)`` or ``(H, W, 3)`` in [0, 1]; ``panels``: (image, title)
    of the same shape. Top row: each panel's ``crop``; bottom row: ``|panel - x|`` on the crop
    (summed over channels, one colour scale) for the panels from ``errors_from`` on, and
    ``x`` whole with the crop outlined in the first column. Returns the figure.
    """
    import matplotlib.pyplot as plt

    def err(img):
        e = np.abs(img[crop] - x[crop])
        return e.sum(axis=2) if e.ndim == 3 else e

    vmax = max(err(img).max() for img, _ in panels[errors_from:])
    gray = {"cmap": "gray", "vmin": 0, "vmax": 1} if x.ndim == 2 else {}
    fig, axes = plt.subplots(2, len(panels), figsize=(width * len(panels), 2.15 * width))
    for j, (img, title) in enumerate(panels):
        axes[0, j].imshow(np.clip(img[crop], 0, 1), interpolation="nearest", **gray)
        axes[0, j].set_title(title, fontsize=9)
        if j >= errors_from:
            axes[1, j].imshow(err(img), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        for a in axes[:, j]:
            a.axis("off")
    rows, cols = crop
    box = (cols.start, rows.start), cols.stop - cols.start, rows.stop - rows.start
    axes[1, 0].imshow(np.clip(x, 0, 1), **gray)
    axes[1, 0].add_patch(plt.Rectangle(*box, fill=False, ec="yellow", lw=2))
    axes[1, 0].set_title(f"crop at row {rows.start}, column {cols.start}", fontsize=9)
    fig.tight_layout()
    return fig


def nearest_patches(x: np.ndarray, patch: int, center: tuple[int, int], count: int) -> np.ndarray:
    """Indices of the ``count`` patches of gray ``x`` ``(H, W)`` closest (squared distance) to
    the patch centered at ``center = (row, col)``, itself first. Patch ``(a, b)`` (top-left
    corner) has index ``a (W - p + 1) + b``, the column order of :func:`groupsc.patches.extract`.
    """
    from groupsc.patches import extract

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    pts = extract(t, patch)[0].T  # (L, p^2)
    half = patch // 2
    ref = (center[0] - half) * (x.shape[1] - patch + 1) + (center[1] - half)
    d = ((pts - pts[ref]) ** 2).sum(1)
    d[ref] = -1.0  # the reference first, even among exact duplicates
    return torch.argsort(d)[:count].numpy()


def training_curve(log, loss: str = "l2", window: int = 25):
    """Plot a run's ``log.csv`` (a DataFrame): the loss by step (left) and the learning rate.

    ``loss="l2"`` shows the MSE as a PSNR in dB (higher is better); ``"l1"`` the mean absolute
    error on 0-255 gray levels (lower is better). The fixed check batch is drawn as dots.
    """
    import matplotlib.pyplot as plt

    if loss not in ("l2", "l1"):
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")

    def scale(v):
        return -10 * np.log10(v) if loss == "l2" else 255 * v

    fig, ax = plt.subplots(1, 2, figsize=(13, 3.8))
    curve = scale(log["loss"])
    ax[0].plot(log["step"], curve, lw=0.5, alpha=0.5, label="training batch")
    ax[0].plot(
        log["step"], curve.rolling(window, min_periods=1).mean(), label=f"moving average ({window})"
    )
    if "check_loss" in log:
        chk = log.dropna(subset=["check_loss"])
        ax[0].plot(chk["step"], scale(chk["check_loss"]), "o-", label="fixed check batch")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("PSNR of the loss (dB)" if loss == "l2" else "mean |error| (gray levels)")
    ax[0].legend()
    ax[1].semilogy(log["step"], log["lr"])
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("learning rate")
    fig.tight_layout()
    return fig
