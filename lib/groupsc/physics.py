"""Measurement operators: one object per task, shared by training and evaluation.

In the manner of deepinv's ``physics``: an operator draws the observation of a clean image and
carries what a restorer may know about it, so the training batches and the harness's test
inputs come from the same code and cannot drift. Images are float arrays in [0, 1],
``(H, W)`` (gray, Y) or ``(H, W, 3)`` (RGB).

==================  =================================================  =====================
operator            observation ``y``                                  a restorer may read
==================  =================================================  =====================
``Denoising``       ``x + sigma/255 n``, ``n ~ N(0, I)``, not clipped  ``sigma`` (unless blind)
``JpegCompression`` Pillow (IJG libjpeg) at ``quality``, 8-bit grid    ``quality``
``Mosaic``          ``M * x``, ``M`` the RGGB Bayer mask               ``mask``
==================  =================================================  =====================

The randomness comes from a ``numpy`` generator passed to :meth:`Measurement.observe`: the
harness seeds one per image (:func:`observe`: a hash of dataset, image, level and seed, so every
method sees the same input whatever the order), training draws from its batch's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groupsc import degradations as D


@dataclass(frozen=True)
class Observation:
    """A degraded image with what a restorer may know: ``y`` (float32, the image's shape),
    ``sigma`` (noise level on 0-255, None when unknown: blind models, JPEG, mosaics), ``mask``
    (1 = observed, the shape of ``y``; None when every pixel is), ``quality`` (JPEG)."""

    y: np.ndarray
    task: str
    sigma: float | None = None
    mask: np.ndarray | None = None
    quality: int | None = None


class Measurement:
    """A task's operator: ``observe(x, rng)`` -> :class:`Observation`; ``level`` is what the
    harness and the results name it by (sigma, quality; 0 for mosaics)."""

    task: str = ""
    level: float = 0.0

    def observe(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Observation:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.task}, {self.level:g})"


class Denoising(Measurement):
    """Additive white Gaussian noise of ``sigma`` (0-255 scale), not clipped (DnCNN's, DCSC's
    and GroupSC's evaluations). ``blind``: the restorer is not told ``sigma``."""

    def __init__(self, sigma: float, blind: bool = False, color: bool = False) -> None:
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.level, self.blind = float(sigma), blind
        color_task = "blind_color_denoise" if blind else "color_denoise"
        self.task = color_task if color else "gray_denoise"

    def observe(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Observation:
        y = D.gaussian(x, self.level, rng)
        return Observation(y, self.task, sigma=None if self.blind else self.level)


class JpegCompression(Measurement):
    """JPEG at ``quality`` of a gray (Y) image (:func:`groupsc.degradations.jpeg`);
    deterministic, so the generator is not used."""

    task = "jpeg"

    def __init__(self, quality: int) -> None:
        self.level = int(D.validate_level("jpeg", quality))

    def observe(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Observation:
        return Observation(D.jpeg(x, self.level), self.task, quality=self.level)


class Mosaic(Measurement):
    """The RGGB Bayer mosaic of an RGB image (:func:`groupsc.degradations.bayer`); the mask
    travels with the observation."""

    task = "demosaic"

    def observe(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Observation:
        y, mask = D.bayer(x)
        return Observation(y, self.task, mask=mask)


def operator(task: str, level: float | int | None) -> Measurement:
    """The operator of ``task`` at ``level`` (checked by
    :func:`groupsc.degradations.validate_level`: one-line errors)."""
    level = D.validate_level(task, level)
    if task == "gray_denoise":
        return Denoising(level)
    if task in ("color_denoise", "blind_color_denoise"):
        return Denoising(level, blind=task == "blind_color_denoise", color=True)
    if task == "jpeg":
        return JpegCompression(level)
    return Mosaic()


def observe(
    x: np.ndarray, task: str, level: float, *, dataset: str, image: str, seed: int = 0
) -> Observation:
    """The harness's observation of image ``image`` of ``dataset``: the operator of ``task``
    with a generator seeded by :func:`groupsc.degradations.image_seed`."""
    op = operator(task, level)
    rng = np.random.default_rng(D.image_seed(dataset, image, op.level, seed))
    return op.observe(x, rng)
