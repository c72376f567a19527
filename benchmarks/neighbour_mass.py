"""How open are the groups? The neighbour mass of every trained non-local model.

Run (the ``neighbour_mass`` stage of ``dvc.yaml``)::

    PYTHONPATH=lib python benchmarks/neighbour_mass.py --images 8 --out results/neighbour_mass.csv

For every GroupSC / CSR run of ``params.yaml`` (``train.runs`` and ``train.finetunes``) with a
checkpoint: the centre ``window x window`` crops of the first ``--images`` BSD68 images, noisy at
the run's sigma (the harness's seeded noise), go through the model's unrolled steps as one batch
of blocks; the similarity of the last refresh gives the neighbour mass
(:func:`groupsc.similarity.neighbour_mass`: :math:`\\sum_{j \\ne i} \\Sigma_{ji}` averaged over
the patches; 0 is SC, every neighbour at similarity 1 gives ``candidates``: k - 1 for the k-NN
models, the whole window for the dense ones; color models see CBSD68 crops). Columns: run,
kind, graph (dense / knn), forward (authors / legacy), sigma, kappa (mean), candidates,
neighbour_mass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from groupsc.data import image_paths, load_image
from groupsc.degradations import degrade
from groupsc.fit import load_params
from groupsc.methods.trained import load_trained
from groupsc.paths import repo_root
from groupsc.similarity import neighbour_mass

NON_LOCAL = ("groupsc", "csr")


def non_local_runs(params: dict) -> list[str]:
    """Names of the GroupSC / CSR runs of ``train.runs`` and ``train.finetunes``."""
    train = params["train"]
    runs = {**train["runs"], **train["finetunes"]}
    return [name for name, run in runs.items() if run["kind"] in NON_LOCAL]


def centre_crops(sigma: float, size: int, n_images: int, color: bool = False) -> torch.Tensor:
    """``(n, C, size, size)``: centre crops of the first BSD68 images (CBSD68 for ``color``
    models, C = 3) with the harness's seeded noise."""
    if color:
        dataset, mode, task = "CBSD68", "rgb", "color_denoise"
    else:
        dataset, mode, task = "BSD68", "gray", "gray_denoise"
    crops = []
    for path in image_paths(dataset)[:n_images]:
        noisy = degrade(
            load_image(path, mode), task, sigma, dataset=dataset, image=path.stem, seed=0
        )
        top, left = (noisy.shape[0] - size) // 2, (noisy.shape[1] - size) // 2
        crop = np.atleast_3d(noisy[top : top + size, left : left + size])
        crops.append(torch.from_numpy(crop.transpose(2, 0, 1).copy()))
    return torch.stack(crops).float()


def measure(run: str, n_images: int) -> dict:
    model = load_trained(run).eval()
    sigma = float(model.train_config["levels"][0])
    with torch.inference_mode():
        enc = model.encode(centre_crops(sigma, model.window, n_images, model.channels == 3))
    span = model.window - model.patch + 1
    return {
        "run": run,
        "kind": model.prox if model.prox != "group" else "groupsc",
        "graph": "knn" if model.knn is not None else "dense",
        "forward": "authors" if model.centered_similarity else "legacy",
        "sigma": sigma,
        "kappa": round(model.kappa.mean().item(), 4),
        "candidates": model.knn["k"] - 1 if model.knn is not None else span * span - 1,
        "neighbour_mass": round(neighbour_mass(enc.sim), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in non_local_runs(load_params()):
        if not (repo_root() / "checkpoints" / run / "model.pt").exists():
            print(f"{run}: no checkpoint (train it first)")
            continue
        rows.append(measure(run, args.images))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
