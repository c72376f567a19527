"""Seconds per BSD68 image and peak memory of the trained SC / CSR / GroupSC models (this CPU).

    python benchmarks/bench_groupsc_speed.py --images 3 --threads 2 --out results/speed/sparse.csv

Every model runs the harness's evaluation (:func:`groupsc.evaluate.evaluate`, seeded noise,
timing of the restoration call) on the first ``--images`` BSD68 images at sigma 25, in its own
fresh process, so the recorded peak resident memory is its own. Models whose checkpoint is
missing are reported and skipped. The CSV has one row per run:
``run, method, threads, images, sec_per_image, peak_rss_mb, psnr`` (PSNR over these images
only, a sanity check; the set averages come from the evaluation stages).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import sys
from pathlib import Path

METHODS = ("sc", "csr", "groupsc", "groupsc-knn", "groupsc-knn12")  # CSR: k-NN similarities
TASK = "gray_denoise"


def _measure(key: str, images: int, threads: int, sigma: float, queue: mp.Queue) -> None:
    """The harness's evaluation (:func:`groupsc.evaluate.evaluate`) on the first images."""
    import torch

    from groupsc.evaluate import evaluate

    torch.set_num_threads(threads)
    _, rec = evaluate(key, TASK, "BSD68", sigma, limit=images, progress=False)
    queue.put((rec.method, rec.sec_per_image, rec.peak_rss_mb, rec.psnr))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sigma", type=float, default=25)
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    p.add_argument("--out", default=None, help="CSV to write (default: print only)")
    args = p.parse_args(argv)
    from groupsc.methods import trained_run
    from groupsc.paths import repo_root

    ctx = mp.get_context("spawn")
    rows = []
    for key in args.methods:
        run = trained_run(key, TASK, args.sigma)
        if not (repo_root() / "checkpoints" / run / "model.pt").exists():
            print(f"{run}: no checkpoint, skipped", file=sys.stderr)
            continue
        queue = ctx.Queue()
        job = (key, args.images, args.threads, args.sigma, queue)
        proc = ctx.Process(target=_measure, args=job)
        proc.start()
        name, sec, peak, score = queue.get()
        proc.join()
        rows.append(
            {
                "run": run,
                "method": name,
                "threads": args.threads,
                "images": args.images,
                "sec_per_image": round(sec, 2),
                "peak_rss_mb": round(peak),
                "psnr": round(score, 3),
            }
        )
        print(f"{name:20s} {sec:7.2f} s/image  {peak:7.0f} MB  PSNR {score:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
