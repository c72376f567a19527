"""Reference methods: the authors' released weights and classical algorithms, run here.

``released`` means run here from the authors' released weights or code, untrained by us;
BM3D and NLM have no weights, their implementation is what is released.
"""

from __future__ import annotations

import numpy as np

from groupsc.methods.base import (
    COLOR,
    DENOISE,
    Builder,
    MethodInfo,
    Restorer,
    TorchRestorer,
    image,
    noise_level,
)


def _dncnn_s(task: str, level: float) -> Restorer:
    from groupsc.released import load_dncnn

    if int(level) not in (15, 25, 50) or level != int(level):
        raise ValueError(f"DnCNN-S was released for sigma 15, 25 and 50 only, not {level}")
    return TorchRestorer(load_dncnn(f"DnCNN-S-{int(level)}"))


def _released_dncnn(name: str) -> Builder:
    def build(task: str, level: float) -> Restorer:
        from groupsc.released import load_dncnn

        return TorchRestorer(load_dncnn(name))

    return build


def _dcsc(task: str, level: float) -> Restorer:
    from groupsc.released import load_dcsc_updated

    return TorchRestorer(load_dcsc_updated())


# The bm3d package refuses images below its block size and crashed (segmentation fault) on an
# 8 x 8 one here; 16 px keeps a margin over its largest block (12 px).
BM3D_MIN_SIZE = 16


def _bm3d(task: str, level: float) -> Restorer:
    """BM3D (CBM3D on color) given the noise level: the observation's ``sigma``, or on a blind
    task (no ``sigma``) the paper's estimate from the noisy image (as the GroupSC paper's
    Table 1 runs CBM3D); a bare array is taken to be at ``level``."""
    import bm3d

    def run(obs) -> np.ndarray:
        y = image(obs)
        if min(y.shape[:2]) < BM3D_MIN_SIZE:
            raise ValueError(
                f"image {y.shape[:2]} is too small for BM3D (at least {BM3D_MIN_SIZE} x "
                f"{BM3D_MIN_SIZE} pixels)"
            )
        run.last_sigma = noise_level(obs, fallback=float(level))
        sigma = float(run.last_sigma) / 255.0
        if y.ndim == 3:
            return np.asarray(bm3d.bm3d_rgb(y, sigma), dtype=np.float32)
        return np.asarray(bm3d.bm3d(y, sigma), dtype=np.float32)

    return run


# scikit-image's recommendation for fast_mode: h about 0.8 sigma; its example's patch sizes.
NLM_SETTINGS = {"patch_size": 5, "patch_distance": 6, "h_over_sigma": 0.8, "fast_mode": True}


def _nlm(task: str, level: float) -> Restorer:
    from skimage.restoration import denoise_nl_means

    sigma = float(level) / 255.0
    s = NLM_SETTINGS

    def run(obs) -> np.ndarray:
        y = image(obs)
        out = denoise_nl_means(
            y.astype(np.float64),
            h=s["h_over_sigma"] * sigma,
            sigma=sigma,
            patch_size=s["patch_size"],
            patch_distance=s["patch_distance"],
            fast_mode=s["fast_mode"],
            channel_axis=2 if y.ndim == 3 else None,
        )
        return out.astype(np.float32)

    return run


def _identity(task: str, level: float) -> Restorer:
    return image


# Classical demosaicking (the `colour-demosaicing` package): the Bayer mosaic as the package's
# single-channel CFA (our RGGB mosaic keeps one color per pixel, so the sum over channels is it).
DEMOSAICERS = {
    "bilinear": "demosaicing_CFA_Bayer_bilinear",
    "malvar2004": "demosaicing_CFA_Bayer_Malvar2004",
    "menon2007": "demosaicing_CFA_Bayer_Menon2007",
}


def _demosaicer(key: str) -> Builder:
    def build(task: str, level: float) -> Restorer:
        import colour_demosaicing

        fn = getattr(colour_demosaicing, DEMOSAICERS[key])

        def run(obs) -> np.ndarray:
            y = image(obs)
            if y.ndim != 3 or y.shape[2] != 3:
                raise ValueError(f"demosaicking takes an RGB mosaic (H, W, 3), got {y.shape}")
            return np.asarray(fn(y.sum(axis=2), "RGGB"), dtype=np.float32)

        return run

    return build


_RELEASED = "authors' release, run here; no training by us"

METHODS: dict[str, tuple[MethodInfo, Builder]] = {
    "input": (
        MethodInfo(
            "input",
            "Input",
            "released",
            DENOISE + COLOR + ("jpeg", "demosaic"),
            budget="the degraded observation itself",
            published_names=("JPEG", "jpeg", "Mosaiced"),
        ),
        _identity,
    ),
    "dncnn-s": (
        MethodInfo(
            "dncnn-s", "DnCNN-S", "released", DENOISE, "555137", _RELEASED, ("DnCNN-S", "DnCNN")
        ),
        _dncnn_s,
    ),
    "dncnn-b": (
        MethodInfo("dncnn-b", "DnCNN-B", "released", DENOISE, "665921", _RELEASED, ("DnCNN-B",)),
        _released_dncnn("DnCNN-B"),
    ),
    "cdncnn-b": (
        MethodInfo("cdncnn-b", "CDnCNN-B", "released", COLOR, "668227", _RELEASED, ("CDnCNN-B",)),
        _released_dncnn("CDnCNN-B"),
    ),
    "dncnn-3": (
        MethodInfo(
            "dncnn-3", "DnCNN-3", "released", DENOISE + ("jpeg",), "665921", _RELEASED, ("DnCNN-3",)
        ),
        _released_dncnn("DnCNN-3"),
    ),
    "dcsc-updated": (
        MethodInfo(
            "dcsc-updated",
            "DCSC (updated)",
            "released",
            ("jpeg",),
            "315937",
            _RELEASED + " (errata model, 48 maps/branch, 128 channels)",
            ("DCSC (updated)",),
        ),
        _dcsc,
    ),
    "bm3d": (
        MethodInfo(
            "bm3d",
            "BM3D",
            "released",
            DENOISE + COLOR,
            "",
            "no training; bm3d package (profile 'np'), known sigma (estimated on blind tasks)",
            ("BM3D", "CBM3D"),
        ),
        _bm3d,
    ),
    "bilinear": (
        MethodInfo(
            "bilinear",
            "Bilinear",
            "released",
            ("demosaic",),
            "",
            "no training; colour-demosaicing demosaicing_CFA_Bayer_bilinear",
            ("Bilinear",),
        ),  # fmt: skip
        _demosaicer("bilinear"),
    ),
    "malvar2004": (
        MethodInfo(
            "malvar2004",
            "Malvar 2004",
            "released",
            ("demosaic",),
            "",
            "no training; colour-demosaicing demosaicing_CFA_Bayer_Malvar2004",
            ("Malvar",),
        ),  # fmt: skip
        _demosaicer("malvar2004"),
    ),
    "menon2007": (
        MethodInfo(
            "menon2007",
            "Menon 2007",
            "released",
            ("demosaic",),
            "",
            "no training; colour-demosaicing demosaicing_CFA_Bayer_Menon2007",
            ("Menon",),
        ),  # fmt: skip
        _demosaicer("menon2007"),
    ),
    "nlm": (
        MethodInfo(
            "nlm",
            "NLM",
            "released",
            DENOISE + COLOR,
            "",
            "no training; scikit-image denoise_nl_means "
            + ", ".join(f"{k}={v}" for k, v in NLM_SETTINGS.items()),
            ("NLM",),
        ),
        _nlm,
    ),
}
