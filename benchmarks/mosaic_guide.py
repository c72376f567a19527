"""The first similarities of a mosaic: measured on the mosaic itself or on its bilinear fill.

Run (not a DVC stage yet; its output is not committed)::

    PYTHONPATH=lib python benchmarks/mosaic_guide.py --run groupsc-knn_mosaic_0 --images 4 \\
        --out results/mosaic_guide.csv

The trained mosaic GroupSC (``--run``) restores the harness's observations of the first
``--images`` Kodak24 and McMaster images twice, its weights unchanged: with
``mosaic_guide="bilinear"`` (the first similarities on :func:`groupsc.models.sparse.bilinear_fill`
of the mosaic, as it was trained) and ``"mosaic"`` (on the mosaic itself, zeros where a channel
is not sampled, as the authors' code measures them). Estimates are rounded to 8 bits as the
harness scores them. Columns: dataset, image, guide, psnr (dB), first_mass (the neighbour mass
of the first similarities, :func:`groupsc.similarity.neighbour_mass`). A guide the model was not
trained with is at a disadvantage: this measures what the trained model gets from each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from groupsc import patches as P
from groupsc.data import image_paths, load_image, quantize
from groupsc.methods.base import TorchRestorer, _tensor
from groupsc.methods.trained import load_trained
from groupsc.metrics import psnr
from groupsc.models.sparse import MOSAIC_GUIDES, bilinear_fill
from groupsc.physics import observe
from groupsc.similarity import neighbour_mass

DATASETS = ("Kodak24", "McMaster")


def first_mass(model, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Neighbour mass of the model's first similarities on ``y`` ``(1, 3, H, W)``."""
    guide = y if model.mosaic_guide == "mosaic" else bilinear_fill(y, mask)
    _, mu = P.center(P.extract(y, model.patch), model.channels, P.extract(mask, model.patch))
    return neighbour_mass(model.make_similarity().start(guide, model.kappa, mu))


def measure(run: str, n_images: int) -> pd.DataFrame:
    model = load_trained(run)
    rows = []
    for dataset in DATASETS:
        for path in image_paths(dataset)[:n_images]:
            x = load_image(path, "rgb")
            obs = observe(x, "demosaic", 0, dataset=dataset, image=path.stem)
            y, mask = (_tensor(a) for a in (obs.y, obs.mask))
            for guide in MOSAIC_GUIDES:
                model.mosaic_guide = guide
                est = quantize(TorchRestorer(model)(obs))
                with torch.inference_mode():
                    mass = first_mass(model, y, mask)
                rows.append(
                    {"dataset": dataset, "image": path.stem, "guide": guide,
                     "psnr": round(psnr(est, x), 4), "first_mass": round(mass, 4)}
                )  # fmt: skip
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="groupsc-knn_mosaic_0")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = measure(args.run, args.images)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table.groupby(["dataset", "guide"])[["psnr", "first_mass"]].mean().round(3))


if __name__ == "__main__":
    main()
