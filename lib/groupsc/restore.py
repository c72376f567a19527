"""Restore your own image with any model of the project, trained here or released.

Command line::

    python -m groupsc.restore --list
    python -m groupsc.restore noisy.png clean.png --model groupsc-knn --sigma 25
    python -m groupsc.restore noisy.png clean.png --model sc --sigma auto
    python -m groupsc.restore photo.jpg fixed.png --model dcsc-updated --quality 10

From Python::

    from groupsc.restore import load_model
    model = load_model("groupsc-knn", sigma=25)   # model.restore: (H, W) float -> (H, W) float
    print(model.describe())

The noise level ``sigma`` is on the 0-255 scale whatever the file's bit depth (``auto``: the
paper's estimator, :mod:`groupsc.noise_level`); ``quality`` is the JPEG quality the input was
saved with, 1..100. Files are read by :func:`groupsc.data.read_image` (8/16-bit PNG and TIFF,
JPEG, gray or RGB) and written at the input's bit depth (:mod:`groupsc.imagefiles`). A gray
model restores each channel of a color image; a JPEG model the luma (MATLAB's ``rgb2ycbcr`` Y,
as the JPEG literature and the harness), chroma kept; a color model refuses a gray image (its
three equal channels would carry equal noise, which it was not trained to remove). Large
images go through :func:`groupsc.tiles.restore_tiled`. Every problem is one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from groupsc.methods import METHODS, MethodInfo, get_method, method_info
from groupsc.methods.trained import (
    ONE_MODEL_TASKS,
    ONE_RUN,
    RUN_PREFIX,
    TASK_SHORT,
    trained_run,
)
from groupsc.runtime import set_threads

# Methods that need no noise level (blind): the level they are built with is ignored.
BLIND = ("dncnn-b", "cdncnn-b", "dncnn-3")
# The released DnCNN-S has one network per sigma.
RELEASED_LEVELS = {"dncnn-s": (15.0, 25.0, 50.0)}
NOT_MODELS = ("input",)  # in the harness, not a restoration
BLIND_LEVEL = 25.0  # what a blind model is built with (unused by it)


class RestoreError(ValueError):
    """A request that cannot be served: the message is one line naming the fix."""


def model_names() -> list[str]:
    return [key for key in METHODS if key not in NOT_MODELS]


def _info(name: str) -> MethodInfo:
    if name in NOT_MODELS or name not in METHODS:
        raise RestoreError(f"unknown model {name!r}; known: {', '.join(model_names())}")
    return method_info(name)


def trained_levels(key: str, task: str) -> tuple[float, ...] | None:
    """Levels at which ``params.yaml`` has a run of the trained method ``key`` for ``task``
    (``None``: one run serves every level; ``()``: none)."""
    from groupsc.fit import RUN_STAGES, load_params

    if key in ONE_RUN:
        return None
    train = load_params()["train"]
    names = [name for section in RUN_STAGES for name in train.get(section, {})]
    if task in ONE_MODEL_TASKS:  # a blind model: one run for every level, or none
        return None if trained_run(key, task, 0) in names else ()
    prefix = f"{RUN_PREFIX.get(key, key)}_{TASK_SHORT[task]}_"
    pattern = re.compile(re.escape(prefix) + r"(\d+(?:\.\d+)?)$")
    return tuple(sorted(float(m.group(1)) for n in names if (m := pattern.match(n))))


def levels(info: MethodInfo, task: str) -> tuple[float, ...] | None:
    """The levels ``info`` has a model for (``None``: any level)."""
    if info.source == "trained":
        return trained_levels(info.key, task)
    return RELEASED_LEVELS.get(info.key)


def serves(info: MethodInfo, task: str, level: float | None = None) -> bool:
    """Whether ``info`` has a model for ``task`` (at ``level``, when one is given)."""
    have = levels(info, task)
    return have is None or (bool(have) and (level is None or float(level) in have))


def choose_task(
    info: MethodInfo, quality: int | None, color: bool, sigma: float | None = None
) -> str:
    """The task a model does for an image: JPEG deblocking if a quality is given, else
    denoising of the image's kind where the model has both: its color task when it has a
    model at ``sigma`` (any level when ``None``), else its gray one (run per channel)."""
    if quality is not None:
        if "jpeg" not in info.tasks:
            jpeg = [k for k in model_names() if "jpeg" in method_info(k).tasks]
            raise RestoreError(
                f"{info.key} does not do JPEG deblocking; models that do: {', '.join(jpeg)}"
            )
        return "jpeg"
    denoise = [t for t in info.tasks if t.endswith("denoise") and serves(info, t)]
    if not denoise and "demosaic" in info.tasks:
        return "demosaic"
    if not denoise:
        raise RestoreError(f"{info.key} is a JPEG model: give --quality Q (the input's quality)")
    if color:
        for task in ("color_denoise", "blind_color_denoise"):
            if task in denoise and serves(info, task, sigma):
                return task
    return "gray_denoise" if "gray_denoise" in denoise else denoise[0]


def estimate_sigma(pixels: np.ndarray) -> float:
    """The noise sigma on the 0-255 scale, by the paper's estimator (Liu et al. 2013 on weakly
    textured patches, :mod:`groupsc.noise_level`)."""
    from groupsc.noise_level import estimate_noise_level

    return estimate_noise_level(pixels)


def choose_level(info: MethodInfo, task: str, level, estimated: bool, notes: list[str]) -> float:
    """The level to build the model with: the given sigma or quality, checked against the
    levels the model has (an ``estimated`` sigma takes the nearest one, saying so)."""
    from groupsc.degradations import validate_level

    if task == "demosaic":
        return 0.0
    if task == "jpeg" or info.key in BLIND:
        if task != "jpeg" and level is not None and not estimated:
            notes.append(f"{info.key} is blind: the given sigma is not used")
        try:
            return validate_level(task, level) if task == "jpeg" else BLIND_LEVEL
        except ValueError as err:
            raise RestoreError(str(err)) from None
    if level is None:
        raise RestoreError(f"{info.key} needs the noise level: --sigma S (0-255) or --sigma auto")
    try:
        value = float(validate_level(task, level))
    except ValueError as err:
        raise RestoreError(str(err)) from None
    have = levels(info, task)
    if have is None or value in have:
        return value
    if not have:
        raise RestoreError(f"{info.key} has no trained model for {task}")
    listed = ", ".join(f"{v:g}" for v in have)
    if not estimated:
        raise RestoreError(f"{info.key} has models for sigma {listed} only, not {value:g}")
    nearest = min(have, key=lambda v: abs(v - value))
    notes.append(f"{info.key} has models for sigma {listed}: using the nearest, {nearest:g}")
    return nearest


@dataclass
class Model:
    """A restorer ready for images: ``restore`` maps the task's observation (float32 in [0, 1],
    ``(H, W)`` for gray and JPEG models, ``(H, W, 3)`` for color ones) to its estimate; ``net``
    is the ``torch.nn.Module`` where there is one."""

    info: MethodInfo
    task: str
    level: float
    restore: object
    notes: list[str] = field(default_factory=list)

    @property
    def net(self):
        return getattr(self.restore, "model", None)

    @property
    def color(self) -> bool:
        return self.task in ("color_denoise", "blind_color_denoise")

    def describe(self) -> str:
        if self.task == "jpeg":
            level = f"quality {self.level:g}"
        elif self.task == "demosaic":
            level = "RGGB"
        else:
            level = "blind" if self.info.key in BLIND else f"sigma {self.level:g}"
        return f"{self.info.name} ({self.info.source}; {self.task}, {level})"


def load_model(
    name: str, sigma=None, quality: int | None = None, color: bool = False, estimated: bool = False
) -> Model:
    """The model ``name`` (see ``--list``) for denoising at ``sigma`` (0-255) or JPEG
    deblocking at ``quality``; ``color`` picks the color task of models that have both; an
    ``estimated`` sigma takes the nearest level the model was trained for. Unknown names and
    levels raise :class:`RestoreError`."""
    info = _info(name)
    known = None if estimated or sigma is None else float(sigma)
    task = choose_task(info, quality, color, known)
    notes: list[str] = []
    level = choose_level(info, task, quality if task == "jpeg" else sigma, estimated, notes)
    return Model(info, task, level, get_method(info.key, task, level), notes)


# -- images ---------------------------------------------------------------------------------
# Tiles of 160 px with 8 px of context: under 1 GB for the k-NN GroupSC at any image size,
# within 0.004 dB of the whole image (the bench_scaling stage, docs/costs.md)
TILE, MARGIN = 160, 8
LUMA_TO_RGB = 255.0 / 219.0  # MATLAB's ycbcr2rgb: a change dY of Y moves R, G and B by this x dY


def restore_pixels(
    model: Model,
    pixels: np.ndarray,
    tile: int = TILE,
    margin: int = MARGIN,
    progress: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """``model`` applied to ``pixels`` (float in [0, 1], gray or RGB), converted as it needs
    (module docstring), in tiles; returns the estimate (the input's shape) and notes."""
    from groupsc.data import rgb_to_y
    from groupsc.degradations import bayer_mask
    from groupsc.physics import Observation
    from groupsc.tiles import restore_tiled

    def restore(y: np.ndarray) -> np.ndarray:  # what the model may know travels with y
        if model.task == "demosaic":  # a tile starting on even pixels: the RGGB mask's phase
            return model.restore(Observation(y, model.task, mask=bayer_mask(y.shape[:2])))
        blind = model.task == "jpeg" or model.info.key in BLIND
        sigma = None if blind else model.level
        quality = int(model.level) if model.task == "jpeg" else None
        return model.restore(Observation(y, model.task, sigma=sigma, quality=quality))

    def run(y: np.ndarray, desc: str, align: int = 1) -> np.ndarray:
        y = np.ascontiguousarray(y, dtype=np.float32)
        return restore_tiled(restore, y, tile, margin, progress, desc, align)

    name = model.info.key
    if model.task == "demosaic":  # a raw RGGB mosaic: tiles start on even pixels
        if pixels.ndim == 3:
            raise RestoreError(
                f"{name} demosaicks a raw Bayer mosaic (RGGB): give it as a one-channel image"
            )
        mosaic = pixels[..., None] * bayer_mask(pixels.shape)
        return run(mosaic, name, align=2), [f"{name}: the input read as an RGGB mosaic"]
    if pixels.ndim == 3 and model.task == "jpeg":
        luma = rgb_to_y(pixels)
        delta = run(luma, f"{name} Y") - luma
        return pixels + LUMA_TO_RGB * delta[..., None], [
            f"{name} works on the luma: Y restored, chroma kept as decoded"
        ]
    if pixels.ndim == 3 and not model.color:
        out = np.stack([run(pixels[..., c], f"{name} {ch}") for c, ch in enumerate("RGB")], -1)
        return out, [f"{name} is a gray model: R, G and B restored one by one"]
    if pixels.ndim == 2 and model.color:  # 3 equal channels carry equal noise: not its input
        gray = [k for k in model_names() if "gray_denoise" in method_info(k).tasks]
        raise RestoreError(
            f"{name} denoises color images (noise independent per channel); for a gray image "
            f"use a gray model: {', '.join(gray)}"
        )
    return run(pixels, name), []


# -- the model list ---------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "(not pulled)"


def _released_weights(key: str, level: float | None) -> Path | None:
    from groupsc.paths import data_dir
    from groupsc.released import DCSC_FILE, DNCNN_FILES

    files = {"dncnn-b": "DnCNN-B", "cdncnn-b": "CDnCNN-B", "dncnn-3": "DnCNN-3"}
    if key == "dncnn-s" and level is not None:
        return data_dir() / DNCNN_FILES[f"DnCNN-S-{level:g}"]
    if key in files:
        return data_dir() / DNCNN_FILES[files[key]]
    return data_dir() / DCSC_FILE if key == "dcsc-updated" else None


def _measured_psnr(summary, info: MethodInfo, task: str, level: float | None) -> str:
    """The harness's PSNR of ``info`` on BSD68 (gray) or CBSD68 (color) at ``level`` (25 for
    level-free models), or Classic5 at quality ``level`` for JPEG; for a model evaluated on a
    stated subset only (``CBSD68 (first 10)``), its figure there."""
    dataset = {"jpeg": "Classic5", "gray_denoise": "BSD68"}.get(task, "CBSD68")
    default = {"jpeg": 10.0, "demosaic": 0.0}.get(task, 25.0)
    at = default if level is None else level
    rows = summary[
        (summary.method == info.name) & (summary.source != "published") & (summary.task == task)
        & (summary.level == at) & (summary.metric == "psnr")
    ]  # fmt: skip
    names = rows.dataset.astype(str)
    whole, subset = rows[names == dataset], rows[names.str.startswith(f"{dataset} (first ")]
    rows = whole if len(whole) else subset
    if not len(rows):
        return "-"
    where = rows.dataset.iloc[0]
    where = where if task == "demosaic" else f"{where} {at:g}"
    return f"{where}: {rows.value.iloc[0]:.2f}"


def _listed_tasks(info: MethodInfo) -> list[str]:
    """The tasks a model serves here: a blind model's color task is the blind one, a released
    non-blind model's the one with a known sigma; a trained model's tasks with a run (SC has
    both: its color models per sigma and its one blind model)."""
    if info.key in BLIND:
        skip = "color_denoise"
    else:
        skip = None if info.source == "trained" else "blind_color_denoise"
    return [t for t in info.tasks if t != skip and serves(info, t)]


def model_cards():
    """One row per model, task and weights file: name, source, task, level, parameters,
    sha256 of the weights, budget and the harness's PSNR (``results/summary.csv``): a
    ``pandas.DataFrame``."""
    import pandas as pd

    from groupsc.methods.trained import load_trained
    from groupsc.paths import repo_root, results_dir

    path = results_dir() / "summary.csv"
    summary = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["method"])
    rows = []
    for key in model_names():
        info = method_info(key)
        for task in _listed_tasks(info):
            have = levels(info, task)
            for level in have if have else (None,):
                row = {"model": key, "source": info.source, "task": task,
                       "level": "any" if level is None else f"{level:g}"}  # fmt: skip
                if info.source == "trained":
                    run = trained_run(key, task, 25.0 if level is None else level)
                    ck = repo_root() / "checkpoints" / run / "model.pt"
                    net = load_trained(run) if ck.is_file() else None
                    sha = net.weights_sha256 if net else "(not trained)"  # hashed on loading
                    row |= {"params": net.n_params if net else "?", "sha256": sha,
                            "budget": net.budget if net else f"not trained: {run}"}  # fmt: skip
                else:
                    weights = _released_weights(key, level)
                    row |= {"params": info.params or "-", "budget": info.budget,
                            "sha256": _sha256(weights) if weights else "-"}  # fmt: skip
                row["psnr"] = _measured_psnr(summary, info, task, level)
                rows.append(row)
    columns = ["model", "source", "task", "level", "params", "psnr", "sha256", "budget"]
    return pd.DataFrame(rows, columns=columns)


