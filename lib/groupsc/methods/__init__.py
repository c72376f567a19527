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
bilinear,      classical demosaicking (``colour-demosaicing``): bilinear,    released
malvar2004,    Malvar et al. 2004, Menon et al. 2007
menon2007
sc, csr,       the paper's models trained here (``checkpoints/<key>_<task>_<level>``)   trained
groupsc,
groupsc-knn
dncnn-s-       comparison models trained here (``train.comparison`` runs; see        trained
trained,       :mod:`groupsc.methods.trained`)
panet-s, nsr,
dcsc-trained
=============  ===========================================================  =========

``released`` means run here from the authors' released weights or code, untrained by us;
BM3D and NLM have no weights, their implementation is what is released.
"""

from __future__ import annotations

from groupsc.methods import reference, trained
from groupsc.methods.base import Builder, MethodInfo, Restorer, TorchRestorer
from groupsc.methods.trained import load_trained, trained_run

METHODS: dict[str, tuple[MethodInfo, Builder]] = {**reference.METHODS, **trained.METHODS}

__all__ = [
    "METHODS",
    "MethodInfo",
    "Restorer",
    "TorchRestorer",
    "get_method",
    "load_trained",
    "method_info",
    "trained_run",
]


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
