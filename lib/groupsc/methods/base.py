"""What every method shares: its description and the numpy <-> torch wrapper.

A restorer is called with the observation of the task's measurement operator
(:class:`groupsc.physics.Observation`: the degraded image and what the method may know, the
noise level of a non-blind task, the mask of a mosaic), or with the bare image array; either
way it returns the estimate as a float array of the image's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from groupsc.physics import Observation

Restorer = Callable[["Observation | np.ndarray"], np.ndarray]
Builder = Callable[[str, float], Restorer]  # (task, level) -> restorer

DENOISE = ("gray_denoise",)
COLOR = ("color_denoise", "blind_color_denoise")


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


def _tensor(a: np.ndarray) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` array as a ``(1, C, H, W)`` float32 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]


def image(obs: Observation | np.ndarray) -> np.ndarray:
    """The degraded image of an observation (an array is its own)."""
    return obs.y if isinstance(obs, Observation) else obs


def noise_level(obs: Observation | np.ndarray, fallback: float | None = None) -> float:
    """The noise level (0-255) a restorer works at: the observation's ``sigma`` when its task
    tells it, else ``fallback`` for a bare array, else the paper's estimate from the noisy
    image alone (:func:`groupsc.noise_level.estimate_noise_level`, Liu et al. 2013)."""
    from groupsc.noise_level import estimate_noise_level

    told = obs.sigma if isinstance(obs, Observation) else fallback
    return float(told) if told is not None else estimate_noise_level(image(obs))


class TorchRestorer:
    """Wrap an image-to-image ``nn.Module`` taking ``(1, C, H, W)`` into a numpy restorer."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def __call__(self, obs: Observation | np.ndarray) -> np.ndarray:
        y = image(obs)
        kwargs = {}
        if isinstance(obs, Observation) and obs.mask is not None:  # a mosaic's samples
            kwargs["mask"] = _tensor(obs.mask)
        with torch.inference_mode():
            out = self.model(_tensor(y), **kwargs)[0]
        out = out[0] if y.ndim == 2 else out.permute(1, 2, 0)
        return out.numpy()


class BlindRestorer(TorchRestorer):
    """A model with thresholds per noise level (``model.noise_bins``): it is given the
    observation's ``sigma`` when the task tells it (non-blind tasks), else the paper's estimate
    from the noisy image alone (:func:`groupsc.noise_level.estimate_noise_level`, as the paper
    at inference); ``last_sigma`` keeps the level it used."""

    last_sigma: float | None = None

    def __call__(self, obs: Observation | np.ndarray) -> np.ndarray:
        y = image(obs)
        self.last_sigma = noise_level(obs)
        with torch.inference_mode():
            out = self.model(_tensor(y), sigma=self.last_sigma)[0]
        out = out[0] if y.ndim == 2 else out.permute(1, 2, 0)
        return out.numpy()
