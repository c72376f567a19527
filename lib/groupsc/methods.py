"""Every restoration method behind one interface, looked up by name.

A *method* turns an observation (the degraded image, ``(H, W)`` or ``(H, W, 3)`` float32) into
an estimate of the same shape. :func:`get_method` builds one for a (task, level) pair, since
some methods depend on the level (DnCNN-S has one network per sigma; BM3D takes sigma).

=============  ===========================================================  =========
key            what                                                         source
=============  ===========================================================  =========
input          the observation itself (the "Noisy" / "JPEG" row)             released
dncnn-s        DnCNN-S, the authors' network for this sigma (15, 25, 50)    released
dncnn-b        DnCNN-B, blind gray denoiser                                 released
cdncnn-b       CDnCNN-B, blind color denoiser                               released
dncnn-3        DnCNN-3, one gray model for noise, SISR and JPEG             released
dcsc-updated   DCSC's updated model (errata), one model for q 10..40        released
bm3d           BM3D (``bm3d`` package by the BM3D authors), known sigma      released
nlm            non-local means (scikit-image), known sigma                  released
sc, csr,       the paper's models trained here (``checkpoints/<kind>_<task>_<level>``)  trained
groupsc
=============  ===========================================================  =========

``released`` means run here from the authors' released weights or code, untrained by us;
BM3D and NLM have no weights, their implementation is what is released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

Restorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MethodInfo:
    """What a results table needs to know about a method."""

    key: str
    name: str  # display name, as in the papers' tables
    source: str  # published | released | trained
    tasks: tuple[str, ...]
    params: str = ""  # parameter count, or a short description for classical methods
    budget: str = ""  # training budget / provenance
    published_names: tuple[str, ...] = field(default_factory=tuple)  # names in the papers


class TorchRestorer:
    """Wrap an image-to-image ``nn.Module`` taking ``(1, C, H, W)`` into a numpy restorer."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def __call__(self, y: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        t = t[None, None] if y.ndim == 2 else t.permute(2, 0, 1)[None]
        with torch.inference_mode():
            out = self.model(t)[0]
        out = out[0] if y.ndim == 2 else out.permute(1, 2, 0)
        return out.numpy()


def _dncnn_s(task: str, level: float) -> Restorer:
    from groupsc.released import load_dncnn

    if int(level) not in (15, 25, 50) or level != int(level):
        raise ValueError(f"DnCNN-S was released for sigma 15, 25 and 50 only, not {level}")
    return TorchRestorer(load_dncnn(f"DnCNN-S-{int(level)}"))


def _released_dncnn(name: str) -> Callable[[str, float], Restorer]:
    def build(task: str, level: float) -> Restorer:
        from groupsc.released import load_dncnn

        return TorchRestorer(load_dncnn(name))

    return build


def _dcsc(task: str, level: float) -> Restorer:
    from groupsc.released import load_dcsc_updated

    return TorchRestorer(load_dcsc_updated())


def _bm3d(task: str, level: float) -> Restorer:
    import bm3d

    sigma = float(level) / 255.0

    def run(y: np.ndarray) -> np.ndarray:
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

    def run(y: np.ndarray) -> np.ndarray:
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


TASK_SHORT = {
    "gray_denoise": "gray",
    "color_denoise": "color",
    "jpeg": "jpeg",
    "demosaic": "mosaic",
    "blind_color_denoise": "cblind",
}


def trained_run(kind: str, task: str, level: float) -> str:
    """The ``params.yaml`` run (and ``checkpoints/`` folder) of a trained model: ``sc_gray_25``."""
    return f"{kind}_{TASK_SHORT[task]}_{float(level):g}"


def load_trained(run: str) -> torch.nn.Module:
    """A model trained here (``checkpoints/<run>/model.pt``), with ``budget`` and ``n_params``."""
    from groupsc.fit import build_model
    from groupsc.models import count_parameters
    from groupsc.paths import DataMissingError, repo_root
    from groupsc.train import budget_label

    path = repo_root() / "checkpoints" / run / "model.pt"
    if not path.exists():
        raise DataMissingError(
            f"{path} is missing: train it with `dvc repro train@{run}` "
            f"(or `python -m groupsc.fit {run}`)"
        )
    ck = torch.load(path, weights_only=True)
    cfg = dict(ck["model_config"])
    model = build_model(cfg.pop("kind"), cfg)
    model.load_state_dict(ck["model"])
    model.budget = f"{ck['budget'].get('budget', '')} budget: {budget_label(ck['budget'])}"
    model.n_params = str(count_parameters(model))
    return model.eval()


def _trained(kind: str) -> Callable[[str, float], Restorer]:
    def build(task: str, level: float) -> Restorer:
        model = load_trained(trained_run(kind, task, level))
        restorer = TorchRestorer(model)
        restorer.budget, restorer.params = model.budget, model.n_params
        return restorer

    return build


def _identity(task: str, level: float) -> Restorer:
    return lambda y: y


DENOISE = ("gray_denoise",)
COLOR = ("color_denoise", "blind_color_denoise")
_RELEASED = "authors' release, run here; no training by us"

METHODS: dict[str, tuple[MethodInfo, Callable[[str, float], Restorer]]] = {
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
            "no training; bm3d package (profile 'np'), known sigma",
            ("BM3D", "CBM3D"),
        ),
        _bm3d,
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
    "sc": (
        MethodInfo("sc", "SC", "trained", DENOISE, published_names=("SC",)),
        _trained("sc"),
    ),
    "csr": (
        MethodInfo("csr", "CSR", "trained", DENOISE, published_names=("CSR",)),
        _trained("csr"),
    ),
    "groupsc": (
        MethodInfo("groupsc", "GroupSC", "trained", DENOISE, published_names=("GroupSC",)),
        _trained("groupsc"),
    ),
}


def method_info(key: str) -> MethodInfo:
    """The :class:`MethodInfo` of a method key; unknown keys list the known ones."""
    try:
        return METHODS[key][0]
    except KeyError:
        raise KeyError(f"unknown method {key!r}; known methods: {', '.join(METHODS)}") from None


def get_method(key: str, task: str, level: float) -> Restorer:
    """Build the restorer of method ``key`` for ``task`` at ``level``."""
    info = method_info(key)
    if task not in info.tasks:
        raise ValueError(
            f"method {key!r} does not do task {task!r}; it does: {', '.join(info.tasks)}"
        )
    return METHODS[key][1](task, level)
