"""Seconds per image of dense vs k-NN GroupSC inference on BSD68 images (this CPU).

    python benchmarks/bench_groupsc_speed.py --images 2 --threads 2

The GroupSC models start from the trained SC weights (``checkpoints/sc_gray_25``) with
kappa = 1 and nu = 0.5 (not trained as GroupSC), so the PSNRs only show that the fast path
computes the same kind of estimate; the timings are what this script is for.
"""

from __future__ import annotations

import argparse
import time

import torch

from groupsc.data import image_paths, load_image, quantize
from groupsc.degradations import degrade
from groupsc.methods import load_trained
from groupsc.metrics import psnr
from groupsc.models.sparse import SparseCoding


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sigma", type=float, default=25)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sc = load_trained("sc_gray_25")
    variants = {
        "SC": sc,
        "GroupSC dense (window 56, stride 48)": SparseCoding(prox="group"),
        "GroupSC k-NN (r=7, k=16, fixed)": SparseCoding(
            prox="group", knn={"radius": 7, "k": 16, "mode": "fixed"}
        ),
    }
    for name, model in variants.items():
        if model is not sc:
            model.load_state_dict(sc.state_dict(), strict=False)
        model.eval()
        secs, scores = [], []
        for path in image_paths("BSD68")[: args.images]:
            x = load_image(path, "gray")
            y = degrade(x, "gray_denoise", args.sigma, dataset="BSD68", image=path.stem)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model(torch.from_numpy(y)[None, None])[0, 0].numpy()
            secs.append(time.perf_counter() - t0)
            scores.append(psnr(quantize(out), x))
        mean_s, mean_psnr = sum(secs) / len(secs), sum(scores) / len(scores)
        print(f"{name:40s} {mean_s:7.2f} s/image   PSNR {mean_psnr:.2f}")


if __name__ == "__main__":
    main()
