r"""The noise level of a single image, from its weakly textured patches (Liu, Tanaka & Okutomi,
"Single-image noise level estimation for blind denoising", IEEE TIP 22(12), 2013: the GroupSC
paper's reference [29], which its blind color model uses at inference).

Model: a patch ``y = z + n`` of an image with white Gaussian noise of variance
:math:`\sigma^2`. Over patches whose clean content ``z`` lies in a low-dimensional subspace
(weak texture), the covariance of ``y`` is :math:`\Sigma_z + \sigma^2 I` with a rank-deficient
:math:`\Sigma_z`, so :math:`\sigma^2` is its smallest eigenvalue. Weak texture is told by the
texture strength :math:`\xi = \operatorname{tr}(G^\top G)`, ``G`` the horizontal and vertical
derivatives (kernel ``[-1/2, 0, 1/2]``) inside the patch: for a patch of pure noise,
:math:`\xi` follows approximately a gamma law of shape ``r / 2`` and scale
:math:`2 \sigma^2 \operatorname{tr}(D^\top D) / r` (``D`` the derivative operator on a patch,
``r`` the rank of :math:`D^\top D`), so patches with
:math:`\xi < \tau = \sigma^2 F^{-1}(\delta)` are kept (``delta`` close to 1). Starting from all
patches, select and re-estimate ``iterations - 1`` times.

As the authors' reference code (version 20150203), the covariance is the second moment of the
patches, not centred, and each channel is estimated on its own.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import correlate1d
from scipy.stats import gamma

DERIVATIVE = np.array([-0.5, 0.0, 0.5])


def derivative_operator(patch: int) -> np.ndarray:
    r""":math:`D^\top D` for the horizontal and vertical derivatives inside a ``patch x patch``
    patch (valid positions only), ``(patch^2, patch^2)``."""
    eye = np.eye(patch * patch).reshape(-1, patch, patch)
    dh = correlate1d(eye, DERIVATIVE, axis=2)[:, :, 1:-1].reshape(patch * patch, -1).T
    dv = correlate1d(eye, DERIVATIVE, axis=1)[:, 1:-1, :].reshape(patch * patch, -1).T
    return dh.T @ dh + dv.T @ dv


def texture_threshold(patch: int, confidence: float) -> float:
    """``tau / sigma^2``: the ``confidence`` quantile of a noise patch's texture strength."""
    dd = derivative_operator(patch)
    rank = np.linalg.matrix_rank(dd)
    return float(gamma.ppf(confidence, rank / 2, scale=2.0 * np.trace(dd) / rank))


def _texture(channel: np.ndarray, patch: int) -> np.ndarray:
    """Texture strength of every ``patch x patch`` patch (row-major), ``(n,)``."""
    gh = correlate1d(channel, DERIVATIVE, axis=1, mode="nearest")[:, 1:-1] ** 2
    gv = correlate1d(channel, DERIVATIVE, axis=0, mode="nearest")[1:-1, :] ** 2
    h = sliding_window_view(gh, (patch, patch - 2)).sum(axis=(2, 3))
    v = sliding_window_view(gv, (patch - 2, patch)).sum(axis=(2, 3))
    return (h + v).ravel()


def _smallest_eigenvalue(x: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(x.T @ x / (len(x) - 1))[0])


def channel_noise_level(
    channel: np.ndarray, patch: int = 7, confidence: float = 1 - 1e-6, iterations: int = 3
) -> float:
    """The noise sigma of one channel ``(H, W)``, in the image's own units."""
    x = sliding_window_view(channel, (patch, patch)).reshape(-1, patch * patch)
    strength = _texture(channel, patch)
    if len(x) < patch * patch:
        raise ValueError(f"image {channel.shape} is too small for {patch}x{patch} patches")
    sig2 = _smallest_eigenvalue(x)
    tau0 = texture_threshold(patch, confidence)
    for _ in range(iterations - 1):
        keep = strength < sig2 * tau0
        if keep.sum() < patch * patch:  # too few weak-texture patches: keep the last estimate
            break
        x, strength = x[keep], strength[keep]
        sig2 = _smallest_eigenvalue(x)
    return float(np.sqrt(max(sig2, 0.0)))


def estimate_noise_level(
    image: np.ndarray, patch: int = 7, confidence: float = 1 - 1e-6, iterations: int = 3
) -> float:
    """The noise sigma of ``image`` (float in [0, 1], ``(H, W)`` or ``(H, W, C)``) on the
    0-255 scale: the mean of the channels' estimates (:func:`channel_noise_level`)."""
    img = np.asarray(image, dtype=np.float64) * 255.0
    channels = img[..., None] if img.ndim == 2 else img
    levels = [
        channel_noise_level(channels[..., c], patch, confidence, iterations)
        for c in range(channels.shape[-1])
    ]
    return float(np.mean(levels))


def accuracy(dataset: str, levels: list[float], seed: int = 0, limit: int | None = None):
    """The estimate against the true sigma on the harness's noisy images of ``dataset`` (blind
    color denoising's operator for RGB sets, gray denoising's otherwise), with scikit-image's
    ``estimate_sigma`` beside it: a table ``image, sigma, liu2013, skimage`` (0-255 scale)."""
    import pandas as pd
    from skimage.restoration import estimate_sigma

    from groupsc.data import get_dataset, image_paths, load_image
    from groupsc.physics import observe

    color = get_dataset(dataset).color == "rgb"
    task = "blind_color_denoise" if color else "gray_denoise"
    rows = []
    for path in image_paths(dataset)[:limit]:
        clean = load_image(path, "rgb" if color else "gray")
        for sigma in levels:
            y = observe(clean, task, sigma, dataset=dataset, image=path.stem, seed=seed).y
            axis = -1 if color else None
            rows.append({
                "image": path.stem,
                "sigma": float(sigma),
                "liu2013": estimate_noise_level(y),
                "skimage": 255.0 * float(estimate_sigma(y, channel_axis=axis, average_sigmas=True)),
            })  # fmt: skip
    return pd.DataFrame(rows)


def error_table(table):
    """Per level, each estimator's bias (mean of estimate - sigma) and mean absolute error, on
    the 0-255 scale; ``table`` from :func:`accuracy`."""
    import pandas as pd

    parts = {}
    for est in ("liu2013", "skimage"):
        err = (table[est] - table.sigma).groupby(table.sigma)
        parts[(est, "bias")] = err.mean()
        parts[(est, "mean |error|")] = err.apply(lambda e: e.abs().mean())
    return pd.DataFrame(parts)


def main(argv: list[str] | None = None) -> int:
    """Write the per-image estimates and print the error per level (the ``noise_estimation``
    stage)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Noise-level estimators against the truth.")
    parser.add_argument("--dataset", default="CBSD68")
    parser.add_argument("--levels", type=float, nargs="+", default=[5, 10, 15, 20, 25])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    table = accuracy(args.dataset, args.levels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(f"noise-level estimates on {args.dataset} (0-255 scale):")
    print(error_table(table).round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
