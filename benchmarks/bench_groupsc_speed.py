"""Seconds per BSD68 image and peak memory of the trained SC / CSR / GroupSC models (this CPU).

    python benchmarks/bench_groupsc_speed.py --images 3 --threads 2 --out results/speed/sparse.csv

Every model runs in its own fresh process (so its peak resident memory, ``ru_maxrss``, is its
own) on the same first ``--images`` BSD68 images with the harness's seeded noise (sigma 25).
Runs whose checkpoint is missing are reported and skipped. The CSV has one row per run:
``run, method, threads, images, sec_per_image, peak_rss_mb, psnr`` (PSNR over these images
only, a sanity check; the set averages come from the evaluation stages).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

RUNS = {  # run -> method name, as in results/summary.csv
    "sc_gray_25": "SC",
    "csr_gray_25": "CSR",  # with k-NN similarities (params.yaml)
    "groupsc_gray_25": "GroupSC",  # dense, the paper's
    "groupsc-knn_gray_25": "GroupSC (k-NN)",
}


def _measure(run: str, images: int, threads: int, sigma: float, queue: mp.Queue) -> None:
    import torch

    from groupsc.data import image_paths, load_image, quantize
    from groupsc.degradations import degrade
    from groupsc.methods import load_trained
    from groupsc.metrics import psnr

    torch.set_num_threads(threads)
    model = load_trained(run)
    secs, scores = [], []
    for path in image_paths("BSD68")[:images]:
        x = load_image(path, "gray")
        y = degrade(x, "gray_denoise", sigma, dataset="BSD68", image=path.stem)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(torch.from_numpy(y)[None, None])[0, 0].numpy()
        secs.append(time.perf_counter() - t0)
        scores.append(psnr(quantize(out), x))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    queue.put((sum(secs) / len(secs), peak_mb, sum(scores) / len(scores)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sigma", type=float, default=25)
    p.add_argument("--runs", nargs="*", default=list(RUNS))
    p.add_argument("--out", default=None, help="CSV to write (default: print only)")
    args = p.parse_args(argv)
    from groupsc.paths import repo_root

    ctx = mp.get_context("spawn")
    rows = []
    for run in args.runs:
        if not (repo_root() / "checkpoints" / run / "model.pt").exists():
            print(f"{run}: no checkpoint, skipped", file=sys.stderr)
            continue
        queue = ctx.Queue()
        job = (run, args.images, args.threads, args.sigma, queue)
        proc = ctx.Process(target=_measure, args=job)
        proc.start()
        sec, peak, score = queue.get()
        proc.join()
        rows.append(
            {
                "run": run,
                "method": RUNS.get(run, run),
                "threads": args.threads,
                "images": args.images,
                "sec_per_image": round(sec, 2),
                "peak_rss_mb": round(peak),
                "psnr": round(score, 3),
            }
        )
        print(f"{RUNS.get(run, run):20s} {sec:7.2f} s/image  {peak:7.0f} MB  PSNR {score:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
