"""How far are the sparse models from their GEMM floor, and from BM3D? (issue 20)

    PYTHONPATH=lib python benchmarks/bench_floor.py --threads 2 --reps 3 \\
        --out results/speed/floor.csv

All in one run on this machine, so that the ratios compare like with like:

- ``inference``: one BSD68 image (``--image``, the harness's seeded noise at sigma 25) restored
  by each model of ``--runs`` at ``--threads`` threads (best of ``--reps``), beside BM3D (the
  ``bm3d`` package at 1 thread, in its own process with every BLAS/OpenMP pool at 1).
- its ``floor``: the two LISTA GEMMs of each of the model's K steps alone,
  ``R = Y - A D^T`` and ``B = A + R C`` on the image's P patches (``torch.addmm`` at the
  model's shapes: P x m by m x n; m = patch^2 channels, n atoms), the same threads.
- ``training``: one training step (batch and crop of the run's training settings: forward,
  backward, Adam) against the floor of the same step: the K steps' GEMMs forward and backward
  (autograd through the ``addmm`` chain, gradients for A, C and D).

Rows: ``case, run, threads, patches, seconds, floor_seconds, x_floor, x_bm3d, psnr``
(``x_floor`` = seconds / floor; ``x_bm3d`` = seconds / BM3D's seconds; PSNR of the image, dB).
Measure with nothing else running: the ratios are what matter, the seconds move with the load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from groupsc.data import image_path, load_dataset, load_image, quantize
from groupsc.methods.base import TorchRestorer
from groupsc.methods.trained import load_trained
from groupsc.metrics import psnr
from groupsc.physics import observe
from groupsc.train import TrainConfig, loss_fn, make_batch, make_optimizer

SIGMA = 25.0
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def best_of(fn, reps: int) -> float:
    """The smallest wall time of ``reps`` calls of ``fn`` (seconds)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def noisy(image: str) -> tuple[np.ndarray, np.ndarray]:
    x = load_image(image_path("BSD68", image), "gray")
    return x, observe(x, "gray_denoise", SIGMA, dataset="BSD68", image=image).y


def bm3d_seconds(image: str) -> tuple[float, float]:
    """BM3D's (seconds, PSNR) on the image, in a child process with every pool at 1 thread."""
    code = (
        "import json, sys, time; sys.path.insert(0, 'benchmarks'); import bench_floor as B; "
        "import bm3d; from groupsc.data import quantize; from groupsc.metrics import psnr; "
        f"x, y = B.noisy({image!r}); t = time.perf_counter(); "
        f"z = bm3d.bm3d(y, {SIGMA} / 255); s = time.perf_counter() - t; "
        "print(json.dumps([s, psnr(quantize(z), x)]))"
    )
    env = {**os.environ, **ONE_THREAD}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    seconds, score = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, score


def lista_gemms(patches: int, model, grad: bool) -> Callable[[], None]:
    """A call running the model's K steps of ``R = Y - A D^T; A <- A + R C`` on ``patches`` rows
    (forward, or forward and backward when ``grad``), warmed up: the floor of its LISTA loop."""
    m, n = model.D.shape
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(patches, m, generator=gen)
    d = (torch.randn(m, n, generator=gen) * 0.05).requires_grad_(grad)
    c = (torch.randn(m, n, generator=gen) * 0.05).requires_grad_(grad)

    def run() -> None:
        with torch.set_grad_enabled(grad):
            a = torch.zeros(patches, n)
            for _ in range(model.steps):
                r = torch.addmm(y, a, d.t(), alpha=-1)
                a = torch.addmm(a, r, c)
            if grad:
                a.square().mean().backward()

    run()  # warm up
    return run


def inference_rows(runs, image, threads, reps, bm3d_time) -> list[dict]:
    x, y = noisy(image)
    rows = []
    for run in runs:
        model = load_trained(run).eval()
        restore = TorchRestorer(model)
        est = restore(y)  # warm up, and the PSNR
        seconds = best_of(lambda r=restore: r(y), reps)
        patches = (y.shape[0] - model.patch + 1) * (y.shape[1] - model.patch + 1)
        floor = best_of(lista_gemms(patches, model, grad=False), reps)
        rows.append(_row("inference", run, threads, patches, seconds, floor, bm3d_time,
                         psnr(quantize(est), x)))  # fmt: skip
    return rows


def training_rows(runs, threads, reps) -> list[dict]:
    images = [img for _, img in load_dataset("BSD400", "gray", limit=8)]
    rows = []
    for run in runs:
        model = load_trained(run)
        cfg = TrainConfig(**model.train_config)
        opt = make_optimizer(model, cfg)
        batches = iter(range(10**6))

        def step(model=model, cfg=cfg, opt=opt, batches=batches) -> None:
            b = make_batch(images, cfg, next(batches))
            loss = loss_fn(model, b.clean, b.obs, b.levels, b.mask, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        model.train()
        step()  # warm up
        seconds = best_of(step, reps)
        patches = cfg.batch * (cfg.crop - model.patch + 1) ** 2
        floor = best_of(lista_gemms(patches, model, grad=True), reps)
        rows.append(_row("training", run, threads, patches, seconds, floor, None, None))
    return rows


def _row(case, run, threads, patches, seconds, floor, bm3d_time, score) -> dict:
    """One CSV row; ``floor`` or ``bm3d_time`` None: that ratio is left empty."""
    return {
        "case": case,
        "run": run,
        "threads": threads,
        "patches": patches,
        "seconds": round(seconds, 3),
        "floor_seconds": "" if floor is None else round(floor, 3),
        "x_floor": "" if floor is None else round(seconds / floor, 2),
        "x_bm3d": "" if bm3d_time is None else round(seconds / bm3d_time, 3),
        "psnr": "" if score is None else round(score, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["groupsc-knn12_gray_25", "groupsc-knn_gray_25",
                                                 "sc_gray_25"])  # fmt: skip
    p.add_argument("--train-runs", nargs="*", default=["sc_gray_25", "groupsc-knn_gray_25"])
    p.add_argument("--image", default="test003")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    bm3d_time, bm3d_psnr = bm3d_seconds(args.image)
    torch.set_num_threads(args.threads)
    rows = [_row("inference", "bm3d", 1, 0, bm3d_time, None, bm3d_time, bm3d_psnr)]
    rows += inference_rows(args.runs, args.image, args.threads, args.reps, bm3d_time)
    rows += training_rows(args.train_runs, args.threads, args.reps)
    for row in rows:
        print(row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
