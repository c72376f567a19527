"""Degradations, each deterministic given (dataset, image, level, seed).

- :func:`add_noise`: additive white Gaussian noise, sigma on the 0-255 scale, *not* clipped
  (as in DnCNN, DCSC and GroupSC's evaluations).
- :func:`jpeg`: JPEG compression of an 8-bit gray (Y) image with Pillow (libjpeg) at quality
  ``q``. The papers used MATLAB's ``imwrite``, which is IJG libjpeg too: same Annex K luminance
  table, same quality scaling (``5000/q`` below 50, ``200 - 2q`` above), baseline, integer
  DCT. For a single gray channel there is no chroma subsampling to differ, so both encoders
  quantize the same coefficients; only rounding inside the DCT implementation can differ.
- :func:`bayer`: Bayer mosaicking with the RGGB pattern (R at even rows and even columns,
  B at odd rows and odd columns, G elsewhere), returning the masked image and the mask.

Noise is drawn from ``numpy.random.default_rng(image_seed(...))``: a stable hash of the
dataset name, image name, level and global seed, so every method sees the same noisy input
and the input does not depend on the order in which images are visited.
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
from PIL import Image

TASKS = ("gray_denoise", "color_denoise", "blind_color_denoise", "jpeg", "demosaic")
NOISE_TASKS = ("gray_denoise", "color_denoise", "blind_color_denoise")


def validate_level(task: str, level: float | int | None) -> float | int:
    """The level of ``task`` checked and normalized, or a one-line ``ValueError``.

    - denoising tasks: the noise sigma on the 0-255 scale, a finite number in (0, 255];
    - ``jpeg``: the quality, an integer in 1..100 (``10.0`` is accepted as 10, ``10.7`` is not);
    - ``demosaic``: no level (``None`` or 0; returned as 0.0, the level of its result files).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if task == "demosaic":
        if level is not None and _number(level) != 0:
            raise ValueError(f"demosaic has no level (the Bayer mask is fixed); got {level}")
        return 0.0
    what = "JPEG quality" if task == "jpeg" else "noise sigma (0-255 scale)"
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"{task} needs a {what}; got {level!r}") from None
    if task == "jpeg":
        if not (math.isfinite(value) and value == int(value) and 1 <= value <= 100):
            raise ValueError(f"JPEG quality must be an integer in 1..100, got {level}")
        return int(value)
    if not (math.isfinite(value) and 0 < value <= 255):
        raise ValueError(
            f"noise sigma must be a number in (0, 255] on the 0-255 scale, got {level}"
        )
    return value


def _number(level) -> float | None:
    """``level`` as a number (command lines pass strings), None if it is not one."""
    try:
        return float(level)
    except (TypeError, ValueError):
        return None


def image_seed(dataset: str, image: str, level: float | int, seed: int = 0) -> int:
    """A 64-bit seed from a stable hash of ``dataset/image/level/seed``."""
    key = f"{dataset}/{image}/{float(level):g}/{int(seed)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def add_noise(x: np.ndarray, sigma: float, rng_seed: int) -> np.ndarray:
    """``x + sigma/255 * n`` with ``n ~ N(0, 1)`` i.i.d., float32, not clipped.

    Args:
        x: clean image in [0, 1], any shape.
        sigma: noise standard deviation on the 0-255 scale.
        rng_seed: seed, usually from :func:`image_seed`.
    """
    return gaussian(x, sigma, np.random.default_rng(rng_seed))


def gaussian(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``x + sigma/255 * n``, ``n`` drawn from ``rng`` (float64 sums, float32 out, not
    clipped): the one noise formula of training and evaluation (:mod:`groupsc.physics`)."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = rng.standard_normal(x.shape, dtype=np.float64) * (sigma / 255.0)
    return (x.astype(np.float64) + noise).astype(np.float32)


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """Compress and decode a gray (Y) image with Pillow at ``quality`` (1..100).

    Args:
        x: ``(H, W)`` float in [0, 1]; rounded to 8 bits before encoding.
    Returns:
        ``(H, W)`` float32 on the 8-bit grid.
    """
    if x.ndim != 2:
        raise ValueError(
            f"jpeg() takes a single (H, W) channel, got shape {x.shape}; "
            "convert RGB to Y first (groupsc.data.rgb_to_y or load with mode='y')"
        )
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    u8 = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, mode="L").save(buf, format="JPEG", quality=int(quality), optimize=False)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im, dtype=np.float32) / 255.0


def bayer_mask(shape: tuple[int, int]) -> np.ndarray:
    """RGGB Bayer mask, ``(H, W, 3)`` float32 with exactly one 1 per pixel."""
    h, w = shape
    mask = np.zeros((h, w, 3), dtype=np.float32)
    mask[0::2, 0::2, 0] = 1.0  # R
    mask[0::2, 1::2, 1] = 1.0  # G
    mask[1::2, 0::2, 1] = 1.0  # G
    mask[1::2, 1::2, 2] = 1.0  # B
    return mask


def bayer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic an RGB image: returns ``(x * M, M)``, both ``(H, W, 3)`` float32."""
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"bayer() takes an RGB (H, W, 3) image, got shape {x.shape}")
    mask = bayer_mask(x.shape[:2])
    return (x * mask).astype(np.float32), mask


def degrade(
    x: np.ndarray, task: str, level: float, *, dataset: str, image: str, seed: int = 0
) -> np.ndarray:
    """The degraded image of ``task`` at ``level`` (sigma, JPEG quality; none for demosaic):
    ``groupsc.physics.observe(...).y``, the harness's seeded observation without what travels
    with it (for ``demosaic`` the mask, :func:`bayer_mask` of its shape).

    ``level`` is checked by :func:`validate_level` (a bad one raises a one-line ``ValueError``).
    """
    from groupsc.physics import observe

    return observe(x, task, level, dataset=dataset, image=image, seed=seed).y


def task_mode(task: str) -> str:
    """How a task loads its images: ``gray``, ``rgb`` or ``y``."""
    modes = {
        "gray_denoise": "gray",
        "color_denoise": "rgb",
        "blind_color_denoise": "rgb",
        "jpeg": "y",
        "demosaic": "rgb",
    }
    try:
        return modes[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}") from None
