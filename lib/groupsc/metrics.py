"""Image quality metrics on [0, 1] images.

- :func:`psnr`: per image, peak 1 (equivalently 255 on 8 bits), over all pixels and channels,
  no border crop; a set's PSNR is the mean of the per-image values (as in all five papers).
- :func:`ssim`: scikit-image's ``structural_similarity`` with the settings of Wang et al.'s
  reference ``ssim_index.m`` used by the papers: 11x11 Gaussian window with sigma 1.5,
  K1 = 0.01, K2 = 0.03, population covariances, data range 1, no down-sampling; color images
  average the per-channel SSIM.
- :func:`psnrb`: PSNR-B of Yim & Bovik (IEEE TIP 2011): the MSE plus the blocking effect
  factor (BEF) of the *restored* image for 8x8 blocks.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity


def _check_pair(x: np.ndarray, ref: np.ndarray) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: estimate {x.shape} vs reference {ref.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) images, got shape {x.shape}")


def mse(x: np.ndarray, ref: np.ndarray) -> float:
    """Mean squared error over all pixels and channels, in float64."""
    _check_pair(x, ref)
    d = x.astype(np.float64) - ref.astype(np.float64)
    return float(np.mean(d * d))


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """``10 log10(1 / MSE)`` in dB for images in [0, 1]; ``inf`` when identical."""
    err = mse(x, ref)
    return math.inf if err == 0 else 10.0 * math.log10(1.0 / err)


def ssim(x: np.ndarray, ref: np.ndarray) -> float:
    """SSIM (Wang et al. 2004 settings, see module docstring) for images in [0, 1]."""
    _check_pair(x, ref)
    return float(
        structural_similarity(
            x.astype(np.float64),
            ref.astype(np.float64),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            K1=0.01,
            K2=0.03,
            channel_axis=2 if x.ndim == 3 else None,
        )
    )


def blocking_effect_factor(x: np.ndarray, block: int = 8) -> float:
    """Yim-Bovik blocking effect factor of one gray image ``(H, W)``.

    With horizontal neighbour pairs split into those that straddle a block boundary
    (columns ``kB-1 | kB``) and the rest, and likewise for vertical pairs,
    ``D_B`` and ``D_Bc`` are the mean squared differences over the two sets and
    ``BEF = eta * max(D_B - D_Bc, 0)`` with ``eta = log2(B) / log2(min(H, W))``.
    """
    if x.ndim != 2:
        raise ValueError(f"BEF is defined on one channel (H, W), got shape {x.shape}")
    x = x.astype(np.float64)
    h, w = x.shape
    dh = (x[:, 1:] - x[:, :-1]) ** 2  # (H, W-1): pair (j, j+1) in column j
    dv = (x[1:, :] - x[:-1, :]) ** 2  # (H-1, W)
    bcol = np.zeros(w - 1, dtype=bool)
    bcol[block - 1 :: block] = True
    brow = np.zeros(h - 1, dtype=bool)
    brow[block - 1 :: block] = True
    n_b = dh[:, bcol].size + dv[brow, :].size
    n_bc = dh[:, ~bcol].size + dv[~brow, :].size
    if n_b == 0 or n_bc == 0:
        return 0.0
    d_b = (dh[:, bcol].sum() + dv[brow, :].sum()) / n_b
    d_bc = (dh[:, ~bcol].sum() + dv[~brow, :].sum()) / n_bc
    eta = math.log2(block) / math.log2(min(h, w))
    return float(eta * max(d_b - d_bc, 0.0))


def psnrb(x: np.ndarray, ref: np.ndarray, block: int = 8) -> float:
    """PSNR-B in dB, ``10 log10(1 / (MSE(x, ref) + BEF(x)))``; color averages MSE-B per channel."""
    _check_pair(x, ref)
    if x.ndim == 2:
        mse_b = mse(x, ref) + blocking_effect_factor(x, block)
    else:
        mse_b = float(
            np.mean(
                [
                    mse(x[..., c], ref[..., c]) + blocking_effect_factor(x[..., c], block)
                    for c in range(x.shape[2])
                ]
            )
        )
    return math.inf if mse_b == 0 else 10.0 * math.log10(1.0 / mse_b)
