"""Does a model scale? Time and peak memory against image size, whole and in tiles, and what
tiles cost in PSNR (issue 20).

    PYTHONPATH=lib python benchmarks/bench_scaling.py --run groupsc-knn12_gray_25 \\
        --sides 256 512 1024 2048 --tile 160 --margin 16 --margins 8 16 32 --images 4 \\
        --out results/speed/scaling.csv --tiles-out results/speed/tiles.csv

Scale: a side x side test image (BSD68 ``test003`` mirrored out to the size, the harness's
seeded noise at the run's sigma), restored whole (up to ``--whole-max`` pixels a side) and in
tiles of ``--tile`` with context margins of ``--margin`` (:func:`groupsc.tiles.restore_tiled`),
each in its own process so that the peak resident memory (``ru_maxrss``) is that restoration's;
``us_per_pixel`` is the time over side^2 (constant when time is linear in the pixels).
Tiles: the PSNR of the tiled result minus the whole-image one on the first ``--images`` BSD68
and Set12 images, per margin (``--tiles-out``: mean and worst absolute difference per set).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _noisy(side: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    from groupsc.data import image_path, load_image
    from groupsc.physics import observe

    x = load_image(image_path("BSD68", "test003"), "gray")
    reps = (-(-side // x.shape[0]), -(-side // x.shape[1]))
    big = np.pad(x, [(0, (r - 1) * n) for r, n in zip(reps, x.shape, strict=True)], "symmetric")
    clean = np.ascontiguousarray(big[:side, :side])
    obs = observe(clean, "gray_denoise", sigma, dataset="BSD68", image=f"scaled{side}")
    return clean, obs.y


def measure_one(run: str, side: int, tile: int, margin: int, threads: int) -> dict:
    """Restore one side x side image (tile 0: whole) in this process; time, memory, PSNR."""
    from groupsc.data import quantize
    from groupsc.methods.base import TorchRestorer
    from groupsc.methods.trained import load_trained
    from groupsc.metrics import psnr
    from groupsc.runtime import set_threads
    from groupsc.tiles import restore_tiled

    set_threads(threads)
    model = load_trained(run)
    clean, y = _noisy(side, float(model.train_config["levels"][0]))
    restore = TorchRestorer(model)
    start = time.perf_counter()
    est = restore(y) if tile == 0 else restore_tiled(restore, y, tile, margin, progress=False)
    seconds = time.perf_counter() - start
    return {
        "run": run,
        "side": side,
        "mode": "whole" if tile == 0 else f"tiles {tile}+{margin}",
        "threads": threads,
        "seconds": round(seconds, 3),
        "us_per_pixel": round(1e6 * seconds / side**2, 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "psnr": round(psnr(quantize(est), clean), 4),
    }


def _in_process(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def tile_deltas(run: str, tile: int, margins: list[int], n_images: int) -> pd.DataFrame:
    """PSNR of tiled minus whole-image restoration, per image and margin."""
    from groupsc.data import image_paths, load_image, quantize
    from groupsc.methods.base import TorchRestorer
    from groupsc.methods.trained import load_trained
    from groupsc.metrics import psnr
    from groupsc.physics import observe
    from groupsc.tiles import restore_tiled

    model = load_trained(run)
    sigma = float(model.train_config["levels"][0])
    restore = TorchRestorer(model)
    rows = []
    for dataset in ("BSD68", "Set12"):
        for path in image_paths(dataset)[:n_images]:
            x = load_image(path, "gray")
            y = observe(x, "gray_denoise", sigma, dataset=dataset, image=path.stem).y
            whole = psnr(quantize(restore(y)), x)
            for margin in margins:
                est = restore_tiled(restore, y, tile, margin, progress=False)
                rows.append({"dataset": dataset, "image": path.stem, "margin": margin,
                             "whole": whole, "delta": psnr(quantize(est), x) - whole})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="groupsc-knn12_gray_25")
    p.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--tile", type=int, default=160)
    p.add_argument("--margin", type=int, default=16, help="the tiles' margin in the scale runs")
    p.add_argument("--margins", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--whole-max", type=int, default=512, help="largest side restored whole")
    p.add_argument("--out", type=Path)
    p.add_argument("--tiles-out", type=Path)
    p.add_argument("--one", nargs=5, metavar=("RUN", "SIDE", "TILE", "MARGIN", "THREADS"))
    args = p.parse_args()
    if args.one:
        run, side, tile, margin, threads = args.one
        print(json.dumps(measure_one(run, int(side), int(tile), int(margin), int(threads))))
        return
    rows = []
    for side in args.sides:
        modes = [(0, 0)] if side <= args.whole_max else []
        modes.append((args.tile, args.margin))
        for tile, margin in modes:
            one = [args.run, str(side), str(tile), str(margin), str(args.threads)]
            rows.append(_in_process(one))
            print(rows[-1], flush=True)
    scale = pd.DataFrame(rows)
    deltas = tile_deltas(args.run, args.tile, args.margins, args.images)
    deltas["abs"] = deltas.delta.abs()
    summary = (
        deltas.groupby(["dataset", "margin"])
        .agg(images=("image", "size"), mean_delta_db=("delta", "mean"), worst_abs_db=("abs", "max"))
        .reset_index()
    )
    print(scale.to_string(index=False))
    print(summary.to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        scale.to_csv(args.out, index=False)
    if args.tiles_out:
        args.tiles_out.parent.mkdir(parents=True, exist_ok=True)
        summary.to_csv(args.tiles_out, index=False, float_format="%.5f")


if __name__ == "__main__":
    main()