# -- command line -----------------------------------------------------------------------------
def _sigma_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number (0-255) or 'auto', not {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m groupsc.restore", description="Restore your own image with a model."
    )
    parser.add_argument("input", nargs="?", help="PNG, TIFF or JPEG; 8 or 16 bits; gray or RGB")
    parser.add_argument("output", nargs="?", help=".png, .tif or .jpg (the input's bit depth)")
    parser.add_argument("--model", help="a model of --list (e.g. groupsc-knn, sc, dncnn-b)")
    parser.add_argument("--sigma", type=_sigma_arg, help="noise sigma on 0-255, or 'auto'")
    parser.add_argument("--quality", type=int, help="the input's JPEG quality (JPEG models)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--tile", type=int, default=TILE, help=f"tile side in pixels ({TILE})")
    parser.add_argument(
        "--margin", type=int, default=MARGIN, help=f"context around a tile ({MARGIN})"
    )
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.list and not (args.input and args.output and args.model):
        parser.error("give INPUT OUTPUT --model NAME (or --list)")
    if args.threads < 1 or args.tile < 16 or args.margin < 0:
        parser.error("--threads must be >= 1, --tile >= 16 and --margin >= 0")
    return args


def restore_file(args: argparse.Namespace) -> str:
    """Read, restore and write as ``args`` says; returns the line to print."""
    import time

    from groupsc.data import read_image
    from groupsc.imagefiles import check_output, write_image

    out = check_output(args.output)
    pixels, white = read_image(args.input)
    bits = 16 if white == 65535 else 8
    set_threads(args.threads)
    sigma, estimated = args.sigma, args.sigma == "auto"
    if estimated:
        sigma = estimate_sigma(pixels)
        print(
            f"estimated sigma: {sigma:.2f} (Liu et al. 2013, weak-texture patches)", file=sys.stderr
        )
    model = load_model(args.model, sigma, args.quality, pixels.ndim == 3, estimated)
    start = time.perf_counter()
    est, notes = restore_pixels(model, pixels, args.tile, args.margin, not args.no_progress)
    seconds = time.perf_counter() - start
    notes = model.notes + notes + [write_image(out, est, bits)]
    for note in filter(None, notes):
        print(f"note: {note}", file=sys.stderr)
    return f"{args.input} -> {out}: {model.describe()}, {seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    from groupsc.checkpoint import CheckpointError
    from groupsc.data import ImageReadError
    from groupsc.imagefiles import ImageWriteError
    from groupsc.paths import DataMissingError

    args = parse_args(argv)
    errors = (RestoreError, ImageReadError, ImageWriteError, DataMissingError, CheckpointError)
    try:
        if args.list:
            import pandas as pd

            with pd.option_context("display.width", 250, "display.max_colwidth", 70):
                print(model_cards().to_string(index=False))
            return 0
        print(restore_file(args))
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
